"""The training loop: a registered model variant trained on xvit-shapes or labelled data (an image folder,
MNIST, ...), written as an xvit checkpoint.

AdamW with linear warm-up and a cosine schedule, label smoothing, random horizontal flips where they keep
the label, optional bfloat16 autocast (about 2x faster on CPUs with ``avx512_bf16``). For xvit-shapes two
optional aids shorten training on a CPU: a resolution curriculum (early epochs on downsampled images) and
token labelling (an auxiliary per-patch loss from the ground-truth masks). With a ``teacher``
(:mod:`xvit.training.teacher`) the class head is also trained on the CNN teacher's labels or probabilities
(:func:`~xvit.training.teacher.distillation_loss`); the teacher sees each augmented batch at its own size, before
the curriculum's downsampling. The variant must expose the
built-in ViT's ``forward_features``/``forward_head`` and ``num_prefix_tokens``; a variant's own loss term
(``model.regularization_loss()``) is added to the loss. Every finished epoch writes ``train_state.pt`` (model,
optimiser, schedule, random generators, history; read back with ``weights_only=True``), so ``resume=True``
continues an interrupted run where it stopped. Attention runs on the explicit path during training (about
1.8x faster than PyTorch's CPU SDPA kernel here), switched in a context that
restores every ``fused_attn`` flag on exit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.data.preprocess import normalise
from xvit.data.shapes import ShapesDataset
from xvit.models import create_model, save_checkpoint
from xvit.training.accuracy import loss_and_accuracy, shapes_accuracy
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
from xvit.training.config import TOKEN_COVERAGE, TrainConfig, TrainConfigError
from xvit.training.data import training_data
from xvit.training.init import mimetic_init_
from xvit.training.svda_tracking import IndicatorTracking
from xvit.training.teacher import TeacherCNN, distillation_loss, load_teacher, teacher_fingerprint, teacher_record
from xvit.utils.context import set_attributes

__all__ = ["train"]


_DISTILL_FIELDS = ("teacher", "distill", "distill_weight", "distill_temperature")


def _resumable(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields a resumed run must share with the run that wrote the state (not the bookkeeping; the
    distillation fields only with a teacher, so states written before they existed still resume)."""
    skip = {"resume", "progress", "command", "out", "track_indicators", "track_probe_size",
            *(_DISTILL_FIELDS if cfg.teacher is None else ())}
    return {k: v for k, v in asdict(cfg).items() if k not in skip}


def _save_state(path: Path, cfg: TrainConfig, model: nn.Module, token_head: nn.Module | None,
                opt: torch.optim.Optimizer, sched: Any, loader_gen: torch.Generator, flip_gen: torch.Generator,
                history: list[dict[str, Any]], step: int, elapsed: float, teacher_sha256: str | None) -> None:
    """Write the state that :func:`train` resumes from (:func:`~xvit.training.common.save_state`)."""
    save_state(path, {"config": _resumable(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "loader_generator": loader_gen.get_state(),
                      "flip_generator": flip_gen.get_state(), "rng": torch.get_rng_state(), "history": history,
                      "step": step, "elapsed_seconds": elapsed, "teacher_sha256": teacher_sha256,
                      **({"token_head": token_head.state_dict()} if token_head is not None else {})})


def _check_teacher(teacher: TeacherCNN, cfg: TrainConfig, classes: list[str]) -> None:
    """A teacher must classify the student's classes, in the same order."""
    if teacher.num_classes != len(classes):
        raise TrainConfigError(f"teacher {cfg.teacher} has {teacher.num_classes} classes, the data "
                               f"{cfg.data!r} {len(classes)}; distil from a teacher trained on the same data.")
    if teacher.class_names != classes:
        raise TrainConfigError(f"teacher {cfg.teacher} classifies {teacher.class_names}, the data {cfg.data!r} "
                               f"{classes}; distil from a teacher trained on the same data.")


@torch.no_grad()
def _teacher_logits(teacher: TeacherCNN, images: Tensor, bf16: bool) -> Tensor:
    """The teacher's float32 logits of a uint8 batch, at the size it was trained at (before the student's
    low-resolution downsampling), normalised as it expects."""
    x = normalise(images, teacher.preprocessing)
    if x.shape[-2:] != (teacher.img_size, teacher.img_size):
        x = F.interpolate(x, size=(teacher.img_size, teacher.img_size), mode="bilinear", antialias=True,
                          align_corners=False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return teacher(x).float()


def train(config: TrainConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train a model as ``config`` says, write the checkpoint and ``log.jsonl`` to ``config.out``, and return
    a summary: output directory, metrics, parameters, wall-clock seconds and the ``model``.

    ``callbacks`` run before the built-in ones (progress bar when ``config.progress``, console lines,
    ``log.jsonl``), so entries they add to an epoch's record are logged.
    """
    cfg = config
    cfg.validate()
    t_start = time.perf_counter()
    # The teacher is read before seeding (building it draws random numbers), and checked before out is created.
    teacher = load_teacher(cfg.teacher).requires_grad_(False) if cfg.teacher is not None else None
    teacher_sha256 = teacher_fingerprint(cfg.teacher) if cfg.teacher is not None else None
    torch.manual_seed(cfg.seed)
    data = training_data(cfg)
    classes = data.classes
    if teacher is not None:
        _check_teacher(teacher, cfg, classes)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prep = cfg.preprocessing

    overrides = {k: getattr(cfg, k) for k in ("embed_dim", "depth", "num_heads", "mlp_ratio")
                 if getattr(cfg, k) is not None}
    model = create_model(cfg.arch, cfg.preset, img_size=cfg.img_size, patch_size=cfg.patch_size,
                         num_classes=len(classes), reg_tokens=cfg.reg_tokens, **overrides, **cfg.model_args)
    regularization = getattr(model, "regularization_loss", None)
    if cfg.init == "mimetic":
        mimetic_init_(model, seed=cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    # Weight decay on weight matrices only: not on biases, norms, tokens or the position embedding.
    token_head = nn.Linear(model.config.embed_dim, len(classes) + 1) if cfg.token_loss else None
    params = list(model.named_parameters()) + (list(token_head.named_parameters(prefix="token_head"))
                                               if token_head is not None else [])
    # A variant lists further exempt parameters (e.g. SVDA's spectrum) in no_weight_decay(), as timm models do.
    exempt = set(getattr(model, "no_weight_decay", set)())
    decays = {n: p.ndim >= 2 and "token" not in n and "pos_embed" not in n and n not in exempt for n, p in params}
    decays.update({n: p.ndim >= 2 for n, p in params if n.startswith("token_head")})
    loader, loader_gen = shuffled_loader(data.train_set, cfg.batch_size, cfg.seed)
    steps_per_epoch = len(loader)
    opt, sched = adamw_with_schedule([p for n, p in params if decays[n]], [p for n, p in params if not decays[n]],
                                     lr=cfg.lr, min_lr=cfg.min_lr, weight_decay=cfg.weight_decay,
                                     warmup_epochs=cfg.warmup_epochs, steps_per_epoch=steps_per_epoch,
                                     epochs=cfg.epochs)
    flip_gen = torch.Generator().manual_seed(cfg.seed + 1)
    state_path = out / STATE_FILE
    history: list[dict[str, Any]] = []
    step, first_epoch, elapsed_before = 0, 1, 0.0
    if cfg.resume and state_path.exists():
        state = load_state(state_path, _resumable(cfg))
        if state.get("teacher_sha256") != teacher_sha256:
            raise TrainConfigError(f"the teacher's weights ({cfg.teacher}/model.safetensors) changed since "
                                   f"{state_path} was written; use another --out or drop --resume to start afresh.")
        restore_run(state, model, opt, sched, loader_gen, flip_gen)
        if token_head is not None:
            token_head.load_state_dict(state["token_head"])
        history, step, elapsed_before = list(state["history"]), state["step"], state["elapsed_seconds"]
        first_epoch = len(history) + 1
        t_start -= elapsed_before
    tracking = [IndicatorTracking(out, cfg.track_probe_size, cfg.seed)] if cfg.track_indicators else []
    hooks = [*callbacks, *tracking, *([ProgressBar()] if cfg.progress else []), ConsoleLog(),
             JsonlLog(out / "log.jsonl")]
    teacher_val_acc = (loss_and_accuracy(teacher, data.val_images, data.val_labels, teacher.preprocessing,
                                         cfg.bf16)[1] if teacher is not None else None)
    for hook in hooks:
        hook.on_train_start(model, cfg, {"classes": classes, "num_params": n_params,
                                         "steps_per_epoch": steps_per_epoch, "first_epoch": first_epoch,
                                         "history": history, "val_images": data.val_images,
                                         "val_labels": data.val_labels})

    eager = [(m, "fused_attn", False) for m in model.modules() if hasattr(m, "fused_attn")]
    with set_attributes(eager):
        for epoch in range(first_epoch, cfg.epochs + 1):
            if isinstance(data.train_set, ShapesDataset) and cfg.fresh_data:
                data.train_set.set_epoch(epoch - 1)
            model.train()
            t_epoch = time.perf_counter()
            low_res = cfg.low_res_size if epoch <= cfg.low_res_epochs else None
            run_loss, run_token_loss, run_reg_loss, run_correct, seen = 0.0, 0.0, 0.0, 0, 0
            run_teacher_agree, run_teacher_correct = 0, 0
            for hook in hooks:
                hook.on_epoch_start(epoch, model)
            for batch in loader:
                x, y = batch[0], batch[1]
                if data.flip:
                    x, masks = random_hflip(x, flip_gen, batch[2] if token_head is not None else None)
                    if masks is not None:
                        batch[2] = masks
                teacher_logits = _teacher_logits(teacher, x, cfg.bf16) if teacher is not None else None
                x = normalise(x, prep)
                if low_res:
                    x = F.interpolate(x, size=(low_res, low_res), mode="bilinear", antialias=True,
                                      align_corners=False)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                    feats = model.forward_features(x)
                    logits = model.forward_head(feats)
                    token_logits = (token_head(feats[:, model.num_prefix_tokens:]) if token_head is not None
                                    else None)
                if teacher_logits is None:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                else:
                    loss = distillation_loss(logits.float(), y, teacher_logits, cfg.distill, cfg.distill_weight,
                                             cfg.distill_temperature, label_smoothing=cfg.label_smoothing)
                    run_teacher_agree += (logits.argmax(1) == teacher_logits.argmax(1)).sum().item()
                    run_teacher_correct += (teacher_logits.argmax(1) == y).sum().item()
                run_loss += loss.item() * len(y)
                if token_logits is not None:
                    grid = x.shape[-1] // cfg.patch_size
                    coverage = F.adaptive_avg_pool2d(batch[2][:, None].float(), grid).flatten(1)
                    on_object = (coverage >= TOKEN_COVERAGE).flatten()
                    target = torch.where(on_object.view_as(coverage), y[:, None], len(classes)).flatten()
                    per_token = F.cross_entropy(token_logits.float().flatten(0, 1), target, reduction="none")
                    # Object and background tokens weigh equally, or the few object tokens would drown.
                    token = 0.5 * (per_token[on_object].mean() + per_token[~on_object].mean())
                    run_token_loss += token.item() * len(y)
                    loss = loss + cfg.token_loss * token
                if regularization is not None:
                    reg = regularization()
                    run_reg_loss += reg.item() * len(y)
                    loss = loss + reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_([p for _, p in params], cfg.grad_clip)
                opt.step()
                sched.step()
                run_correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                step += 1
                step_logs = {"epoch": epoch, "loss": run_loss / seen, "acc": run_correct / seen,
                             "lr": opt.param_groups[0]["lr"]}
                for hook in hooks:
                    hook.on_step_end(step, model, step_logs)
            val_loss, val_acc = loss_and_accuracy(model, data.val_images, data.val_labels, prep, cfg.bf16)
            record = {"epoch": epoch, "train_loss": run_loss / seen, "train_acc": run_correct / seen,
                      **({"train_token_loss": run_token_loss / seen} if token_head is not None else {}),
                      **({"train_reg_loss": run_reg_loss / seen} if regularization is not None else {}),
                      **({"train_teacher_agreement": run_teacher_agree / seen,
                          "train_teacher_acc": run_teacher_correct / seen} if teacher is not None else {}),
                      "val_loss": val_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
                      "train_img_size": low_res or cfg.img_size,
                      "epoch_seconds": round(time.perf_counter() - t_epoch, 2),
                      "elapsed_seconds": round(time.perf_counter() - t_start, 2)}
            for hook in hooks:
                hook.on_epoch_end(epoch, model, record)
            history.append(record)
            _save_state(state_path, cfg, model, token_head, opt, sched, loader_gen, flip_gen, history, step,
                        time.perf_counter() - t_start, teacher_sha256)

    train_seconds = time.perf_counter() - t_start
    metrics: dict[str, Any] = {"val_accuracy": history[-1]["val_acc"]}
    variant = data.shapes_variant
    if variant is not None:
        metrics["test_accuracy"] = shapes_accuracy(model, variant, cfg.test_size, split="test")
        if variant == "spurious":
            for mode in ("aligned", "random", "none"):
                metrics[f"test_accuracy_marker_{mode}"] = shapes_accuracy(model, variant, cfg.test_size,
                                                                          split="test", marker=mode)
    else:
        metrics["test_accuracy"] = loss_and_accuracy(model, data.val_images, data.val_labels, prep, bf16=False)[1]
        metrics["test_split"] = "held-out fraction of the folder"
    wall = time.perf_counter() - t_start
    command = cfg.command or "xvit.training.train(TrainConfig(...))"
    training = {"command": command, "config": asdict(cfg), "data": data.info, "num_params": n_params,
                "train_seconds": round(train_seconds, 1), "wall_clock_seconds": round(wall, 1),
                "torch_version": torch.__version__, "threads": torch.get_num_threads(),
                "final_epoch": history[-1],
                **({"teacher": {"path": cfg.teacher, "sha256": teacher_sha256, "widths": list(teacher.widths),
                                "img_size": teacher.img_size, "val_accuracy": teacher_val_acc,
                                "distill": cfg.distill, "distill_weight": cfg.distill_weight,
                                "distill_temperature": cfg.distill_temperature,
                                **teacher_record(cfg.teacher)}} if teacher is not None else {})}
    save_checkpoint(model, out, preprocessing=prep, class_names=classes, training=training, metrics=metrics)
    summary = {"out": str(out), "num_params": n_params, "wall_clock_seconds": round(wall, 1), **metrics}
    for hook in hooks:
        hook.on_train_end(model, summary)
    return {**summary, "model": model.eval()}
