"""Model-parameter randomisation test, MPRT (evaluation.md §5).

Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, arXiv:1810.03292; Quantus
``quantus/metrics/randomisation/mprt.py`` and ``quantus/helpers/model/pytorch_model.py``
(``get_random_layer_generator``) for the per-module order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xvit.evaluate.base import (
    Metric,
    MetricResult,
    Plot,
    check_classes,
    check_images,
    check_maps,
    register_metric,
)
from xvit.evaluate.inputs import MetricInput, RunContext
from xvit.explainer import explain
from xvit.params import Interval, Options, Satisfies
from xvit.utils.maps import upsample_maps

__all__ = ["Randomization", "randomization_curve", "run_explain_fn", "spearman", "vit_randomization_units"]

Units = list[tuple[str, list[str]]]

_LINEAR_LIKE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
_TOKENS = ("pos_embed", "cls_token", "reg_token", "dist_token")


def vit_randomization_units(model: nn.Module) -> Units:
    """Top-down units of a timm-like ViT: ``head`` → final norm → blocks ``L…1`` → embedding.

    The embedding unit holds ``patch_embed`` and the token Parameters (``pos_embed``, ``cls_token``,
    ``reg_token``, ``dist_token``) that exist. Works for models exposing timm's attribute names
    (``head``, ``norm``/``fc_norm``, ``blocks``, ``patch_embed``), such as xvit's built-in ViT.

    Returns:
        ``[(unit name, [module or parameter paths]), …]`` ordered from output to input.
    """
    if not isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList)):
        raise ValueError(f"{type(model).__name__} has no timm-like 'blocks' list; pass "
                         "units=[(name, [paths]), ...] or units='module' to Randomization.")

    def has_params(path: str) -> bool:
        module = getattr(model, path, None)
        return isinstance(module, nn.Module) and any(True for _ in module.parameters())

    units: Units = [("head", ["head"])] if has_params("head") else []
    norms = [p for p in ("fc_norm", "norm") if has_params(p)]
    if norms:
        units.append(("norm", norms))
    units += [(f"blocks.{i}", [f"blocks.{i}"]) for i in reversed(range(len(model.blocks)))]
    embed = (["patch_embed"] if has_params("patch_embed") else []) + [
        t for t in _TOKENS if isinstance(getattr(model, t, None), nn.Parameter)]
    if embed:
        units.append(("embed", embed))
    return units


def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks per row, ties get their average rank (as ``scipy.stats.rankdata``)."""
    s = torch.sort(x, dim=1).values
    below = torch.searchsorted(s, x.contiguous(), right=False)
    upto = torch.searchsorted(s, x.contiguous(), right=True)
    return (below + upto + 1).double() / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Spearman correlation of ``(B, N)`` tensors (average ranks for ties); NaN for constant rows."""
    ra, rb = _average_ranks(a.float()), _average_ranks(b.float())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / ((ra * ra).sum(1) * (rb * rb).sum(1)).sqrt()


@torch.no_grad()
def _redraw_unit(model: nn.Module, paths: Sequence[str], generator: torch.Generator) -> None:
    """Re-initialise a unit: truncated normal (std 0.02) for Linear/Conv weights and other Parameters, zero
    biases, norms reset to (1, 0). Drawn on the CPU from ``generator`` so every device gets the same model."""

    def redraw(p: Tensor) -> None:
        p.copy_(nn.init.trunc_normal_(torch.empty(p.shape), std=0.02, generator=generator))

    for path in paths:
        try:
            target = model.get_submodule(path)
        except AttributeError:
            redraw(model.get_parameter(path))
            continue
        for module in target.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, (*_LINEAR_LIKE, *_NORMS)) and name == "bias":
                    p.zero_()
                elif isinstance(module, _NORMS) and name == "weight":
                    p.fill_(1.0)
                else:
                    redraw(p)


def _is_units(v: Any) -> bool:
    if (isinstance(v, str) and v in ("vit", "module")) or callable(v):
        return True
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(
        isinstance(u, (list, tuple)) and len(u) == 2 and isinstance(u[0], str)
        and isinstance(u[1], (list, tuple)) and all(isinstance(p, str) for p in u[1]) for u in v)


@register_metric("randomization", citation="Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018, "
                 "arXiv:1810.03292")
class Randomization(Metric):
    """Model-parameter randomisation test (Adebayo et al. 2018, arXiv:1810.03292; evaluation.md §5).

    Explains the trained model (``a_0``), then re-initialises one unit after another from the output towards
    the input on a deep copy (the caller's model is never touched) and explains again (``a_k``). ``cascading``
    keeps earlier units randomised; ``independent`` restores the trained weights before each unit. Similarity
    is the Spearman rank correlation of ``|a_0|`` and ``|a_k|`` (and of the signed maps). Lower similarity at
    the last step means the maps depend on the parameters, which is what a sound method shows.

    Units: ``"vit"`` (:func:`vit_randomization_units`; re-drawn with truncated normal std 0.02, zero biases,
    norms reset, seeded ``seed + k`` for unit ``k``), ``"module"`` (Quantus order: every module with
    ``reset_parameters()`` in reverse registration order, each reset after ``torch.manual_seed(seed + 1)``
    with the global RNG state restored afterwards), a callable ``model -> [(name, [paths])]``, or such a list.

    Args:
        explain_fn: ``explain_fn(model, x, targets) -> (B, H, W)`` maps; must be deterministic.
        units: see above.
        mode: ``"cascading"`` or ``"independent"``.
        seed: seed of the re-initialisation.

    ``compute()``: ``value`` = mean last-step similarity on ``|a|``; ``curves`` ``(N, K)`` that similarity per
    step (``curve_x`` = 1…K, names in ``summary["units"]``); ``per_image["curves_signed"]`` on signed maps.
    """

    higher_is_better = False
    unit = "Spearman ρ [-1, 1]"
    plots = (Plot("randomization", ("randomization",), "units randomised (output → input)",
                  "Spearman similarity of |map|"),)
    run_params = frozenset({"explain_fn"})
    param_constraints = {
        "explain_fn": Satisfies(callable, "a callable explain_fn(model, x, targets) -> maps (B, H, W)"),
        "units": Satisfies(_is_units, "'vit', 'module', a callable model -> [(name, [paths])] or such a list"),
        "mode": Options(("cascading", "independent")),
        "seed": Interval(0, None, integer=True),
    }

    def __init__(self, *, explain_fn: Callable[[nn.Module, Tensor, Tensor], Tensor], units: Any = "vit",
                 mode: str = "cascading", seed: int = 42) -> None:
        super().__init__(explain_fn=explain_fn, units=units, mode=mode, seed=seed)

    @classmethod
    def from_run(cls, context: RunContext, params: Mapping[str, Any]) -> Randomization:
        """The run's method as ``explain_fn`` (:func:`run_explain_fn`), seeded with the run's seed by default."""
        return cls(**{"seed": context.options["seed"], **params,
                      "explain_fn": run_explain_fn(context.method, context.method_params)})

    @classmethod
    def image_limit(cls, options: Mapping[str, Any]) -> int | None:
        """The test runs on the first ``randomization_images`` images of the run."""
        return options["randomization_images"]

    @classmethod
    def unsupported(cls, model: nn.Module, params: Mapping[str, Any]) -> str | None:
        if params.get("units", "vit") != "vit":
            return None
        try:
            vit_randomization_units(model)
        except ValueError as e:
            return str(e)
        return None

    def update_from(self, inp: MetricInput) -> None:
        """The test on the chunk's images and explained classes."""
        self.update(inp.model, inp.x, inp.targets)

    def passes_per_image(self, result: MetricResult) -> tuple[float, str]:
        """``a_0`` and one map per randomised unit, for every image: explanation calls."""
        return len(result.summary.get("units", [])) + 1, "explanations"

    def reset(self) -> None:
        super().reset()
        self._unit_names: list[str] | None = None
        self._explain_calls = 0

    def state_dict(self) -> dict[str, Any]:
        """The base state plus ``unit_names`` (``None`` before any update) and the ``explain_calls`` count."""
        return {**super().state_dict(), "unit_names": self._unit_names, "explain_calls": self._explain_calls}

    def merge_state(self, state: Mapping[str, Any]) -> None:
        """As :meth:`Metric.merge_state`; explanation calls add up and the first unit names seen are kept."""
        super().merge_state(state)
        self._explain_calls += state["explain_calls"]
        if self._unit_names is None:
            self._unit_names = state["unit_names"]

    def _steps(self, work: nn.Module) -> list[tuple[str, Callable[[], None]]]:
        if self.units == "module":
            def reset(m: nn.Module) -> Callable[[], None]:
                def run() -> None:
                    with torch.random.fork_rng():
                        torch.manual_seed(self.seed + 1)
                        m.reset_parameters()
                return run

            found = [(n or type(m).__name__, reset(m)) for n, m in work.named_modules()
                     if hasattr(m, "reset_parameters")]
            return found[::-1]
        units = vit_randomization_units(work) if self.units == "vit" else (
            self.units(work) if callable(self.units) else self.units)

        def redraw(k: int, paths: Sequence[str]) -> Callable[[], None]:
            return lambda: _redraw_unit(work, paths, torch.Generator().manual_seed(self.seed + k))

        return [(name, redraw(k, paths)) for k, (name, paths) in enumerate(units)]

    def update(self, model: nn.Module, x: Tensor, targets: Tensor) -> None:
        """Run the test on one batch.

        Args:
            model: the trained model (deep-copied, never modified).
            x: ``(B, C, H, W)`` normalised images.
            targets: ``(B,)`` classes to explain.
        """
        check_images(x)
        check_classes(targets, x.shape[0], "targets")
        a0 = self.explain_fn(model, x, targets).detach()
        check_maps(a0, tuple(x.shape), name="explain_fn output")
        work = copy.deepcopy(model)
        steps = self._steps(work)
        names = [name for name, _ in steps]
        if self._unit_names is not None and names != self._unit_names:
            raise ValueError(f"{self.name}: this batch's model has units {names}, earlier batches had "
                             f"{self._unit_names}; accumulate one model per metric.")
        self._unit_names = names
        trained = copy.deepcopy(work.state_dict()) if self.mode == "independent" else None
        sims, sims_signed = [], []
        for _, randomise in steps:
            if trained is not None:
                work.load_state_dict(trained)
            randomise()
            ak = self.explain_fn(work, x, targets).detach()
            sims.append(spearman(a0.abs().flatten(1), ak.abs().flatten(1)))
            sims_signed.append(spearman(a0.flatten(1), ak.flatten(1)))
        self._explain_calls += len(steps) + 1
        self._append(curves=torch.stack(sims, 1).float(), curves_signed=torch.stack(sims_signed, 1).float())

    def compute(self) -> MetricResult:
        curves = self._cat("curves").cpu()
        summary = {"units": list(self._unit_names), "explain_calls": self._explain_calls}
        return self._result(curves[:, -1], summary=summary, curves=curves,
                            curve_x=torch.arange(1, curves.shape[1] + 1), curve_labels=list(self._unit_names),
                            per_image={"curves_signed": self._cat("curves_signed").cpu()})


def run_explain_fn(method: str, params: Mapping[str, Any]) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """``explain_fn`` of the test in an evaluation run: the raw (signed) map of ``method`` upsampled to the input,
    as Spearman on ``|a|`` needs the sign-free magnitude of the raw relevance, not the min-max normalised map."""

    def explain_fn(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
        exp = explain(model, x, method, target=targets[:, None], **params)
        return upsample_maps(exp.raw[:, 0].float(), tuple(x.shape[-2:]))

    return explain_fn


def randomization_curve(model: nn.Module, x: Tensor, targets: Tensor, **params: Any) -> MetricResult:
    """Functional twin of :class:`Randomization` (one ``update`` and ``compute``)."""
    metric = Randomization(**params)
    metric.update(model, x, targets)
    return metric.compute()
