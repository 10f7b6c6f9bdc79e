"""Training callbacks: the hooks of :func:`xvit.training.train`, and the ones every run uses (progress bar,
console lines, ``log.jsonl``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from torch import nn

from xvit.training.config import TrainConfig
from xvit.utils.progress import Progress

__all__ = ["Callback", "ProgressBar", "ConsoleLog", "JsonlLog"]


class Callback:
    """Hooks the training loop calls, each a no-op here; override the ones you need.

    ``epoch`` counts from 1 (as ``log.jsonl`` does) and ``step`` is the number of optimiser steps taken.
    At ``on_epoch_end`` the model is in eval mode inside the loop's explicit-attention context, and
    ``logs`` is the epoch's record: a callback may add JSON-serialisable entries to it (e.g. a model
    analysis tracked over training), which ``log.jsonl`` and the checkpoint's ``final_epoch`` then hold.
    """

    def on_train_start(self, model: nn.Module, config: TrainConfig, info: dict[str, Any]) -> None:
        """Before the first epoch; ``info`` holds ``classes``, ``num_params``, ``steps_per_epoch``,
        ``first_epoch`` (above 1 when a run resumes), ``history`` (the records of the epochs already done) and
        ``val_images``/``val_labels`` (the uint8 validation split)."""

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        """Before the epoch's first step."""

    def on_step_end(self, step: int, model: nn.Module, logs: dict[str, Any]) -> None:
        """After an optimiser step; ``logs`` holds ``epoch``, ``loss`` and ``acc`` (means over the epoch so
        far) and ``lr``."""

    def on_epoch_end(self, epoch: int, model: nn.Module, logs: dict[str, Any]) -> None:
        """After the epoch's validation; see the class docstring."""

    def on_train_end(self, model: nn.Module, summary: dict[str, Any]) -> None:
        """After the checkpoint is written; ``summary`` is what :func:`xvit.training.train` returns, less the
        model."""


class ProgressBar(Callback):
    """Progress of each epoch on stderr with the running loss and accuracy: a bar on a terminal, otherwise a status
    line (steps, rate, ETA) at most every ``interval`` seconds and at least that often while a step runs
    (:class:`~xvit.utils.progress.Progress`)."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._bar: Progress | None = None
        self._epochs = self._steps = 0

    def on_train_start(self, model: nn.Module, config: TrainConfig, info: dict[str, Any]) -> None:
        self._epochs, self._steps = config.epochs, info["steps_per_epoch"]

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        self._bar = Progress(self._steps, desc=f"epoch {epoch}/{self._epochs}", unit="step", interval=self.interval,
                             leave=False)  # ConsoleLog prints each finished epoch

    def on_step_end(self, step: int, model: nn.Module, logs: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.set_postfix(f"loss {logs['loss']:.4f} acc {logs['acc']:.3f}")
            self._bar.update(1)

    def on_epoch_end(self, epoch: int, model: nn.Module, logs: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, model: nn.Module, summary: dict[str, Any]) -> None:
        if self._bar is not None:  # an epoch that ended early
            self._bar.close()
            self._bar = None


class ConsoleLog(Callback):
    """One line on stderr at the start, one per epoch, and the summary as JSON at the end."""

    def on_train_start(self, model: nn.Module, config: TrainConfig, info: dict[str, Any]) -> None:
        self._epochs = config.epochs
        print(f"xvit train: {config.data}, {len(info['classes'])} classes, {info['num_params']:,} parameters, "
              f"{config.epochs} epochs x {info['steps_per_epoch']} steps of {config.batch_size}", file=sys.stderr)

    def on_epoch_end(self, epoch: int, model: nn.Module, logs: dict[str, Any]) -> None:
        print(f"epoch {epoch}/{self._epochs}: train loss {logs['train_loss']:.4f} acc {logs['train_acc']:.4f} | "
              f"val loss {logs['val_loss']:.4f} acc {logs['val_acc']:.4f} | {logs['epoch_seconds']:.0f}s",
              file=sys.stderr)

    def on_train_end(self, model: nn.Module, summary: dict[str, Any]) -> None:
        print(json.dumps(summary), file=sys.stderr)


class JsonlLog(Callback):
    """Writes each epoch's record as one JSON line to ``path`` (rewritten when training starts: empty, or the
    records of the epochs a resumed run already has)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_start(self, model: nn.Module, config: TrainConfig, info: dict[str, Any]) -> None:
        self.path.write_text("".join(json.dumps(record) + "\n" for record in info.get("history", [])))

    def on_epoch_end(self, epoch: int, model: nn.Module, logs: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(logs) + "\n")
