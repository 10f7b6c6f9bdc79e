"""Tracking SVDA's six indicators during training (analysis-methods.md §2.3): at step 0 and after every epoch on a
fixed probe batch of validation images, written as a long-format log with plots (``xvit train --track-indicators``).

The log ``indicators.csv`` has one row per ``(epoch, layer, head, indicator)`` with the value and the
``definition_version`` (epoch 0 is step 0, before any update; ``layer`` is the block index from 0; data indicators
are means over the probe images). ``indicators_curves.png`` shows each indicator per layer over the epochs (mean ±
std over heads) and ``indicators_heatmaps.png`` the layer × head values at the first, middle and last epoch.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from xvit.analysis.svda import DEFINITION_VERSION, SVDAIndicators
from xvit.data.preprocess import normalise
from xvit.training.callbacks import Callback
from xvit.training.config import TrainConfig

__all__ = ["IndicatorTracking", "read_tracking", "plot_tracking_curves", "plot_tracking_heatmaps", "LOG_FILE",
           "COLUMNS"]

LOG_FILE = "indicators.csv"
COLUMNS = ("epoch", "layer", "head", "indicator", "value", "definition_version")
_PER_HEAD = ("spectral_entropy", "effective_rank", "spectral_sparsity", "angular_alignment", "selectivity",
             "robustness_input", "robustness_spectrum")


class IndicatorTracking(Callback):
    """Computes the ``svda`` analysis on a fixed probe batch at step 0 and at every epoch's end, appends it to
    ``out/indicators.csv`` and draws the plots when training ends. A resumed run keeps the rows of the epochs
    already done. Each epoch's record (``log.jsonl``) gets ``indicators``: every indicator's mean over layers and
    heads.

    Args:
        out: the run folder.
        probe_size: validation images in the probe batch (§2.3: 512; fewer if the split is smaller), drawn once
            with ``seed``.
        seed: seed of the probe draw and of the indicators' noise.
    """

    def __init__(self, out: str | Path, probe_size: int = 512, seed: int = 0) -> None:
        if probe_size < 1:
            raise ValueError(f"probe_size must be positive; got {probe_size}.")
        self.path = Path(out) / LOG_FILE
        self.out = Path(out)
        self.probe_size, self.seed = probe_size, seed
        self.analysis = SVDAIndicators(seed=seed)
        self.probe: Tensor | None = None

    def on_train_start(self, model: nn.Module, config: TrainConfig, info: dict[str, Any]) -> None:
        images = info["val_images"]
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))[:self.probe_size]
        self.probe = normalise(images[pick.sort().values], config.preprocessing)
        first = info["first_epoch"]
        kept = [r for r in read_tracking(self.path) if int(r["epoch"]) < first] if first > 1 else []
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows([r[c] for c in COLUMNS] for r in kept)
        if first == 1:
            self._track(0, model)

    def on_epoch_end(self, epoch: int, model: nn.Module, logs: dict[str, Any]) -> None:
        logs["indicators"] = self._track(epoch, model)

    def on_train_end(self, model: nn.Module, summary: dict[str, Any]) -> None:
        rows = read_tracking(self.path)
        plot_tracking_curves(rows).savefig(self.out / "indicators_curves.png", dpi=110)
        plot_tracking_heatmaps(rows).savefig(self.out / "indicators_heatmaps.png", dpi=110)

    def _track(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Append the indicators of ``epoch`` to the log; returns each one's mean over layers and heads."""
        result = self.analysis(model, self.probe.to(next(model.parameters()).device))
        rows, means = [], {}
        for name in _PER_HEAD:
            if name not in result.tensors:
                continue
            values = result.tensors[name]
            values = values.mean(0) if values.ndim == 3 else values  # data indicators: mean over the probe
            means[name] = round(float(values.mean()), 6)
            for (layer, head), v in zip(torch.cartesian_prod(torch.arange(values.shape[0]),
                                                             torch.arange(values.shape[1])).tolist(),
                                        values.flatten().tolist()):
                rows.append((epoch, layer, head, name, f"{v:.6g}", DEFINITION_VERSION))
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerows(rows)
        return means


def read_tracking(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an ``indicators.csv`` (``epoch``, ``layer``, ``head`` as ints, ``value`` as a float); none if the
    file does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{**r, "epoch": int(r["epoch"]), "layer": int(r["layer"]), "head": int(r["head"]),
                 "value": float(r["value"])} for r in csv.DictReader(f)]


def _grid(rows: Sequence[dict[str, Any]], indicator: str) -> tuple[list[int], Tensor]:
    """Epochs and the ``(E, L, H)`` values of one indicator."""
    sel = [r for r in rows if r["indicator"] == indicator]
    epochs = sorted({r["epoch"] for r in sel})
    L = 1 + max(r["layer"] for r in sel)
    H = 1 + max(r["head"] for r in sel)
    grid = torch.full((len(epochs), L, H), math.nan)
    index = {e: i for i, e in enumerate(epochs)}
    for r in sel:
        grid[index[r["epoch"]], r["layer"], r["head"]] = r["value"]
    return epochs, grid


def _indicators(rows: Sequence[dict[str, Any]]) -> list[str]:
    present = {r["indicator"] for r in rows}
    return [n for n in _PER_HEAD if n in present]


def plot_tracking_curves(rows: Sequence[dict[str, Any]], title: str = "Indicators during training") -> Figure:
    """One panel per indicator: each layer's mean over heads against the epoch, with a ± std band."""
    names = _indicators(rows)
    if not names:
        raise ValueError("No indicator rows to plot.")
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.7 * nrows), layout="constrained")
    for n, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, n + 1)
        epochs, grid = _grid(rows, name)
        mean, std = grid.mean(-1).numpy(), grid.std(-1, unbiased=False).numpy()
        for layer in range(grid.shape[1]):
            ax.plot(epochs, mean[:, layer], label=f"block {layer}", lw=1.2)
            ax.fill_between(epochs, mean[:, layer] - std[:, layer], mean[:, layer] + std[:, layer], alpha=0.15)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if n == 0:
            ax.legend(fontsize=6, frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_tracking_heatmaps(rows: Sequence[dict[str, Any]], epochs: Sequence[int] | None = None) -> Figure:
    """Layer × head heat maps of every indicator (rows) at ``epochs`` (columns; default first, middle, last)."""
    names = _indicators(rows)
    if not names:
        raise ValueError("No indicator rows to plot.")
    all_epochs = sorted({r["epoch"] for r in rows})
    if epochs is None:
        epochs = sorted({all_epochs[0], all_epochs[len(all_epochs) // 2], all_epochs[-1]})
    fig = Figure(figsize=(2.4 * len(epochs) + 0.8, 1.9 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), len(epochs), squeeze=False)
    for i, name in enumerate(names):
        have, grid = _grid(rows, name)
        lo, hi = float(grid.nan_to_num(math.inf).min()), float(grid.nan_to_num(-math.inf).max())
        for j, epoch in enumerate(epochs):
            ax = axes[i][j]
            if epoch not in have:
                raise ValueError(f"Epoch {epoch} is not in the log; it has {have}.")
            im = ax.imshow(grid[have.index(epoch)].numpy(), vmin=lo, vmax=hi, cmap="viridis", aspect="auto")
            ax.set_title(f"{name.replace('_', ' ')}, epoch {epoch}", fontsize=7)
            ax.set_xlabel("head", fontsize=7)
            ax.set_ylabel("block", fontsize=7)
            ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=axes[i].tolist(), shrink=0.8)
    return fig
