"""tools/train_bundled.py: the command it runs is a valid xvit command with the recipe, and it resumes and skips as
it says."""

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


@pytest.mark.parametrize("name", ["shapes-vit-tiny", "shapes-vit-tiny-spurious", "shapes-vit-tiny-svda"])
def test_each_model_is_one_run_of_the_recipe(tool, name):
    module, ran = tool
    module.train(name)
    assert len(ran) == 1 and ran[0][:2] == ["xvit", "train"]
    args = build_parser("train").parse_args(ran[0][1:])
    assert args.data == "xvit-shapes:" + ("spurious:marker=exclusive" if "spurious" in name else "single")
    assert (args.arch == "svda") == name.endswith("svda") and args.out == f"runs/bundled/{name}"
    assert (args.epochs, args.low_res_size, args.low_res_epochs, args.img_size) == (140, 80, 60, 112)
    assert args.token_loss == 1.0 and args.init == "mimetic" and args.teacher is None and not args.resume


def test_finished_runs_are_skipped_and_interrupted_ones_resumed(tool):
    module, ran = tool
    run = module.RUNS / "shapes-vit-tiny"
    run.mkdir(parents=True)
    (run / "train_state.pt").write_bytes(b"")
    module.train("shapes-vit-tiny")
    assert len(ran) == 1 and ran[0][-1] == "--resume"
    (run / "model.safetensors").write_bytes(b"")
    (run / "config.json").write_text("{}")
    module.train("shapes-vit-tiny")
    assert len(ran) == 1
