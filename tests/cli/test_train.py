"""``xvit train``: the folder run through ``main``, the recorded command line, usage errors before training."""

import json
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from tests.models.toy_variants import HalfLogitViT, registered
from xvit.cli import main
from xvit.cli.train import command_line, config_from_args
from xvit.training import TrainConfig


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


def test_loss_falls_on_a_learnable_folder_and_the_command_is_recorded(tmp_path):
    classes = _striped_folder(tmp_path / "data")
    argv = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--arch", "vit", "--preset",
            "nano", "--img-size", "32", "--epochs", "4", "--batch-size", "30", "--lr", "2e-3", "--warmup-epochs",
            "0.5", "--no-progress"]
    assert main(argv) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 0.2
    assert log[-1]["val_acc"] >= 0.8
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["class_names"] == classes and config["arch"] == "vit"
    assert config["training"]["data"]["holdout_size"] == 30
    assert config["metrics"]["test_accuracy"] >= 0.8
    assert config["model"]["img_size"] == 32 and config["model"]["num_classes"] == 3
    # The recorded command is the xvit train command with the options that differ from their defaults.
    command = config["training"]["command"]
    assert command == shlex.join(["xvit", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                                  "--preset", "nano", "--img-size", "32", "--epochs", "4", "--batch-size", "30",
                                  "--lr", "0.002", "--warmup-epochs", "0.5", "--no-progress"])


def test_the_recorded_command_reproduces_the_config():
    config = TrainConfig(data="xvit-shapes:spurious", preset="nano", epochs=3, fresh_data=False, flip=False,
                         bf16=False, low_res_size=24, low_res_epochs=1, init="mimetic", data_seed=7,
                         model_args={"qkv_bias": False, "global_pool": "avg"})
    words = shlex.split(command_line(config))
    assert words[:2] == ["xvit", "train"] and "--repeat-data" in words and "--no-flip" in words
    assert "qkv_bias=false" in words and "global_pool=avg" in words
    from xvit.cli import build_parser

    rebuilt = config_from_args(build_parser("train").parse_args(words[1:]))
    assert rebuilt.command == command_line(config)
    rebuilt.command = None
    assert rebuilt == config
    assert command_line(TrainConfig()) == "xvit train"


@pytest.mark.parametrize("options,message", [
    (["--epochs", "0"], "epochs must be positive"),
    (["--batch-size", "-4"], "batch_size must be positive"),
    (["--lr", "0"], "lr must be positive"),
    (["--holdout-fraction", "1.5"], "holdout_fraction"),
    (["--img-size", "50"], "not a multiple of patch_size"),
    (["--embed-dim", "100", "--num-heads", "3"], "divisible by num_heads"),
    (["--data", "xvit-shapes:pair"], "two labels per image"),
    (["--data", "no/such/folder"], "neither an existing folder or file nor a spec"),
    (["--token-loss", "1", "--data", "."], "masks"),
    (["--preset", "huge"], "Unknown vit preset 'huge'"),
    (["--model-arg", "qkv_bias"], "--model-arg takes KEY=VALUE"),
    (["--model-arg", "no_such=1"], "'vit' has no config field 'no_such'"),
])
def test_usage_errors_stop_before_training(tmp_path, capsys, options, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xvit train: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # nothing was written: the run never started


def test_arch_choices_come_from_the_variant_registry(capsys):
    assert main(["train", "--arch", "vt"]) == 2
    assert "invalid choice: 'vt'" in capsys.readouterr().err
    with registered("half-logit-vit", HalfLogitViT, vit_compatible=True):
        assert main(["train", "--help"]) == 0
        choices = re.search(r"--arch \{([^}]*)\}", capsys.readouterr().out).group(1).split(",")
        assert {"half-logit-vit", "vit", "svda"} <= set(choices) and choices == sorted(choices)


def test_distillation_flags_reach_the_config_and_the_recorded_command():
    from xvit.cli import build_parser

    args = build_parser("train").parse_args(["train", "--teacher", "runs/t", "--distill", "soft", "--distill-weight",
                                             "0.7", "--distill-temperature", "3"])
    config = config_from_args(args)
    assert (config.teacher, config.distill, config.distill_weight, config.distill_temperature) == \
        ("runs/t", "soft", 0.7, 3.0)
    assert config.command == "xvit train --teacher runs/t --distill soft --distill-weight 0.7 --distill-temperature 3.0"
    rebuilt = config_from_args(build_parser("train").parse_args(shlex.split(config.command)[1:]))
    assert rebuilt == config
    assert main(["train", "--distill", "medium"]) == 2


@pytest.mark.parametrize("options,message", [
    (["--teacher", "no/such/teacher"], "is not a directory"),
    (["--distill-weight", "2"], "distill_weight must lie in [0, 1]"),
    (["--distill-temperature", "-1"], "distill_temperature must be positive"),
])
def test_distillation_usage_errors_stop_before_training(tmp_path, capsys, options, message):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xvit train: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_train_teacher_then_distil_from_the_command_line(tmp_path):
    from xvit.cli import build_parser
    from xvit.cli.train_teacher import config_from_args as teacher_config
    from xvit.training import load_teacher

    _striped_folder(tmp_path / "data", n_per_class=20)
    argv = ["train-teacher", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "teacher"), "--widths", "8,16",
            "--img-size", "32", "--epochs", "2", "--batch-size", "15", "--lr", "0.005", "--seed", "1",
            "--no-progress"]
    assert main(argv) == 0
    assert load_teacher(tmp_path / "teacher").widths == (8, 16)
    config = json.loads((tmp_path / "teacher" / "config.json").read_text())
    assert config["training"]["command"] == shlex.join(["xvit", *argv])
    assert teacher_config(build_parser("train-teacher").parse_args(argv)).widths == (8, 16)
    assert main(["train-teacher", "--out", str(tmp_path / "t2"), "--resume", "--no-progress", "--epochs", "1",
                 "--data", str(tmp_path / "data"), "--img-size", "32", "--batch-size", "15", "--widths", "4"]) == 0
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--preset", "nano",
                 "--img-size", "32", "--epochs", "1", "--batch-size", "15", "--teacher", str(tmp_path / "teacher"),
                 "--distill", "hard", "--no-progress"]) == 0
    training = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert training["teacher"]["path"] == str(tmp_path / "teacher") and training["teacher"]["distill"] == "hard"


@pytest.mark.parametrize("options,message", [
    (["--widths", "8,x"], "comma-separated integers"),
    (["--widths", "8,0"], "widths must be positive"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--data", "xvit-shapes:pair"], "two labels per image"),
])
def test_train_teacher_usage_errors(tmp_path, capsys, options, message):
    out = tmp_path / "teacher"
    assert main(["train-teacher", "--out", str(out), "--no-progress", *options]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xvit train-teacher: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
