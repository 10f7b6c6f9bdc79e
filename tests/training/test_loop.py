"""Training: the loop learns, folder and xvit-shapes data work, and checkpoints reload bit-identically."""

import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from tests.models.toy_variants import HalfLogitViT, registered
from xvit.data import make_shapes, normalise
from xvit.data.sources import DataSpecError
from xvit.models import Preprocessing, load_model
from xvit.training import Callback, TrainConfig, TrainConfigError, train


def _config(tmp_path, **kw):
    base = dict(data="xvit-shapes:single", out=str(tmp_path / "run"), preset="nano", img_size=48, patch_size=8,
                epochs=2, train_size=128, val_size=64, test_size=64, batch_size=32, lr=2e-3, warmup_epochs=0.5,
                progress=False)
    return TrainConfig(**{**base, **kw})


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_shapes_checkpoint_round_trips_with_token_labelling(tmp_path):
    summary = train(_config(tmp_path, token_loss=1.0))
    log = _log(tmp_path / "run")
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(0.0 < r["train_token_loss"] < 10.0 for r in log)
    model = summary["model"]
    loaded = load_model(str(tmp_path / "run"))  # the token head is not part of the checkpoint
    x = normalise(make_shapes("single", 8, size=48, split="test").images, Preprocessing())
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
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(data / "unlabelled.png")
    with pytest.raises(DataSpecError, match="has no labels"):
        train(_config(tmp_path, data=str(data)))
    (data / "unlabelled.png").unlink()
    (data / "only").mkdir()
    Image.new("RGB", (8, 8)).save(data / "only" / "a.png")
    Image.new("RGB", (8, 8)).save(data / "only" / "b.png")
    with pytest.raises(DataSpecError, match="at least two classes"):
        train(_config(tmp_path, data=str(data)))


def test_mnist_idx_data_trains_a_three_channel_model(tmp_path):
    """Any labelled data source trains: one-channel IDX digits are brought to the model's three channels."""
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = np.where(labels[:, None, None] == 0, np.tri(16, dtype=np.uint8)[None] * 200,
                      np.tri(16, dtype=np.uint8).T[None] * 200) + rng.integers(0, 40, (40, 16, 16), dtype=np.uint8)
    for name, array in (("digits-images-idx3-ubyte", images), ("digits-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (tmp_path / name).write_bytes(header + array.astype(np.uint8).tobytes())
    summary = train(_config(tmp_path, data=f"mnist:{tmp_path}", img_size=16, holdout_fraction=0.25, epochs=1,
                            batch_size=10, data_seed=3))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["in_chans"] == 3 and config["class_names"] == ["0", "1"]
    assert config["training"]["data"] == {"dataset": "mnist", "spec": f"mnist:{tmp_path}", "train_size": 30,
                                          "holdout_size": 10, "holdout_seed": 3}
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_sincos_pos_embed_is_the_2d_sine_cosine_table():
    from xvit.training import sincos_pos_embed

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
    from xvit.training import mimetic_init_, sincos_pos_embed

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
    from xvit.training import shapes_accuracy, shapes_predictions

    model = create_vit("nano", img_size=48, patch_size=8, num_classes=10).train()
    labels, preds, marker = shapes_predictions(model, "spurious", 12, marker="random", batch_size=5)
    assert model.training  # the caller's mode is restored
    model.eval()
    batch = make_shapes("spurious", 12, size=48, split="test", marker="random")
    with torch.no_grad():
        expected = model(normalise(batch.images, Preprocessing())).argmax(1)
    assert torch.equal(labels, batch.labels) and torch.equal(marker, batch.marker)
    assert torch.equal(preds, expected)
    assert shapes_accuracy(model, "spurious", 12, marker="random") == (expected == batch.labels).sum().item() / 12


class _Recorder(Callback):
    """Records the hook calls, the attention flags seen while training, and adds an entry to each epoch's log."""

    def __init__(self):
        self.calls, self.fused_while_training, self.model = [], set(), None

    def on_train_start(self, model, config, info):
        self.model = model
        self.calls.append(("start", info["steps_per_epoch"], info["num_params"]))

    def on_epoch_start(self, epoch, model):
        self.calls.append(("epoch_start", epoch))

    def on_step_end(self, step, model, logs):
        self.fused_while_training |= {b.attn.fused_attn for b in model.blocks}
        self.calls.append(("step", step, logs["epoch"]))

    def on_epoch_end(self, epoch, model, logs):
        logs["head_norm"] = model.head.weight.norm().item()
        self.calls.append(("epoch_end", epoch))

    def on_train_end(self, model, summary):
        self.calls.append(("end", "model" in summary))


def test_callbacks_see_every_hook_and_their_entries_reach_the_log(tmp_path):
    recorder = _Recorder()
    summary = train(_config(tmp_path, train_size=64), callbacks=[recorder])
    n_params = summary["num_params"]
    assert recorder.calls == [("start", 2, n_params),
                              ("epoch_start", 1), ("step", 1, 1), ("step", 2, 1), ("epoch_end", 1),
                              ("epoch_start", 2), ("step", 3, 2), ("step", 4, 2), ("epoch_end", 2), ("end", False)]
    log = _log(tmp_path / "run")
    assert [r["head_norm"] for r in log][-1] == pytest.approx(summary["model"].head.weight.norm().item())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["final_epoch"]["head_norm"] == log[-1]["head_norm"]
    # Attention ran the explicit path while training; the flags are restored afterwards.
    assert recorder.fused_while_training == {False}
    assert all(b.attn.fused_attn for b in summary["model"].blocks)


def test_fused_attention_flags_are_restored_after_an_error(tmp_path):
    class Failing(_Recorder):
        def on_epoch_end(self, epoch, model, logs):
            raise RuntimeError("stop")

    failing = Failing()
    with pytest.raises(RuntimeError, match="stop"):
        train(_config(tmp_path, epochs=1, train_size=32), callbacks=[failing])
    assert failing.fused_while_training == {False}
    assert all(b.attn.fused_attn for b in failing.model.blocks)


def test_a_registered_variant_trains_through_arch(tmp_path):
    with registered("half-logit-vit", HalfLogitViT, vit_compatible=True):
        summary = train(_config(tmp_path, arch="half-logit-vit", epochs=1, train_size=32))
        assert type(summary["model"]) is HalfLogitViT
        loaded = load_model(tmp_path / "run")
        assert type(loaded) is HalfLogitViT
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["arch"] == "half-logit-vit" and config["training"]["config"]["arch"] == "half-logit-vit"


class _Interrupt(Callback):
    """Stops training after ``epochs`` finished epochs, as a killed process would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_start(self, epoch, model):
        if epoch == self.epochs + 1:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    whole = train(_config(tmp_path / "whole", epochs=3, flip=True))
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path / "cut", epochs=3, flip=True), callbacks=[_Interrupt(2)])
    assert [r["epoch"] for r in _log(tmp_path / "cut" / "run")] == [1, 2]
    resumed = train(_config(tmp_path / "cut", epochs=3, flip=True, resume=True))
    assert [r["epoch"] for r in _log(tmp_path / "cut" / "run")] == [1, 2, 3]
    for (name, a), b in zip(whole["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed["test_accuracy"] == whole["test_accuracy"]


def test_resume_refuses_a_state_from_another_config(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, epochs=2), callbacks=[_Interrupt(1)])
    with pytest.raises(TrainConfigError, match="another configuration"):
        train(_config(tmp_path, epochs=2, lr=1e-3, resume=True))


class _PenalisedViT(HalfLogitViT):
    """A variant with its own loss term: the squared norm of the class token, weighted by 10."""

    def regularization_loss(self):
        return 10.0 * self.cls_token.pow(2).sum()


def test_a_variants_regularization_loss_joins_the_loss(tmp_path):
    with registered("penalised", _PenalisedViT, vit_compatible=True):
        summary = train(_config(tmp_path, arch="penalised", epochs=1, model_args={"qkv_bias": False}))
    log = _log(tmp_path / "run")
    assert log[0]["train_reg_loss"] > 0
    assert summary["model"].blocks[0].attn.qkv.bias is None  # the model argument reached the config
    assert summary["model"].cls_token.abs().max() < 0.05  # the penalty pulled the token towards zero


# Distillation from a CNN teacher (xvit.training.teacher).

@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    from xvit.training import TeacherConfig, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "t"
    train_teacher(TeacherConfig(out=str(out), img_size=48, widths=(8, 16), epochs=1, train_size=64, val_size=32,
                                test_size=16, batch_size=16, progress=False))
    return out


def test_distillation_feeds_the_teacher_full_size_batches_and_records_it(tmp_path, teacher_dir, monkeypatch):
    """Soft distillation next to token labelling and the low-resolution curriculum: the teacher sees the 48-px
    batch while the student trains at 24 px, and the run records the teacher."""
    from xvit.training.teacher import TeacherCNN

    seen = []
    forward = TeacherCNN.forward
    monkeypatch.setattr(TeacherCNN, "forward", lambda self, x: seen.append((x.shape[-1], self.training,
                                                                            torch.is_grad_enabled()))
                        or forward(self, x))
    train(_config(tmp_path, teacher=str(teacher_dir), distill="soft", distill_temperature=2.0, token_loss=1.0,
                  low_res_size=24, low_res_epochs=1, train_size=64))
    assert len(seen) > 4 and {s for s, _, _ in seen} == {48}  # 4 steps + the teacher's validation
    assert not any(training or grad for _, training, grad in seen)
    log = _log(tmp_path / "run")
    assert [r["train_img_size"] for r in log] == [24, 48]
    assert all(0.0 <= r["train_teacher_agreement"] <= 1.0 and r["train_token_loss"] > 0 for r in log)
    training = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert training["config"]["teacher"] == str(teacher_dir) and training["config"]["distill"] == "soft"
    teacher = training["teacher"]
    assert teacher["path"] == str(teacher_dir) and len(teacher["sha256"]) == 64
    assert (teacher["distill"], teacher["distill_weight"], teacher["distill_temperature"]) == ("soft", 0.5, 2.0)
    assert 0.0 <= teacher["val_accuracy"] <= 1.0
    # What the card needs for the whole run's wall-clock: the teacher's own command, time and accuracy.
    recorded = json.loads((teacher_dir / "config.json").read_text())
    assert teacher["command"] == recorded["training"]["command"]
    assert teacher["wall_clock_seconds"] == recorded["training"]["wall_clock_seconds"] > 0
    assert teacher["test_accuracy"] == recorded["metrics"]["test_accuracy"]


def test_hard_distillation_with_weight_one_learns_the_teachers_labels_not_the_true_ones(tmp_path):
    """A teacher that calls every image class 0: with w = 1 the student learns to do the same, although the
    true labels of this folder are learnable (the plain run reaches 80 % in the CLI test)."""
    from tests.cli.test_train import _striped_folder
    from xvit.training import load_teacher

    classes = _striped_folder(tmp_path / "data", n_per_class=20, size=32)
    teacher = _fake_teacher(tmp_path / "teacher", 3, img_size=32, widths=(4,), names=classes)
    model = load_teacher(teacher)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    from xvit.training.teacher import _save_teacher

    _save_teacher(model, teacher, {}, {})
    summary = train(_config(tmp_path, data=str(tmp_path / "data"), img_size=32, holdout_fraction=0.25, epochs=4,
                            batch_size=15, lr=1e-2, teacher=str(teacher), distill_weight=1.0))
    log = _log(tmp_path / "run")
    assert all(r["train_teacher_acc"] < 0.5 for r in log)  # the teacher is right on class 0 only
    assert log[-1]["train_teacher_agreement"] == 1.0
    model = summary["model"]
    held = load_model(str(tmp_path / "run"))
    x = normalise(torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
                               for p in sorted((tmp_path / "data").rglob("*.png"))[::7]]), Preprocessing())
    with torch.no_grad():
        assert (held(x).argmax(1) == 0).all() and (model(x).argmax(1) == 0).all()


def _fake_teacher(out, n_classes, img_size=48, widths=(8, 16), names=None):
    """An untrained teacher directory (random weights) for ``n_classes`` classes named ``names`` (c0, c1, ...)."""
    from xvit.training.teacher import TeacherCNN, _save_teacher

    out.mkdir(parents=True)
    _save_teacher(TeacherCNN(n_classes, widths, img_size=img_size,
                             class_names=names or [f"c{k}" for k in range(n_classes)]), out, {}, {})
    return out


@pytest.mark.parametrize("kw,message", [
    ({"distill_weight": 1.5}, r"distill_weight must lie in \[0, 1\]"),
    ({"distill_weight": -0.1}, r"distill_weight must lie in \[0, 1\]"),
    ({"distill_temperature": 0.0}, "distill_temperature must be positive"),
    ({"distill": "medium"}, "distill must be 'hard' or 'soft'"),
    ({"teacher": "no/such/teacher"}, "is not a directory"),
])
def test_bad_distillation_settings_are_rejected_before_anything_is_written(tmp_path, kw, message):
    with pytest.raises(TrainConfigError, match=message):
        train(_config(tmp_path, **kw))
    assert not (tmp_path / "run").exists()


def test_a_teacher_of_other_classes_is_refused(tmp_path, teacher_dir):
    with pytest.raises(TrainConfigError, match="has 3 classes, the data 'xvit-shapes:single' 10"):
        train(_config(tmp_path, teacher=str(_fake_teacher(tmp_path / "three", 3))))
    with pytest.raises(TrainConfigError, match="classifies"):
        train(_config(tmp_path, teacher=str(_fake_teacher(tmp_path / "renamed", 10))))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainConfigError, match="config.json does not exist"):
        train(_config(tmp_path, teacher=str(tmp_path / "empty")))
    assert not (tmp_path / "run").exists()


def test_resume_refuses_a_changed_teacher(tmp_path, teacher_dir):
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_dir, teacher)
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, teacher=str(teacher)), callbacks=[_Interrupt(1)])
    with pytest.raises(TrainConfigError, match="differs in teacher"):
        train(_config(tmp_path, teacher=str(teacher_dir), resume=True))
    with pytest.raises(TrainConfigError, match="differs in distill_weight"):
        train(_config(tmp_path, teacher=str(teacher), distill_weight=0.7, resume=True))
    from xvit.training import load_teacher
    from xvit.training.teacher import _save_teacher

    retrained = load_teacher(teacher)
    with torch.no_grad():
        retrained.head.bias += 1.0
    _save_teacher(retrained, teacher, {}, {})
    with pytest.raises(TrainConfigError, match="teacher's weights .* changed"):
        train(_config(tmp_path, teacher=str(teacher), resume=True))
