"""Every command answers a bad input with exit status 2 and one line naming the problem and the fix, writes
nothing, and prints a traceback only with ``xvit --debug``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from xvit.cli import explain, main
from xvit.models import Preprocessing, create_vit, save_checkpoint


@pytest.fixture()
def ws(tmp_path):
    """A tiny checkpoint, an image, a file and a FIFO; ``snapshot()`` lists everything under the folder."""
    torch.manual_seed(0)
    save_checkpoint(create_vit("nano", img_size=16, patch_size=8, num_classes=3, depth=1), tmp_path / "ckpt",
                    preprocessing=Preprocessing(size=(16, 16)), class_names=["a", "b", "c"])
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "afile").write_text("not a folder")
    os.mkfifo(tmp_path / "pipe")
    return tmp_path


def _snapshot(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if not p.is_fifo()}


def _one_line(capsys, command):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"xvit {command}: error: ")
    return err


def _explain(ws, *args):
    return ["explain", str(ws / "a.png"), "--model", str(ws / "ckpt"), "--method", "rollout",
            "--out", str(ws / "out"), *args]


def _broken_checkpoint(ws, command):
    (ws / "ckpt" / "config.json").write_text("{oops")
    return [command, str(ws / "ckpt")] if command == "card" else _explain(ws)


def _negative_label(ws):
    (ws / "data").mkdir()
    (ws / "data" / "manifest.json").write_text(json.dumps({"items": [{"file": "../a.png", "label": -1}]}))
    return ["evaluate", "--model", str(ws / "ckpt"), "--data", str(ws / "data"), "--methods", "rollout", "--metrics",
            "deletion_insertion", "--out", str(ws / "out")]


CASES = {
    "evaluate: a negative label": (_negative_label, "has a negative label (-1)"),
    "card: invalid JSON": (lambda ws: _broken_checkpoint(ws, "card"), "ckpt/config.json is not valid JSON"),
    "explain: invalid JSON": (lambda ws: _broken_checkpoint(ws, "explain"), "ckpt/config.json is not valid JSON"),
    "output folder is a file": (lambda ws: _explain(ws, "--out", str(ws / "afile")), "afile is a file"),
    "output folder inside a file": (lambda ws: _explain(ws, "--out", str(ws / "afile" / "sub")), "afile is a file"),
    "meta device": (lambda ws: _explain(ws, "--device", "meta"), "device 'meta' cannot run a model"),
    "a folder as an image": (lambda ws: ["explain", str(ws), "--model", str(ws / "ckpt")], "is a folder, not an image"),
    "a FIFO as an image": (lambda ws: ["explain", str(ws / "pipe"), "--model", str(ws / "ckpt")],
                           "not a regular file"),
    "empty model spec": (lambda ws: _explain(ws, "--model", " "), "--model is empty"),
    "a FIFO as the model": (lambda ws: _explain(ws, "--model", str(ws / "pipe")), "not a regular file or directory"),
    "output overwrites an input": (lambda ws: _explain(ws, "--out", str(ws)), "would overwrite the input image"),
    "not an image": (lambda ws: ["explain", str(ws / "afile"), "--model", str(ws / "ckpt"), "--out",
                                 str(ws / "out")], "is not an image file Pillow can read"),
    "analyse into a file": (lambda ws: ["analyse", "attention_distance", str(ws / "a.png"), "--model",
                                        str(ws / "ckpt"), "--out", str(ws / "afile")], "afile is a file"),
    "train: zero epochs": (lambda ws: ["train", "--epochs", "0", "--out", str(ws / "out")], "epochs must be positive"),
    "train into a file": (lambda ws: ["train", "--out", str(ws / "afile")], "afile is a file"),
    "evaluate into a file": (lambda ws: ["evaluate", "--model", str(ws / "ckpt"), "--data", "xvit-shapes:single:test:2",
                                         "--out", str(ws / "afile")], "afile is a file"),
    "evaluate: a bad metric parameter": (lambda ws: ["evaluate", "--model", str(ws / "ckpt"), "--data",
                                                     "xvit-shapes:single:test:2", "--metrics", "deletion_insertion",
                                                     "--metric-param", "deletion_insertion.steps=-3", "--out",
                                                     str(ws / "out")], "The 'steps' parameter of deletion_insertion"),
    "evaluate: a bad method parameter": (lambda ws: ["evaluate", "--model", str(ws / "ckpt"), "--data",
                                                     "xvit-shapes:single:test:2", "--methods", "rollout", "--param",
                                                     "rollout.head_fusion=bogus", "--out", str(ws / "out")],
                                         "The 'head_fusion' parameter of rollout"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(ws, capsys, case):
    argv, message = CASES[case]
    argv = argv(ws)
    before = _snapshot(ws)
    assert main(argv) == 2
    assert message in _one_line(capsys, argv[0])
    assert _snapshot(ws) == before


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(ws, capsys, monkeypatch):
    def boom(*_, **__):
        raise RuntimeError("kaput\nsecond line")

    monkeypatch.setattr(explain, "explain_to_folder", boom)
    assert main(_explain(ws)) == 2
    assert _one_line(capsys, "explain") == ("xvit explain: error: RuntimeError: kaput (unexpected; rerun with --debug "
                                            "for the traceback)")
    assert main(["--debug", *_explain(ws)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("rerun with --debug for the traceback)")


def test_colliding_output_names_get_distinct_files(ws, capsys):
    (ws / "a_rollout.png").write_bytes((ws / "a.png").read_bytes())
    argv = ["explain", str(ws / "a.png"), str(ws / "a_rollout.png"), "--model", str(ws / "ckpt"), "--method",
            "rollout", "--out", str(ws / "out")]
    assert main(argv) == 0, capsys.readouterr().err
    images = json.loads((ws / "out" / "results.json").read_text())["images"]
    written = [f for r in images for f in (r["image"], r["methods"]["rollout"]["overlay"])]
    assert len(set(written)) == 4 and all((ws / "out" / f).is_file() for f in written)


def test_the_console_script_prints_one_line_without_a_traceback(ws):
    proc = subprocess.run([sys.executable, "-m", "xvit", "explain", str(ws / "afile"), "--model", str(ws / "ckpt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_evaluate_stops_at_an_unreadable_item_with_one_line_naming_it(ws, capsys):
    for i, name in enumerate(["c0/a.png", "c1/b.png"]):
        (ws / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(ws / "data" / name)
    (ws / "data" / "c1" / "z.png").write_text("not an image")
    argv = ["evaluate", "--model", str(ws / "ckpt"), "--data", str(ws / "data"), "--methods", "rollout", "--metrics",
            "deletion_insertion", "--steps", "2", "--no-progress", "--out", str(ws / "out")]
    assert main(argv) == 2
    assert "z.png' is not an image file" in _one_line(capsys, "evaluate")
