"""The pieces the training loops share (:func:`xvit.training.train` and
:func:`xvit.training.train_teacher`): AdamW with a linear warm-up and cosine schedule, the seeded shuffling
loader, random horizontal flips, and the resumable state file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from xvit.training.config import TrainConfigError

__all__ = ["STATE_FILE", "lr_factor", "adamw_with_schedule", "shuffled_loader", "random_hflip", "save_state",
           "load_state", "restore_run"]

STATE_FILE = "train_state.pt"
"""The resumable state of a run, written to its ``out`` directory after every epoch."""


def lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def adamw_with_schedule(decayed: list[nn.Parameter], other: list[nn.Parameter], *, lr: float, min_lr: float,
                        weight_decay: float, warmup_epochs: float, steps_per_epoch: int, epochs: int
                        ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with weight decay on ``decayed`` only, and a per-step schedule: linear warm-up over
    ``warmup_epochs`` (at least one step), then cosine decay from ``lr`` to ``min_lr`` at the last step."""
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=lr)
    total = steps_per_epoch * epochs
    warmup = max(1, round(warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, min_lr / lr))
    return opt, sched


def shuffled_loader(dataset: Dataset, batch_size: int, seed: int) -> tuple[DataLoader, torch.Generator]:
    """A loader of full batches in a seeded random order, and its generator (saved with the state of a run);
    :class:`~xvit.training.TrainConfigError` when the data holds less than one batch."""
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=gen)
    if len(loader) == 0:
        raise TrainConfigError(f"batch_size {batch_size} exceeds the {len(dataset)} training images.")
    return loader, gen


def random_hflip(x: Tensor, gen: torch.Generator, masks: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Each image of ``(B, C, H, W)`` flipped left-right with probability 1/2 (and its ``(B, H, W)`` mask with it)."""
    hflip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(hflip.view(-1, 1, 1, 1), x.flip(-1), x)
    if masks is not None:
        masks = torch.where(hflip.view(-1, 1, 1), masks.flip(-1), masks)
    return x, masks


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write a run's resumable ``state`` (tensors, numbers, strings, lists and dicts only, so that
    ``torch.load(weights_only=True)`` reads it back) to a temporary file and rename it, so an interruption while
    writing leaves the previous epoch's state intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The state in ``path`` (read with ``weights_only=True``), checked to come from a run with the same
    resumable ``config``; :class:`~xvit.training.TrainConfigError` otherwise."""
    state = torch.load(path, weights_only=True)
    if state["config"] != config:
        changed = sorted(k for k in set(state["config"]) | set(config)
                         if state["config"].get(k) != config.get(k))
        raise TrainConfigError(f"{path} was written by a run with another configuration (differs in "
                               f"{', '.join(changed)}); use another --out or drop --resume to start afresh.")
    return state


def restore_run(state: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                loader_gen: torch.Generator, flip_gen: torch.Generator) -> None:
    """Put a run back where ``state`` (from :func:`load_state`) left it: weights, optimiser, schedule, the loader's
    and flips' generators and the global random state."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    loader_gen.set_state(state["loader_generator"])
    flip_gen.set_state(state["flip_generator"])
    torch.set_rng_state(state["rng"])
