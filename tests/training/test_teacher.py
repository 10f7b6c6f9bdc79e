"""The CNN teacher and the distillation loss: the teacher learns, its checkpoint round-trips and resumes, broken
teacher directories get clear errors, and the loss matches hand-computed values."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.cli.test_train import _striped_folder
from xvit.training import Callback, TeacherCNN, TeacherConfig, TrainConfigError, train_teacher
from xvit.training.teacher import _save_teacher, distillation_loss, load_teacher


def _config(tmp_path, **kw):
    base = dict(data="xvit-shapes:single", out=str(tmp_path / "teacher"), img_size=32, widths=(8, 16), epochs=2,
                train_size=64, val_size=32, test_size=32, batch_size=16, progress=False)
    return TeacherConfig(**{**base, **kw})


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_teacher_learns_a_folder_and_reports_validation_accuracy_per_epoch(tmp_path):
    classes = _striped_folder(tmp_path / "data", n_per_class=40)
    summary = train_teacher(_config(tmp_path, data=str(tmp_path / "data"), epochs=4, batch_size=12, lr=5e-3,
                                    holdout_fraction=0.25))
    log = _log(tmp_path / "teacher")
    assert [r["epoch"] for r in log] == [1, 2, 3, 4] and all(0.0 <= r["val_acc"] <= 1.0 for r in log)
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert log[-1]["val_acc"] >= 0.8
    assert summary["val_accuracy"] == log[-1]["val_acc"] and "test_accuracy" not in summary  # no test split
    assert load_teacher(tmp_path / "teacher").class_names == classes


def test_teacher_checkpoint_round_trips_without_pickles(tmp_path):
    summary = train_teacher(_config(tmp_path))
    out = tmp_path / "teacher"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "log.jsonl", "model.safetensors",
                                                     "train_state.pt"]
    loaded = load_teacher(out)
    assert not loaded.training and loaded.widths == (8, 16) and loaded.img_size == 32
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(summary["model"](x), loaded(x))
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "xvit-teacher" and config["num_classes"] == 10 and len(config["class_names"]) == 10
    assert config["metrics"]["test_accuracy"] == summary["test_accuracy"]
    assert config["training"]["config"]["widths"] == [8, 16] and config["training"]["final_epoch"]["epoch"] == 2


class _Interrupt(Callback):
    def on_epoch_start(self, epoch, model):
        if epoch == 2:
            raise KeyboardInterrupt


def test_an_interrupted_teacher_run_resumes_to_the_same_weights(tmp_path):
    whole = train_teacher(_config(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        train_teacher(_config(tmp_path / "cut"), callbacks=[_Interrupt()])
    resumed = train_teacher(_config(tmp_path / "cut", resume=True))
    assert [r["epoch"] for r in _log(tmp_path / "cut" / "teacher")] == [1, 2]
    for (name, a), b in zip(whole["model"].state_dict().items(), resumed["model"].state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(TrainConfigError, match="differs in lr"):
        train_teacher(_config(tmp_path / "cut", resume=True, lr=1e-3))


def test_default_teacher_costs_under_80m_macs_at_112():
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            macs.append(output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                        // module.groups)
        elif isinstance(module, nn.Linear):
            macs.append(output.numel() * module.in_features)

    model = TeacherCNN(10)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, 112, 112))
    for h in handles:
        h.remove()
    assert len(macs) == 1 + 2 * 4 + 1  # stem, two convs per stage, head
    assert 30e6 < sum(macs) < 80e6


def test_broken_teacher_directories_are_named(tmp_path):
    with pytest.raises(TrainConfigError, match="is not a directory"):
        load_teacher(tmp_path / "missing")
    out = tmp_path / "t"
    out.mkdir()
    with pytest.raises(TrainConfigError, match="config.json does not exist"):
        load_teacher(out)
    _save_teacher(TeacherCNN(3, (4, 8), img_size=16, class_names=["a", "b", "c"]), out, {}, {})
    assert load_teacher(out).class_names == ["a", "b", "c"]
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text("{not json")
    with pytest.raises(TrainConfigError, match="not valid JSON"):
        load_teacher(out)
    (out / "config.json").write_text(json.dumps({**config, "kind": "xvit"}))
    with pytest.raises(TrainConfigError, match="not a teacher's config"):
        load_teacher(out)
    (out / "config.json").write_text(json.dumps({**config, "class_names": ["a"]}))
    with pytest.raises(TrainConfigError, match="class_names"):
        load_teacher(out)
    (out / "config.json").write_text(json.dumps({**config, "widths": [4, 16]}))
    with pytest.raises(TrainConfigError, match="does not hold the weights"):
        load_teacher(out)
    (out / "config.json").write_text(json.dumps(config))
    (out / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(TrainConfigError, match="not a readable safetensors file"):
        load_teacher(out)


def test_bad_teacher_configs_are_rejected_before_anything_is_written(tmp_path):
    with pytest.raises(TrainConfigError, match="widths"):
        train_teacher(_config(tmp_path, widths=()))
    with pytest.raises(TrainConfigError, match="widths"):
        train_teacher(_config(tmp_path, widths=(8, -1)))
    with pytest.raises(TrainConfigError, match="epochs must be positive"):
        train_teacher(_config(tmp_path, epochs=0))
    with pytest.raises(ValueError, match="pair"):
        train_teacher(_config(tmp_path, data="xvit-shapes:pair"))
    assert not (tmp_path / "teacher").exists()


# The distillation loss, against hand-computed values.

def test_weight_zero_is_the_plain_cross_entropy_and_weight_one_the_distillation_term():
    gen = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    for mode in ("hard", "soft"):
        torch.testing.assert_close(distillation_loss(zs, y, zt, mode, 0.0, 3.0, label_smoothing=0.1),
                                   F.cross_entropy(zs, y, label_smoothing=0.1))
    # Hard, weight 1: the true labels do not matter, only the teacher's argmax does.
    torch.testing.assert_close(distillation_loss(zs, y, zt, "hard", 1.0), F.cross_entropy(zs, zt.argmax(1)))
    torch.testing.assert_close(distillation_loss(zs, y, zt, "hard", 1.0), distillation_loss(zs, y.flip(0), zt,
                                                                                             "hard", 1.0))


def test_hard_distillation_by_hand():
    zs = torch.tensor([[math.log(3.0), 0.0]])  # softmax (3/4, 1/4)
    zt = torch.tensor([[0.0, 5.0]])  # the teacher says class 1
    y = torch.tensor([0])
    # (1 - w) (-log 3/4) + w (-log 1/4), w = 0.25
    expected = 0.75 * -math.log(0.75) + 0.25 * -math.log(0.25)
    assert distillation_loss(zs, y, zt, "hard", 0.25).item() == pytest.approx(expected, rel=1e-6)


def test_soft_distillation_by_hand():
    tau = 2.0
    zs = torch.tensor([[0.0, 0.0]])  # softmax(zs / tau) = (1/2, 1/2)
    zt = torch.tensor([[2 * math.log(3.0), 0.0]])  # softmax(zt / tau) = (3/4, 1/4)
    y = torch.tensor([1])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert distillation_loss(zs, y, zt, "soft", 1.0, tau).item() == pytest.approx(tau ** 2 * kl, rel=1e-6)
    expected = 0.5 * -math.log(0.5) + 0.5 * tau ** 2 * kl
    assert distillation_loss(zs, y, zt, "soft", 0.5, tau).item() == pytest.approx(expected, rel=1e-6)
    # The same teacher and student give zero KL; a batch is the mean over its images.
    assert distillation_loss(zt, y, zt, "soft", 1.0, tau).item() == pytest.approx(0.0, abs=1e-6)
    two = distillation_loss(torch.cat([zs, zt]), torch.tensor([1, 1]), torch.cat([zt, zt]), "soft", 1.0, tau)
    assert two.item() == pytest.approx(tau ** 2 * kl / 2, rel=1e-5)


def test_hard_distillation_drives_the_student_to_a_permuted_teacher():
    """A teacher that predicts a fixed permutation of the labels: with weight 1 the student learns the permutation."""
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(5).repeat(4)
    perm = torch.tensor([3, 0, 4, 1, 2])
    teacher_logits = 4.0 * F.one_hot(perm[y], 5).float() + 0.1 * torch.randn(20, 5, generator=gen)
    student = torch.zeros(20, 5, requires_grad=True)
    opt = torch.optim.SGD([student], lr=5.0)
    losses = []
    for _ in range(50):
        loss = distillation_loss(student, y, teacher_logits, "hard", 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert torch.equal(student.argmax(1), perm[y])
    assert (student.argmax(1) != y).all()  # the permutation has no fixed point: it learnt the teacher, not y


@pytest.mark.parametrize("kw,message", [({"mode": "medium"}, "'hard' or 'soft'"), ({"weight": 1.5}, r"\[0, 1\]"),
                                        ({"temperature": 0.0}, "temperature must be positive")])
def test_distillation_loss_rejects_bad_settings(kw, message):
    zs, y = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=message):
        distillation_loss(zs, y, zs, **kw)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(zs, y, torch.zeros(2, 4))
