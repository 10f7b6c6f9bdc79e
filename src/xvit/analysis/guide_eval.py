"""Evaluation of external attention guidance (analysis ``guide``, reading cui2026-g1; analysis-methods.md §4) on
two-object images: with each object's region as the guidance region, is the guided top-1 that object's class? Arms
(mode, β, guided blocks, region construction) are read in chunks of images; each finished chunk is saved as JSON and
read back on a rerun, which computes only the arms it lacks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xvit.adapters import get_adapter
from xvit.analysis.guide import guided_logits, region_coverage
from xvit.analysis.rewrite_eval import write_json_atomic
from xvit.data.sources.base import EvalDataset
from xvit.models import preprocessing_for
from xvit.utils.context import eval_mode

REGIONS = ("mask", "patch", "patch+1", "not_other")
"""How an object's pixel mask becomes its region: ``mask`` = per-patch coverage fraction (the spec's reading);
``patch`` = every patch the object touches at 1; ``patch+1`` = those dilated by one patch (3×3); ``not_other`` =
everything except the other objects' ``patch+1`` regions (guidance away from the other object)."""


@dataclass(frozen=True)
class GuideArm:
    """One guidance setting: ``mode``, ``beta`` (``logit_bias`` only), guided ``blocks`` (None = all) and how the
    region is built from the object mask (:data:`REGIONS`)."""

    mode: str = "logit_bias"
    beta: float = 1.0
    blocks: tuple[int, ...] | None = None
    region: str = "mask"

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"region must be one of {list(REGIONS)}; got {self.region!r}.")
        if self.mode not in ("logit_bias", "mask_renorm"):
            raise ValueError(f"mode must be 'logit_bias' or 'mask_renorm'; got {self.mode!r}.")

    @property
    def key(self) -> str:
        """A stable name, e.g. ``logit_bias|beta=1|blocks=all|region=mask``."""
        beta = f"beta={self.beta:g}" if self.mode == "logit_bias" else "beta=-"
        blocks = "all" if self.blocks is None else ",".join(str(b) for b in self.blocks)
        return f"{self.mode}|{beta}|blocks={blocks}|region={self.region}"


def shape_regions(coverage: Tensor, region: str) -> Tensor:
    """Turn per-patch coverage ``(B, R, h, w)`` of object masks into guidance regions of kind ``region``."""
    if region == "mask":
        return coverage
    touched = (coverage > 0).to(coverage.dtype)
    if region == "patch":
        return touched
    dilated = F.max_pool2d(touched.flatten(0, 1)[:, None], 3, stride=1, padding=1)[:, 0].view_as(coverage)
    if region == "patch+1":
        return dilated
    R = coverage.shape[1]
    if R == 1:
        return torch.ones_like(coverage)
    return 1 - torch.stack([dilated[:, [j for j in range(R) if j != r]].amax(1) for r in range(R)], 1)


def guide_top1(model: nn.Module, x: Tensor, masks: Tensor, arms: Sequence[GuideArm]) -> dict[str, Any]:
    """Unguided top-2 and, per arm, the guided top-1 class and its probability of every image and region, for the
    normalised batch ``x`` and its object masks ``(B, R, H, W)``: ``{"unguided": {"classes", "probs"}  (B, 2),
    arm.key: {"classes", "probs"}  (B, R)}`` as nested lists."""
    adapter = get_adapter(model)
    layout = adapter.layout(x)
    depth = len(adapter.blocks())
    coverage = region_coverage(x, layout, masks=masks.to(x.dtype))
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(adapter.eager_attention())
        with torch.no_grad():
            probs, classes = adapter.forward(x).softmax(-1).topk(2, dim=-1)
        out["unguided"] = {"classes": classes.tolist(), "probs": probs.tolist()}
        for arm in arms:
            if arm.blocks is not None and not all(-depth <= b < depth for b in arm.blocks):
                raise ValueError(f"guided blocks {arm.blocks} do not all exist in this {depth}-block model.")
            blocks = list(range(depth)) if arm.blocks is None else sorted({b % depth for b in arm.blocks})
            logits = guided_logits(adapter, layout, x, shape_regions(coverage, arm.region), arm.mode, arm.beta, blocks)
            p, c = logits.softmax(-1).max(-1)
            out[arm.key] = {"classes": c.tolist(), "probs": p.tolist()}
    return out


def run_guide_eval(model: nn.Module, data: EvalDataset, out_dir: Path, arms: Sequence[GuideArm], *, chunk: int = 50,
                   reverse: bool = False, device: str | torch.device = "cpu",
                   log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """:func:`guide_top1` on every image of the two-object data set ``data``, in chunks of ``chunk`` images saved
    under ``out_dir``; a rerun reads finished chunks back and computes only the arms a chunk lacks. ``reverse``
    works from the last chunk, so a second run can share the folder with a first one. Returns the chunks in data
    order, each with ``labels`` ``(n, R)`` and the results per arm."""
    if not data.pair or not data.has_masks or data.labels is None:
        raise ValueError(f"guidance evaluation needs two-object data with masks and labels (e.g. "
                         f"xvit-shapes:pair:test:500); {data.spec!r} is not.")
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of images; got {chunk}.")
    prep = preprocessing_for(model)
    model = model.to(device)
    chunks = {}
    starts = range(0, len(data), chunk)
    for start in reversed(starts) if reverse else starts:
        size = min(chunk, len(data) - start)
        path = Path(out_dir) / f"images_{start:05d}_{start + size:05d}.json"
        saved = _read(path)
        missing = [a for a in arms if a.key not in saved.get("arms", {})]
        if missing or "unguided" not in saved:
            batch = data.load(range(start, start + size), prep)
            results = guide_top1(model, batch.x.to(device), batch.masks.to(device), missing)
            saved = {"ids": batch.ids, "labels": batch.labels.tolist(), "unguided": results.pop("unguided"),
                     "arms": {**saved.get("arms", {}), **results}}
            write_json_atomic(path, saved)
            log(f"guide images {start}-{start + size - 1}: {len(missing)} arm(s) done")
        chunks[start] = saved
    return [chunks[start] for start in starts]


def _read(path: Path) -> dict[str, Any]:
    """A saved chunk, or ``{}`` when it is missing or unreadable (then it is recomputed)."""
    try:
        saved = json.loads(path.read_text())
        return saved if isinstance(saved, dict) and isinstance(saved.get("arms"), dict) else {}
    except (OSError, ValueError):
        return {}


def summarise_guide(chunks: Sequence[dict[str, Any]], arms: Sequence[GuideArm]) -> list[dict[str, Any]]:
    """Shares over images and regions. Per arm: ``region_acc`` = share of (image, region) whose guided top-1 is
    that region's object class, ``both`` = share of images where it is for both regions, ``distinct`` = share of
    images whose regions get different top-1 classes, ``prob`` = mean guided top-1 probability, ``top_class`` and
    ``top_share`` = the most frequent guided top-1 class and its share of regions (a collapse). First row,
    ``unguided``: the unguided top-1 used for every region (it can name one object only), with ``both`` = share
    of images whose unguided top-2 are exactly the two classes."""
    labels = torch.tensor([row for c in chunks for row in c["labels"]])
    if labels.ndim != 2 or labels.shape[1] < 2:
        raise ValueError("summarise_guide needs two or more labelled regions per image.")
    n, R = labels.shape
    top2 = torch.tensor([row for c in chunks for row in c["unguided"]["classes"]])
    top1_prob = torch.tensor([row[0] for c in chunks for row in c["unguided"]["probs"]])
    named_both = (torch.sort(top2, 1).values == torch.sort(labels, 1).values).all(1) if R == 2 else None
    rows = [{"arm": "unguided", "n": n, "region_acc": (top2[:, :1] == labels).float().mean().item(),
             "both": None if named_both is None else named_both.float().mean().item(), "distinct": 0.0,
             "prob": top1_prob.mean().item(), **_most_common(top2[:, 0])}]
    for arm in arms:
        classes = torch.tensor([row for c in chunks for row in c["arms"][arm.key]["classes"]])
        probs = torch.tensor([row for c in chunks for row in c["arms"][arm.key]["probs"]])
        hit = classes == labels
        rows.append({"arm": arm.key, "mode": arm.mode, "beta": arm.beta if arm.mode == "logit_bias" else None,
                     "blocks": arm.blocks, "region": arm.region, "n": n, "region_acc": hit.float().mean().item(),
                     "both": hit.all(1).float().mean().item(),
                     "distinct": (classes != classes[:, :1]).any(1).float().mean().item(),
                     "prob": probs.mean().item(), **_most_common(classes)})
    return rows


def _most_common(classes: Tensor) -> dict[str, Any]:
    counts = torch.bincount(classes.flatten())
    return {"top_class": int(counts.argmax()), "top_share": (counts.max() / classes.numel()).item()}
