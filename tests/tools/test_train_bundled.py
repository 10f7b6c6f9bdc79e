"""tools/train_bundled.py: the commands it runs are valid xvit commands, it resumes and skips as it says, and the
student distils from the teacher it just trained."""

import importlib.util
from pathlib import Path

import pytest

from xvit.cli import build_parser

TOOL = Path(__file__).resolve().parents[2] / "tools" / "train_bundled.py"


@pytest.fixture
def tool(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("train_bundled", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs" / "bundled")
    ran = []
    monkeypatch.setattr(module.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    return module, ran


def _finish(run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "model.safetensors").write_bytes(b"")
    (run / "config.json").write_text("{}")


@pytest.mark.parametrize("name", ["shapes-vit-tiny", "shapes-vit-tiny-spurious", "shapes-vit-tiny-svda"])
def test_each_model_is_a_teacher_then_a_student_distilled_from_it(tool, name):
    module, ran = tool
    module.train(name)
    assert [cmd[:2] for cmd in ran] == [["xvit", "train-teacher"], ["xvit", "train"]]
    teacher_args = build_parser("train-teacher").parse_args(ran[0][1:])
    student_args = build_parser("train").parse_args(ran[1][1:])
    assert student_args.teacher == teacher_args.out and student_args.data == teacher_args.data
    assert student_args.distill == "soft" and student_args.token_loss == 1.0 and not student_args.resume
    assert (student_args.arch == "svda") == name.endswith("svda")
    assert student_args.data == "xvit-shapes:" + ("spurious" if "spurious" in name else "single")


def test_finished_steps_are_skipped_and_interrupted_ones_resumed(tool):
    module, ran = tool
    _finish(module.RUNS / "teacher-single")
    (module.RUNS / "shapes-vit-tiny").mkdir(parents=True)
    (module.RUNS / "shapes-vit-tiny" / "train_state.pt").write_bytes(b"")
    module.train("shapes-vit-tiny")
    assert len(ran) == 1 and ran[0][:2] == ["xvit", "train"] and ran[0][-1] == "--resume"
    _finish(module.RUNS / "shapes-vit-tiny")
    module.train("shapes-vit-tiny")
    assert len(ran) == 1
