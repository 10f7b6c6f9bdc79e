"""Deletion / insertion curves (RISE protocol, evaluation.md §2).

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018,
arXiv:1806.07421; reference eclique/RISE ``evaluation.py`` (``CausalMetric``, ``auc``, ``gkern``). The ``tis``
preset follows aenglebert/Transformer_Input_Sampling ``metrics/deletion.py``, ``metrics/insertion.py``,
``metrics/utils.py`` (Englebert et al., "Transformer Input Sampling", arXiv:2304.00621).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from xvit.evaluate.base import (
    CHANNEL_MEAN,
    CHANNEL_STD,
    Column,
    Metric,
    MetricResult,
    Plot,
    check_classes,
    check_images,
    check_maps,
    param_error,
    register_metric,
)
from xvit.evaluate.inputs import MetricInput, RunContext
from xvit.params import Interval, Nullable, Options
from xvit.perturb import Black, Blur, MeanColour, RankMasks, Substrate, score

__all__ = ["DeletionInsertion", "deletion_insertion"]

# Substrate per (preset, mode) and whether the unperturbed start state (k = 0) is scored.
_PRESETS = {
    "rise": {"deletion": "mean", "insertion": "blur", "first_state": 0},
    "tis": {"deletion": "blur", "insertion": "blur", "first_state": 1},
}


@register_metric("deletion_insertion", citation="Petsiuk et al., RISE: Randomized Input Sampling for Explanation "
                 "of Black-box Models, BMVC 2018, arXiv:1806.07421")
class DeletionInsertion(Metric):
    """Deletion or insertion curve and its AUC (Petsiuk et al. 2018, arXiv:1806.07421; evaluation.md §2).

    Pixels are ranked by the map (stable, descending). With ``s`` pixels per step and ``n = ⌈HW/s⌉`` steps,
    state ``k`` replaces the first ``min(k·s, HW)`` ranked pixels (all channels) by the substrate (deletion)
    or copies them from ``x`` into the substrate (insertion), and scores the softmax probability of the
    explained class. ``AUC = trapz(scores, k/n)``, i.e. ``(Σ s_k − (s_first + s_last)/2) / n``; the mean over
    images equals the AUC of the mean curve. Deletion: lower is better; insertion: higher.

    Presets: ``"rise"`` (deletion substrate ``"mean"``, insertion ``"blur"`` = RISE's folded 11×11 Gaussian,
    σ = 5, zero padding; states ``k = 0..n``, ``s = 224``); ``"tis"`` (``"blur"`` = torchvision's truncated
    11×11 Gaussian, σ = 5, reflect padding, for both; states ``k = 1..n``, ``s = ⌈HW/224⌉``).
    Substrates: ``"blur"``, ``"mean"`` (0 in normalised space, RISE's ``torch.zeros_like``)
    and ``"black"`` (0 in ``[0, 1]`` space, needs ``mean``/``std``).

    Cost: ``N·(n + 1)`` (``rise``) or ``N·n`` (``tis``) forward passes, 225 per image at 224×224 by default;
    raise ``pixels_per_step`` or lower ``steps`` to trade resolution for time (RISE's batched run used
    ``s = 224·8``).

    Args:
        mode: ``"deletion"`` or ``"insertion"``.
        preset: ``"rise"`` or ``"tis"``.
        substrate: ``None`` (preset default), ``"blur"``, ``"mean"`` or ``"black"``.
        pixels_per_step: pixels changed per step; ``None`` for the preset default.
        steps: number of steps ``n`` instead (``s = ⌈HW/n⌉``); at most one of the two.
        mean: per-channel normalisation mean, needed by ``"black"``.
        std: per-channel normalisation std, needed by ``"black"``.
        batch_size: perturbed images per forward pass.

    ``compute()``: ``value`` = ``scores.mean()`` = mean AUC; ``curves`` ``(N, S)`` probabilities at
    ``curve_x = k/n``.
    """

    higher_is_better = None  # set per mode
    columns = (Column("deletion", {"mode": "deletion"}, higher_is_better=False, unit="AUC [0-1]"),
               Column("insertion", {"mode": "insertion"}, higher_is_better=True, unit="AUC [0-1]"))
    plots = (Plot("deletion_insertion", ("deletion", "insertion"), "fraction of pixels changed",
                  "probability of the class"),)
    param_constraints = {
        "mode": Options(("deletion", "insertion")),
        "preset": Options(("rise", "tis")),
        "substrate": Nullable(Options(("blur", "mean", "black"))),
        "pixels_per_step": Nullable(Interval(1, None, integer=True)),
        "steps": Nullable(Interval(1, None, integer=True)),
        "mean": Nullable(CHANNEL_MEAN),
        "std": Nullable(CHANNEL_STD),
        "batch_size": Interval(1, None, integer=True),
    }

    def __init__(self, *, mode: str = "deletion", preset: str = "rise", substrate: str | None = None,
                 pixels_per_step: int | None = None, steps: int | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 batch_size: int = 64) -> None:
        super().__init__(mode=mode, preset=preset, substrate=substrate, pixels_per_step=pixels_per_step,
                         steps=steps, mean=mean, std=std, batch_size=batch_size)
        if pixels_per_step is not None and steps is not None:
            raise param_error(self.name, "steps", "cannot be set together with 'pixels_per_step'. Give one.")
        self._substrate = substrate or _PRESETS[preset][mode]
        if self._substrate == "black" and (mean is None or std is None):
            raise param_error(self.name, "mean", "and 'std' are needed by substrate='black'. Pass the "
                              "checkpoint's normalisation.")

    @classmethod
    def from_run(cls, context: RunContext, params: Mapping[str, Any]) -> DeletionInsertion:
        """The run's normalisation and forward batch size; its ``deletion_insertion_steps`` unless the user gives
        ``steps`` or ``pixels_per_step``."""
        params = {"batch_size": context.forward_rows(), "mean": context.mean, "std": context.std,
                  **params}
        steps = context.options["deletion_insertion_steps"]
        if steps is not None and "pixels_per_step" not in params and "steps" not in params:
            params["steps"] = steps
        return cls(**params)

    def update_from(self, inp: MetricInput) -> None:
        """The run's maps and explained classes."""
        self.update(inp.model, inp.x, inp.maps, inp.targets)

    def reset(self) -> None:
        super().reset()
        self._curve_x: Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """The base state plus ``curve_x``, the x-axis of the curves (``None`` before any update)."""
        return {**super().state_dict(), "curve_x": self._curve_x}

    def merge_state(self, state: Mapping[str, Any]) -> None:
        """As :meth:`Metric.merge_state`; the first ``curve_x`` seen is kept."""
        super().merge_state(state)
        if self._curve_x is None:
            self._curve_x = state["curve_x"]

    def _counts(self, hw: int) -> tuple[Tensor, Tensor]:
        if self.pixels_per_step is not None:
            s = self.pixels_per_step
        elif self.steps is not None:
            s = math.ceil(hw / self.steps)
        else:
            s = 224 if self.preset == "rise" else math.ceil(hw / 224)
        n = math.ceil(hw / s)
        ks = torch.arange(_PRESETS[self.preset]["first_state"], n + 1)
        return (ks * s).clamp(max=hw), ks / n

    def forward_passes_per_image(self, height: int, width: int) -> int:
        """Model forward passes per image: the number of scored states for ``height × width`` images."""
        return self._counts(height * width)[0].numel()

    def _substrate_of(self, x: Tensor) -> Substrate:
        if self._substrate == "blur" and self.preset == "tis":
            if min(x.shape[2:]) <= 5:
                raise ValueError(f"The tis blur pads by reflection and needs images larger than 5 px; got "
                                 f"{tuple(x.shape[2:])}. Use substrate='mean' or preset='rise'.")
            return Blur(11, 5.0, kernel="truncated", padding="reflect")
        if self._substrate == "blur":
            return Blur(11, 5.0, kernel="folded", padding="zeros")
        if self._substrate == "mean":
            return MeanColour()
        return Black(self.mean, self.std)

    def update(self, model: Any, x: Tensor, maps: Tensor, targets: Tensor) -> None:
        """Score one batch along the deletion or insertion path.

        Args:
            model: callable mapping ``(B, C, H, W)`` normalised images to logits ``(B, classes)``.
            x: ``(B, C, H, W)`` normalised images.
            maps: ``(B, H, W)`` maps at input resolution.
            targets: ``(B,)`` explained classes (RISE uses the clean top-1 class, the same when explaining
                the prediction).
        """
        check_images(x)
        check_maps(maps, tuple(x.shape))
        check_classes(targets, x.shape[0], "targets")
        counts, curve_x = self._counts(x.shape[2] * x.shape[3])
        if self._curve_x is not None and not torch.equal(curve_x, self._curve_x):
            raise ValueError(f"{self.name}: this batch has {curve_x.numel()} states but earlier batches had "
                             f"{self._curve_x.numel()}; accumulate images of one size, or fix 'steps'.")
        self._curve_x = curve_x
        # State k hides the k·s top-ranked pixels (deletion) or shows only them (insertion).
        states = RankMasks.from_scores(maps.to(x.device), counts, reveal=self.mode == "insertion")
        probs = score(model, x, states, targets[:, None], substrate=self._substrate_of(x), readout="softmax",
                      batch_size=self.batch_size)[..., 0]
        self._forward_passes += probs.numel()
        self._append(probs=probs)

    def compute(self) -> MetricResult:
        curves = self._cat("probs").cpu()
        scores = torch.trapezoid(curves, self._curve_x.to(curves.dtype), dim=1)
        return self._result(scores, higher_is_better=self.mode == "insertion",
                            summary={"auc": float(scores.mean()), "substrate": self._substrate},
                            curves=curves, curve_x=self._curve_x)


def deletion_insertion(model: Any, x: Tensor, maps: Tensor, targets: Tensor, **params: Any) -> MetricResult:
    """Functional twin of :class:`DeletionInsertion` (one ``update`` and ``compute``)."""
    metric = DeletionInsertion(**params)
    metric.update(model, x, maps, targets)
    return metric.compute()
