"""The command line, run in-process through ``main``."""

import html
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import xvit
from xvit.bench import format_table, run_benchmark
from xvit.cli import common, demo, main
from xvit.models import Preprocessing, create_vit, save_checkpoint

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small random built-in ViT checkpoint and two images."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = create_vit("nano", img_size=32, patch_size=8, num_classes=len(CLASSES))
    save_checkpoint(model, root / "ckpt", preprocessing=Preprocessing(size=(32, 32)), class_names=CLASSES)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / f"{name}.png")
    return root


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_methods_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["name", "signed", "passes", "citation"]
    for name, info in xvit.methods().items():
        assert name in out and info["citation"] in out


def test_models_lists_bundled_models_and_spec_forms(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Bundled models:" in out and "timm:NAME" in out and "hf:ID_OR_DIR" in out
    for name in xvit.models.bundled_models():
        assert name in out


def test_explain_writes_overlays_grid_and_results(workspace, capsys):
    out = workspace / "out"
    code = main(["explain", str(workspace / "a.png"), str(workspace / "b.png"), "--model", str(workspace / "ckpt"),
                 "--method", "rollout", "attnlrp", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["grids"] == ["grid.png"] and (out / "grid.png").is_file()
    assert [r["name"] for r in results["images"]] == ["a", "b"]
    for record in results["images"]:
        top5 = record["top5"]
        probs = [c["probability"] for c in top5]
        assert len(top5) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
        assert top5[0] == record["prediction"] and top5[0]["name"] == CLASSES[top5[0]["index"]]
        assert set(record["methods"]) == {"rollout", "attnlrp"}
        for info in record["methods"].values():
            assert info["target"]["index"] == record["prediction"]["index"]
            assert (out / info["overlay"]).is_file()
            stats = info["stats"]
            assert stats["min"] <= stats["mean"] <= stats["max"] and 0.1 <= stats["top10_mass"] <= 1.0
        assert record["methods"]["attnlrp"]["signed"] is True


def test_explain_with_a_class_index(workspace, capsys):
    out = workspace / "out_target"
    assert main(["explain", str(workspace / "a.png"), "--model", str(workspace / "ckpt"), "--method", "rollout",
                 "--target", "4", "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())["images"][0]
    assert record["methods"]["rollout"]["target"]["index"] == 4
    assert record["methods"]["rollout"]["target"]["name"] == "cross"


@pytest.mark.parametrize("args, message", [
    (["--method", "rolout"], "unknown method 'rolout'. Did you mean 'rollout'"),
    (["--target", "6"], "Target class 6 is out of range: the model has 6 classes"),
    (["--model", "no-such-model"], "Cannot load model 'no-such-model'"),
])
def test_explain_user_errors_exit_2_with_one_line(workspace, capsys, args, message):
    base = ["explain", str(workspace / "a.png"), "--model", str(workspace / "ckpt"), "--out",
            str(workspace / "bad"), "--method", "rollout"]
    assert main(base + args) == 2
    assert message in _error_line(capsys)


def test_missing_image_and_unknown_class_name_exit_2(workspace, capsys):
    assert main(["explain", str(workspace / "nope.png"), "--model", str(workspace / "ckpt")]) == 2
    assert "nope.png' does not exist" in _error_line(capsys)
    assert main(["explain", str(workspace / "a.png"), "--model", str(workspace / "ckpt"), "--target", "squar",
                 "--out", str(workspace / "bad")]) == 2
    assert "--target: Unknown class name 'squar'. Did you mean 'square'" in _error_line(capsys)
    assert not (workspace / "bad").exists()


def test_missing_default_model_is_explained(workspace, capsys, monkeypatch):
    monkeypatch.setattr(common, "DEFAULT_MODEL", "shapes-vit-missing")
    assert main(["explain", str(workspace / "a.png"), "--method", "rollout", "--out", str(workspace / "x")]) == 2
    assert "default model 'shapes-vit-missing' is not bundled" in _error_line(capsys)


def test_demo_writes_the_html_report(workspace, capsys, monkeypatch):
    samples = workspace / "samples" / "single"
    samples.mkdir(parents=True)
    Image.open(workspace / "a.png").save(samples / "000.png")
    Image.new("L", (32, 32)).save(samples / "000_mask.png")
    (samples / "samples.json").write_text(json.dumps({"items": [{"file": "000.png", "class_names": ["ring"]}]}))
    monkeypatch.setattr(demo, "SAMPLES_DIR", workspace / "samples")
    out = workspace / "demo"
    assert main(["demo", "--model", str(workspace / "ckpt"), "--method", "rollout", "--out", str(out)]) == 0
    index = out / "index.html"
    assert str(index.resolve()) in capsys.readouterr().out
    page = index.read_text()
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["images"]] == ["000"]
    pred = results["images"][0]["prediction"]["name"]
    assert f"predicted: <b>{pred}" in page and "true class: ring" in page
    assert html.escape(xvit.methods()["rollout"]["citation"]) in page
    assert "<script" not in page and "http" not in page
    for src in ("single/grid.png", "single/000.png", "single/000_rollout.png"):
        assert f'src="{src}"' in page and (out / src).is_file()


def test_bench_prints_ratios(capsys):
    assert main(["bench", "--model", "xvit-random:nano", "--methods", "rollout", "--batch-size", "2",
                 "--image-size", "16", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"forward", "forward+backward", "rollout"}
    assert float(rows["forward"][1]) == 1.0 and float(rows["forward+backward"][2]) == 1.0
    assert float(rows["rollout"][0]) > 0 and all(float(v) >= 0 for v in rows["rollout"][1:])


def test_bench_warmup_flag(capsys):
    assert main(["bench", "--model", "xvit-random:nano", "--methods", "rollout", "--batch-size", "2",
                 "--image-size", "16", "--repeats", "1", "--warmup", "0"]) == 0
    assert "median of 1 interleaved rounds after 0 warm-up" in capsys.readouterr().out
    assert main(["bench", "--model", "xvit-random:nano", "--methods", "rollout", "--warmup", "-1"]) == 2
    assert "non-negative integer" in capsys.readouterr().err


def test_run_benchmark_ratios_are_consistent():
    rows = run_benchmark(create_vit("nano", img_size=16), ["rollout"], batch_size=2, repeats=1, warmup=0)
    by_name = {r["method"]: r for r in rows}
    fwd, roll = by_name["forward"], by_name["rollout"]
    assert roll["x_forward"] == pytest.approx(roll["seconds_per_image"] / fwd["seconds_per_image"])
    assert roll["image_size"] == [16, 16] and roll["batch_size"] == 2
    assert all(r["peak_mib"] is None or r["peak_mib"] >= 0 for r in rows)
    assert "| rollout |" in format_table(rows)


def test_bench_unknown_preset_exits_2(capsys):
    assert main(["bench", "--model", "xvit-random:huge", "--methods", "rollout"]) == 2
    assert "Unknown ViT preset 'huge'" in _error_line(capsys)


def test_python_dash_m_xvit():
    done = subprocess.run([sys.executable, "-m", "xvit", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"xvit {xvit.__version__}"


def test_analyse_lists_runs_and_refuses_unknown_names(workspace, capsys):
    assert main(["analyse", "--list"]) == 0
    assert "attention_distance" in capsys.readouterr().out
    out = workspace / "analyse"
    assert main(["analyse", "attention_distance", str(workspace / "a.png"), "--model", str(workspace / "ckpt"),
                 "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    depth = len(xvit.load_model(str(workspace / "ckpt")).blocks)
    assert result["meta"]["definition_version"] and len(result["tensors"]["mean"]) == depth
    assert (out / "figure.png").is_file()
    assert main(["analyse", "attention_distanse", str(workspace / "a.png")]) == 2
    assert "Did you mean 'attention_distance'" in _error_line(capsys)
    assert main(["analyse", "attention_distance", str(workspace / "a.png"), "--param", "attention_distance.k=1",
                 "--model", str(workspace / "ckpt")]) == 2
    assert "unexpected parameter 'k'" in _error_line(capsys)
