"""Removing indiscriminative patches, inspired by Ma et al. (IEEE TNNLS 2023, arXiv:2203.05922; reading of
analysis-methods.md §1.4): drop the patches the interaction indicator ranks lowest as tokens, at the input or at block
``l0``, and compare accuracy against random removal and removal by raw class-token attention in the same run."""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from xvit.analysis.base import AnalysisResult, register_analysis
from xvit.analysis.interactions import CITATION, _indicator_params, _IndicatorAnalysis, grad_attention_interaction
from xvit.methods.base import Context
from xvit.params import Interval, Nullable, Options, Satisfies

__all__ = ["STRATEGIES", "importance", "removal_area", "PatchRemoval"]

STRATEGIES = ("indicator", "random", "cls_attention")
DEFAULT_KEEP = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def importance(ind: Tensor, block: int | None) -> Tensor:
    """``s_j = Σ_i Ĩ^l(i←j)`` at block ``l`` (``None``: averaged over blocks): ``(B, N)``."""
    s = ind.sum(-2)  # (B, L, N)
    return s.mean(1) if block is None else s[:, block]


def removal_area(keep: Tensor, accuracy: Tensor) -> Tensor:
    """Area under accuracy vs keep ratio (trapezoid over the ratios, normalised by their span): ``(..., )``."""
    order = keep.argsort()
    k, a = keep[order].double(), accuracy[..., order].double()
    span = (k[-1] - k[0]).clamp(min=1e-12)
    return (torch.trapezoid(a, k, dim=-1) / span).float() if len(k) > 1 else a[..., 0].float()


def _keep_ratios(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and all(
        isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 1 for r in v))


@register_analysis("patch_removal", citation=CITATION, cost="one indicator + 3·K token-removal forward passes "
                   "(K keep ratios)")
class PatchRemoval(_IndicatorAnalysis):
    """Top-1 accuracy when only the highest-ranked ``keep`` fraction of patch tokens is kept (analysis-methods.md
    §1.4), for three rankings in the same run: ``indicator`` (``Σ_i Ĩ^l(i←j)`` at ``block``, or over all blocks;
    ``importance='cls'``: the class-specific read-out row of ``grad_attention``), ``random`` (seeded) and
    ``cls_attention`` (the head-mean read-out row of the raw attention of the last block). Tokens are removed after
    the position embedding (``at_block=0``) or at the input of block ``at_block``, by the adapter's token removal.

    Accuracy is against ``targets`` (labels); without them against the unmasked prediction (agreement).
    Tensors: ``keep`` ``(K,)``; ``kept`` ``(K,)`` patch counts; ``correct`` ``(B, 3, K)``; ``accuracy`` ``(3, K)``;
    ``area`` ``(3,)`` (area under accuracy vs keep ratio, normalised); ``labels`` ``(B,)``.
    """

    definition_version = "ma2022-r1"
    param_constraints = {**_indicator_params(), "keep": Satisfies(_keep_ratios, "a non-empty list of ratios in (0, 1]"),
                         "at_block": Interval(0, None, integer=True), "block": Nullable(Interval(integer=True)),
                         "importance": Options(("sum", "cls")), "random_seed": Interval(0, None, integer=True)}

    def __init__(self, *, method: str = "grad_attention", probes: int = 8, exact: bool = False, seed: int = 0,
                 chunk: int = 1024, keep: list[float] = list(DEFAULT_KEEP), at_block: int = 0,  # noqa: B006
                 block: int | None = None, importance: str = "sum", random_seed: int = 0) -> None:
        super().__init__(method=method, probes=probes, exact=exact, seed=seed, chunk=chunk, keep=list(keep),
                         at_block=at_block, block=block, importance=importance, random_seed=random_seed)

    def scores(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor]:
        """Ranking scores ``(B, 3, N)`` (higher = kept longer) and the classes the accuracy is measured against."""
        p, layout = self.params, ctx.layout
        n_blocks = len(ctx.adapter.blocks())
        if p["block"] is not None and not -n_blocks <= p["block"] < n_blocks:
            raise ValueError(f"block must index one of the {n_blocks} blocks; got {p['block']}.")
        with torch.no_grad():
            rec = ctx.record(x, None, attention=True)
        labels = rec.logits.argmax(1) if targets is None else targets.to(rec.logits.device)
        if p["importance"] == "cls":
            raw, _ = grad_attention_interaction(ctx, x, labels, patches_only=False)
            blocks = raw if p["block"] is None else raw[:, p["block"]:p["block"] + 1 or None]
            ours = layout.readout(blocks).mean(1).flatten(1)
        else:
            ind, _ = self.indicator(ctx, x, labels)
            ours = importance(ind, p["block"])
        gen = torch.Generator().manual_seed(p["random_seed"])
        rand = torch.rand(layout.num_patches, generator=gen).to(ours.device).expand_as(ours)
        cls_attn = layout.readout(rec.attentions[-1].mean(1)).flatten(1)
        return torch.stack([ours.float(), rand.float(), cls_attn.float()], 1), labels

    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        p, adapter = self.params, ctx.adapter
        adapter.check_block_index(p["at_block"])
        scores, labels = self.scores(ctx, x, targets)
        B, S, N = scores.shape
        keep = torch.tensor(sorted(set(p["keep"]), reverse=True), dtype=torch.float32)
        kept = (keep * N).round().clamp(min=1).long()
        order = torch.argsort(scores, dim=-1, descending=True, stable=True)  # (B, S, N)
        with torch.no_grad():
            tokens = adapter.block_input(x, p["at_block"])  # (B, T, D)
            rows = tokens[:, None].expand(B, S, *tokens.shape[1:]).reshape(B * S, *tokens.shape[1:])
            correct = []
            for k in kept.tolist():
                index = order[..., :k].sort(-1).values.reshape(B * S, k)
                logits = adapter.forward_selected(rows, index, ctx.layout.num_prefix, p["at_block"])
                correct.append((logits.argmax(1).view(B, S) == labels[:, None]).float())
        correct_t = torch.stack(correct, -1)  # (B, S, K)
        accuracy = correct_t.mean(0)
        return ({"keep": keep, "kept": kept, "correct": correct_t, "accuracy": accuracy,
                 "area": removal_area(keep, accuracy), "labels": labels},
                {"strategies": list(STRATEGIES), "images": B, "labelled": targets is not None})

    @classmethod
    def merge(cls, results: list[AnalysisResult]) -> AnalysisResult:
        """One result for several batches of a data set: per-image rows concatenated, accuracy over all images."""
        first = results[0]
        correct = torch.cat([r.tensors["correct"] for r in results])
        accuracy = correct.mean(0)
        t = {"keep": first.tensors["keep"], "kept": first.tensors["kept"], "correct": correct,
             "accuracy": accuracy, "area": removal_area(first.tensors["keep"], accuracy),
             "labels": torch.cat([r.tensors["labels"] for r in results])}
        return AnalysisResult(first.name, t, first.params, {**first.meta, "images": correct.shape[0]})

    @classmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        t = result.tensors
        fig = Figure(figsize=(4.6, 3.3), layout="constrained")
        ax = fig.add_subplot()
        labels = {"indicator": f"indicator ({result.params['method']})", "random": "random",
                  "cls_attention": "raw CLS attention"}
        for s, name in enumerate(result.meta["strategies"]):
            ax.plot(t["keep"].numpy(), t["accuracy"][s].numpy(), marker="o", ms=3,
                    label=f"{labels[name]} (area {float(t['area'][s]):.3f})")
        ax.set_xlabel("keep ratio (fraction of patch tokens kept)")
        ax.set_ylabel("top-1 accuracy" if result.meta.get("labelled") else "agreement with unmasked prediction")
        ax.set_ylim(-0.02, 1.02)
        ax.invert_xaxis()
        ax.legend(fontsize=7, frameon=False)
        ax.set_title(f"Patch removal at block {result.params['at_block']} ({result.meta['images']} images)",
                     fontsize=9)
        return fig

