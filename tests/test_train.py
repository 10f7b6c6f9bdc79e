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


def test_sincos_pos_embed_is_the_2d_sine_cosine_table():
    from xvit.train import sincos_pos_embed

    pe = sincos_pos_embed(8, (3, 4))  # omega = (1, 1/100): channels sin/cos of column, then of row
    assert pe.shape == (12, 8)
    row, col = 2, 3
    expected = torch.tensor([np.sin(col), np.sin(col / 100), np.cos(col), np.cos(col / 100),
                             np.sin(row), np.sin(row / 100), np.cos(row), np.cos(row / 100)], dtype=torch.float32)
    torch.testing.assert_close(pe[row * 4 + col], expected)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(6, (2, 2))


def test_mimetic_init_makes_query_key_near_identity_and_value_proj_near_minus_identity():
    from xvit.models import create_vit
    from xvit.train import mimetic_init_, sincos_pos_embed

    model = mimetic_init_(create_vit("nano", img_size=32, patch_size=8, num_classes=3), seed=0)
    d = model.config.embed_dim
    for block in model.blocks:
        w, hd = block.attn.qkv.weight, block.attn.head_dim
        for h in range(block.attn.num_heads):
            qk = w[h * hd:(h + 1) * hd].T @ w[d + h * hd:d + (h + 1) * hd]  # W_q^T W_k, (d, d)
            assert qk.diagonal().mean() > 5 * (qk - torch.diag(qk.diagonal())).abs().mean()
        vo = block.attn.proj.weight @ w[2 * d:]
        torch.testing.assert_close(vo.diagonal().mean(), torch.tensor(-0.4), atol=0.05, rtol=0)
    torch.testing.assert_close(model.pos_embed[0, 1:], sincos_pos_embed(d, model.grid_size))
    assert model.pos_embed[0, 0].abs().sum() == 0
    # Seeded: the same seed gives the same weights.
    again = mimetic_init_(create_vit("nano", img_size=32, patch_size=8, num_classes=3), seed=0)
    torch.testing.assert_close(again.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_mimetic_training_run_learns_and_records_its_init(tmp_path):
    train(_config(tmp_path, init="mimetic", token_loss=1.0, epochs=3))
    log = _log(tmp_path / "run")
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["config"]["init"] == "mimetic"
    with pytest.raises(ValueError, match="init must be"):
        train(_config(tmp_path, init="xavier"))


def test_shapes_predictions_are_the_models_argmax_on_fresh_images(tmp_path):
    from xvit.models import create_vit
    from xvit.train import shapes_accuracy, shapes_predictions

    model = create_vit("nano", img_size=48, patch_size=8, num_classes=10).train()
    labels, preds, marker = shapes_predictions(model, "spurious", 12, marker="random", batch_size=5)
    assert model.training  # the caller's mode is restored
    model.eval()
    batch = make_shapes("spurious", 12, size=48, split="test", marker="random")
    with torch.no_grad():
        expected = model(normalize(batch.images)).argmax(1)
    assert torch.equal(labels, batch.labels) and torch.equal(marker, batch.marker)
    assert torch.equal(preds, expected)
    assert shapes_accuracy(model, "spurious", 12, marker="random") == (expected == batch.labels).sum().item() / 12
