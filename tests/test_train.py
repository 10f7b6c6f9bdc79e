"""Training: the loop learns, folder and xvit-shapes data work, and checkpoints reload bit-identically."""

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from xvit.data import make_shapes
from xvit.models import load_model
from xvit.train import TrainConfig, add_train_arguments, normalize, run_train, train


def _config(tmp_path, **kw):
    base = dict(data="xvit-shapes:single", out=str(tmp_path / "run"), preset="nano", img_size=48, patch_size=8,
                epochs=2, train_size=128, val_size=64, test_size=64, batch_size=32, lr=2e-3, warmup_epochs=0.5,
                progress=False)
    return TrainConfig(**{**base, **kw})


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _striped_folder(root, n_per_class=100, size=32):
    """Three classes told apart by texture: horizontal stripes, vertical stripes, checkerboard."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    patterns = {"horizontal": (yy // 4) % 2, "vertical": (xx // 4) % 2, "checker": ((yy // 4) + (xx // 4)) % 2}
    for name, pattern in patterns.items():
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            colour = rng.uniform(60, 200, 3)
            image = colour + 50 * (pattern[..., None] - 0.5) + rng.normal(0, 20, (size, size, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return sorted(patterns)


def test_loss_falls_on_a_learnable_folder_via_the_cli(tmp_path):
    classes = _striped_folder(tmp_path / "data")
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--preset", "nano",
                              "--img-size", "32", "--epochs", "4", "--batch-size", "30", "--lr", "2e-3",
                              "--warmup-epochs", "0.5", "--no-progress"])
    assert run_train(args) == 0
    log = _log(tmp_path / "run")
    assert len(log) == 4
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 0.2
    assert log[-1]["val_acc"] >= 0.8
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["class_names"] == classes
    assert config["training"]["data"]["holdout_size"] == 30
    assert config["metrics"]["test_accuracy"] >= 0.8
    assert config["model"]["img_size"] == 32 and config["model"]["num_classes"] == 3


def test_shapes_checkpoint_round_trips_with_token_labelling(tmp_path):
    summary = train(_config(tmp_path, token_loss=1.0))
    log = _log(tmp_path / "run")
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(0.0 < r["train_token_loss"] < 10.0 for r in log)
    model = summary["model"]
    loaded = load_model(str(tmp_path / "run"))  # the token head is not part of the checkpoint
    x = normalize(make_shapes("single", 8, size=48, split="test").images)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["preprocessing"] == {"size": [48, 48], "mean": [0.5] * 3, "std": [0.5] * 3,
                                       "interpolation": "bilinear"}
    assert config["class_names"] == loaded.xvit_class_names and len(config["class_names"]) == 10
    training = config["training"]
    assert training["num_params"] == sum(p.numel() for p in model.parameters())
    assert training["data"]["variant"] == "single" and training["data"]["train_seed"] > 0
    assert training["command"] and training["torch_version"] == torch.__version__
    assert config["metrics"]["test_accuracy"] == summary["test_accuracy"]
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_spurious_run_reports_marker_accuracies_and_low_res_epochs(tmp_path):
    summary = train(_config(tmp_path, data="xvit-shapes:spurious", train_size=64, test_size=32,
                            low_res_size=24, low_res_epochs=1))
    assert [r["train_img_size"] for r in _log(tmp_path / "run")] == [24, 48]
    for mode in ("aligned", "random", "none"):
        assert 0.0 <= summary[f"test_accuracy_marker_{mode}"] <= 1.0


def test_bad_data_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="pair"):
        train(_config(tmp_path, data="xvit-shapes:pair"))
    with pytest.raises(FileNotFoundError):
        train(_config(tmp_path, data=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="masks"):
        train(_config(tmp_path, data=str(tmp_path), token_loss=1.0))
    with pytest.raises(ValueError, match="low_res_size"):
        train(_config(tmp_path, low_res_size=20, low_res_epochs=1))
