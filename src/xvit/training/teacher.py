"""Knowledge distillation from a small CNN: the teacher network (:class:`TeacherCNN`), its training
(:func:`train_teacher`, ``xvit train-teacher``), its checkpoint (:func:`load_teacher`) and the distillation loss
that :func:`xvit.training.train` adds with ``TrainConfig(teacher=DIR)`` (:func:`distillation_loss`).

A convolutional teacher brings the inductive bias a ViT trained from scratch on little data lacks; DeiT
(Touvron et al., Training data-efficient image transformers & distillation through attention, ICML 2021,
arXiv:2012.12877) found a convnet teacher the better one. The teacher trains on the same data streams as the
ViT (:func:`~xvit.training.data.training_data`, fresh xvit-shapes images every epoch, flips) with the same
optimiser and schedule (:mod:`xvit.training.common`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from xvit.data.preprocess import normalise
from xvit.data.shapes import ShapesDataset, make_shapes
from xvit.models import Preprocessing
from xvit.training.accuracy import loss_and_accuracy
from xvit.training.callbacks import Callback, ConsoleLog, JsonlLog, ProgressBar
from xvit.training.common import (
    STATE_FILE,
    adamw_with_schedule,
    load_state,
    random_hflip,
    restore_run,
    save_state,
    shuffled_loader,
)
from xvit.training.config import DISTILL_MODES, MEAN, STD, TrainConfig, TrainConfigError, shapes_variant
from xvit.training.data import training_data

__all__ = ["TeacherCNN", "TeacherConfig", "train_teacher", "load_teacher", "teacher_fingerprint", "teacher_record",
           "distillation_loss", "TEACHER_KIND"]

TEACHER_KIND = "xvit-teacher"
"""The ``kind`` entry of a teacher's ``config.json``."""


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class TeacherCNN(nn.Module):
    """A small VGG-style classifier: a stride-2 3x3 stem, then one stage per entry of ``widths``, each
    ``[conv3x3-BN-ReLU] x 2`` with the first conv of stride 2, global average pooling and a linear head.
    With the default widths (32, 64, 128, 128) a 112x112 image costs about 44 M multiply-accumulates, about a
    seventh of the 128-wide, 6-block ViT's forward. ``img_size`` and ``class_names`` are what it was trained on
    (stored in its checkpoint); inputs are normalised with :attr:`preprocessing`."""

    def __init__(self, num_classes: int, widths: Sequence[int] = (32, 64, 128, 128), in_chans: int = 3,
                 img_size: int = 112, class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.widths, self.num_classes, self.img_size = tuple(widths), num_classes, img_size
        self.class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        layers: list[nn.Module] = [_conv_bn_relu(in_chans, widths[0], 2)]
        c = widths[0]
        for w in widths:
            layers += [_conv_bn_relu(c, w, 2), _conv_bn_relu(w, w, 1)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    @property
    def preprocessing(self) -> Preprocessing:
        """Resize to ``img_size`` (bilinear), normalise with the training loop's :data:`MEAN` and :data:`STD`."""
        return Preprocessing(size=(self.img_size, self.img_size), mean=MEAN, std=STD, interpolation="bilinear")

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of normalised images ``(B, C, H, W)``."""
        return self.head(self.features(x).mean((2, 3)))


@dataclass
class TeacherConfig:
    """Everything that decides a teacher's training run; stored in its ``config.json``.

    The data fields mean what they mean in :class:`~xvit.training.TrainConfig` (the same streams and splits).
    ``widths`` are the channels of the stages of :class:`TeacherCNN`. Label smoothing is off by default:
    a smoothed teacher transfers less through its probabilities (Müller, Kornblith and Hinton, When does label
    smoothing help?, NeurIPS 2019). ``test_size`` xvit-shapes test images are measured after training.
    """

    data: str = "xvit-shapes:single"
    out: str = "runs/xvit-teacher"
    widths: tuple[int, ...] = (32, 64, 128, 128)
    img_size: int = 112
    epochs: int = 10
    train_size: int = 10_000
    fresh_data: bool = True
    val_size: int = 1_000
    test_size: int = 2_000
    holdout_fraction: float = 0.1
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    flip: bool = True
    bf16: bool = True
    seed: int = 0
    data_seed: int | None = None
    progress: bool = True
    resume: bool = False
    command: str | None = None

    @property
    def preprocessing(self) -> Preprocessing:
        """How the teacher expects its input: resized bilinearly to ``img_size``, normalised with MEAN and STD."""
        return Preprocessing(size=(self.img_size, self.img_size), mean=MEAN, std=STD, interpolation="bilinear")

    def data_config(self) -> TrainConfig:
        """The :class:`~xvit.training.TrainConfig` with this run's data fields, for
        :func:`~xvit.training.data.training_data` and its checks."""
        return TrainConfig(data=self.data, out=self.out, img_size=self.img_size, patch_size=1, epochs=self.epochs,
                           train_size=self.train_size, fresh_data=self.fresh_data, val_size=self.val_size,
                           test_size=self.test_size, holdout_fraction=self.holdout_fraction,
                           batch_size=self.batch_size, lr=self.lr, min_lr=self.min_lr,
                           weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs,
                           label_smoothing=self.label_smoothing, flip=self.flip, bf16=self.bf16, seed=self.seed,
                           data_seed=self.data_seed)

    def validate(self) -> None:
        """Raise :class:`~xvit.training.TrainConfigError` (or a data-spec error) for a run that cannot work,
        before any data is read."""
        self.widths = tuple(self.widths)
        if not self.widths or not all(isinstance(w, int) and w > 0 for w in self.widths):
            raise TrainConfigError(f"widths must be one or more positive integers; got {list(self.widths)}.")
        self.data_config().validate()


def teacher_fingerprint(path: str | Path) -> str:
    """The SHA-256 of a teacher's ``model.safetensors``: a resumed distillation run checks it is the same."""
    return hashlib.sha256((Path(path) / "model.safetensors").read_bytes()).hexdigest()


def teacher_record(path: str | Path) -> dict[str, Any]:
    """What a student's checkpoint records of the teacher in ``path``: its training command, wall-clock
    (``train_seconds`` where the teacher predates ``wall_clock_seconds``) and measured accuracies, as far as its
    ``config.json`` holds them (read after :func:`load_teacher` accepted the directory)."""
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    training, metrics = config.get("training") or {}, config.get("metrics") or {}
    wall = training.get("wall_clock_seconds", training.get("train_seconds"))
    record = {"command": training.get("command"), "wall_clock_seconds": wall,
              "test_accuracy": metrics.get("test_accuracy")}
    return {k: v for k, v in record.items() if v is not None}


def _save_teacher(model: TeacherCNN, out: Path, training: dict[str, Any], metrics: dict[str, Any]) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    config = {"kind": TEACHER_KIND, "widths": list(model.widths), "num_classes": model.num_classes,
              "img_size": model.img_size, "class_names": model.class_names,
              "preprocessing": {"size": [model.img_size] * 2, "mean": list(MEAN), "std": list(STD),
                                "interpolation": "bilinear"},
              "metrics": metrics, "training": training}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_teacher(path: str | Path) -> TeacherCNN:
    """The teacher in a directory written by :func:`train_teacher` (``config.json`` + ``model.safetensors``; no
    pickles), in eval mode; :class:`~xvit.training.TrainConfigError` naming the file when the directory is
    missing or malformed."""
    path = Path(path)
    hint = "train one with 'xvit train-teacher --out DIR'"
    if not path.is_dir():
        raise TrainConfigError(f"teacher {path} is not a directory; {hint}.")
    cfg_file, weights = path / "config.json", path / "model.safetensors"
    for file in (cfg_file, weights):
        if not file.is_file():
            raise TrainConfigError(f"{file} does not exist; a teacher directory holds config.json and "
                                   f"model.safetensors ({hint}).")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainConfigError(f"{cfg_file} is not valid JSON ({e}); {hint}.") from None
    if not isinstance(config, dict) or config.get("kind") != TEACHER_KIND:
        raise TrainConfigError(f"{cfg_file} is not a teacher's config (no \"kind\": \"{TEACHER_KIND}\"); {hint}.")
    widths, n, size, names = (config.get(k) for k in ("widths", "num_classes", "img_size", "class_names"))
    if not (isinstance(widths, list) and widths and all(isinstance(w, int) and w > 0 for w in widths)
            and isinstance(n, int) and n > 0 and isinstance(size, int) and size > 0
            and isinstance(names, list) and len(names) == n and all(isinstance(c, str) for c in names)):
        raise TrainConfigError(f"{cfg_file} needs positive integer widths, num_classes and img_size and "
                               f"num_classes class_names; {hint}.")
    model = TeacherCNN(n, widths, img_size=size, class_names=names)
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own SafetensorError (an Exception) for corrupt files
        raise TrainConfigError(f"{weights} is not a readable safetensors file ({str(e).splitlines()[0]}); "
                               f"{hint}.") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise TrainConfigError(f"{weights} does not hold the weights {cfg_file} describes "
                               f"({str(e).splitlines()[0]}); {hint}.") from None
    return model.eval()


def distillation_loss(student_logits: Tensor, labels: Tensor, teacher_logits: Tensor, mode: str = "hard",
                      weight: float = 0.5, temperature: float = 1.0, label_smoothing: float = 0.0) -> Tensor:
    """``(1 - w) CE(z_s, y) + w L_KD``, the mean over the batch, with the true-label term label-smoothed.

    ``mode="hard"``: ``L_KD = CE(z_s, argmax z_t)``, DeiT's hard-label distillation (Touvron et al. 2021, §4,
    the hard-label objective) on the class head. ``mode="soft"``: ``L_KD = τ² KL(softmax(z_t / τ) ||
    softmax(z_s / τ))`` (Hinton, Vinyals and Dean, Distilling the knowledge in a neural network, 2015, §2; DeiT's
    soft distillation); ``τ²`` keeps the gradient scale independent of ``τ``.
    """
    if mode not in DISTILL_MODES:
        raise ValueError(f"distillation mode must be 'hard' or 'soft'; got {mode!r}.")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation weight must lie in [0, 1]; got {weight}.")
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be positive; got {temperature}.")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                         f"{tuple(student_logits.shape)} differ in shape.")
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    if mode == "hard":
        kd = F.cross_entropy(student_logits, teacher_logits.argmax(1))
    else:
        kd = temperature ** 2 * F.kl_div(F.log_softmax(student_logits / temperature, 1),
                                         F.log_softmax(teacher_logits / temperature, 1), reduction="batchmean",
                                         log_target=True)
    return (1 - weight) * ce + weight * kd


def _resumable(cfg: TeacherConfig) -> dict[str, Any]:
    return {k: (list(v) if k == "widths" else v) for k, v in asdict(cfg).items()
            if k not in ("resume", "progress", "command", "out")}


def train_teacher(config: TeacherConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train a :class:`TeacherCNN` as ``config`` says, write ``model.safetensors``, ``config.json`` and
    ``log.jsonl`` (train loss and accuracy, validation loss and accuracy per epoch) to ``config.out``, and return
    a summary with the ``model``. Resumable like :func:`xvit.training.train` (``train_state.pt`` every epoch);
    ``callbacks`` are :class:`~xvit.training.Callback` hooks, run before the built-in ones."""
    cfg = config
    cfg.validate()
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    data = training_data(cfg.data_config())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prep = cfg.preprocessing
    model = TeacherCNN(len(data.classes), cfg.widths, img_size=cfg.img_size, class_names=data.classes)
    n_params = sum(p.numel() for p in model.parameters())
    params = list(model.parameters())
    loader, loader_gen = shuffled_loader(data.train_set, cfg.batch_size, cfg.seed)
    opt, sched = adamw_with_schedule([p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2],
                                     lr=cfg.lr, min_lr=cfg.min_lr, weight_decay=cfg.weight_decay,
                                     warmup_epochs=cfg.warmup_epochs, steps_per_epoch=len(loader),
                                     epochs=cfg.epochs)
    flip_gen = torch.Generator().manual_seed(cfg.seed + 1)
    state_path = out / STATE_FILE
    history: list[dict[str, Any]] = []
    first_epoch = 1
    if cfg.resume and state_path.exists():
        state = load_state(state_path, _resumable(cfg))
        restore_run(state, model, opt, sched, loader_gen, flip_gen)
        history = list(state["history"])
        first_epoch = len(history) + 1
        t_start -= state["elapsed_seconds"]
    hooks = [*callbacks, *([ProgressBar()] if cfg.progress else []), ConsoleLog(), JsonlLog(out / "log.jsonl")]
    for hook in hooks:
        hook.on_train_start(model, cfg, {"classes": data.classes, "num_params": n_params,
                                         "steps_per_epoch": len(loader), "first_epoch": first_epoch,
                                         "history": history, "val_images": data.val_images,
                                         "val_labels": data.val_labels})
    step = (first_epoch - 1) * len(loader)
    for epoch in range(first_epoch, cfg.epochs + 1):
        if isinstance(data.train_set, ShapesDataset) and cfg.fresh_data:
            data.train_set.set_epoch(epoch - 1)
        for hook in hooks:
            hook.on_epoch_start(epoch, model)
        model.train()
        t_epoch = time.perf_counter()
        run_loss, run_correct, seen = 0.0, 0, 0
        for batch in loader:
            x, y = batch[0], batch[1]
            if data.flip:
                x = random_hflip(x, flip_gen)[0]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(normalise(x, prep))
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item() * len(y)
            run_correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            step += 1
            for hook in hooks:
                hook.on_step_end(step, model, {"epoch": epoch, "loss": run_loss / seen, "acc": run_correct / seen,
                                               "lr": opt.param_groups[0]["lr"]})
        val_loss, val_acc = loss_and_accuracy(model, data.val_images, data.val_labels, prep, cfg.bf16)
        record = {"epoch": epoch, "train_loss": run_loss / seen, "train_acc": run_correct / seen,
                  "val_loss": val_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
                  "epoch_seconds": round(time.perf_counter() - t_epoch, 2),
                  "elapsed_seconds": round(time.perf_counter() - t_start, 2)}
        for hook in hooks:
            hook.on_epoch_end(epoch, model, record)
        history.append(record)
        save_state(state_path, {"config": _resumable(cfg), "model": model.state_dict(),
                                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                "loader_generator": loader_gen.get_state(), "flip_generator": flip_gen.get_state(),
                                "rng": torch.get_rng_state(), "history": history,
                                "elapsed_seconds": time.perf_counter() - t_start})

    train_seconds = time.perf_counter() - t_start
    metrics: dict[str, Any] = {"val_accuracy": history[-1]["val_acc"]}
    variant = shapes_variant(cfg.data)
    if variant is not None:
        test = make_shapes(variant, cfg.test_size, split="test", size=cfg.img_size)
        metrics["test_accuracy"] = loss_and_accuracy(model, test.images, test.labels, prep, bf16=False)[1]
    wall = round(time.perf_counter() - t_start, 1)
    training = {"command": cfg.command or "xvit.training.train_teacher(TeacherConfig(...))",
                "config": _resumable(cfg) | {"out": cfg.out}, "data": data.info, "num_params": n_params,
                "train_seconds": round(train_seconds, 1), "wall_clock_seconds": wall,
                "torch_version": torch.__version__, "threads": torch.get_num_threads(), "final_epoch": history[-1]}
    _save_teacher(model.eval(), out, training, metrics)
    summary = {"out": str(out), "num_params": n_params, "wall_clock_seconds": wall, **metrics}
    for hook in hooks:
        hook.on_train_end(model, summary)
    return {**summary, "model": model.eval()}
