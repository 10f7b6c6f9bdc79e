"""External attention guidance (Cui, Fan & Chen 2026, arXiv:2605.11392; analysis-methods.md §4, reading
``cui2026-g1``): steer the read-out token's attention to one region at a time and read which classes the model then
sees there, each with its explanation under the same guidance — several class explanations from one image."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from xvit.adapters.base import TokenLayout, UnsupportedModelError, ViTAdapter
from xvit.adapters.hf import HFViTAdapter
from xvit.adapters.timm import BuiltinViTAdapter, TimmViTAdapter
from xvit.analysis.base import Analysis, AnalysisResult, register_analysis
from xvit.data.sources.folders import read_mask
from xvit.methods.base import METHODS, Context, Method
from xvit.models.vit import Attention as BuiltinAttention
from xvit.params import Boxes, Interval, InvalidParameterError, Nullable, Options, Satisfies
from xvit.utils.maps import normalise_maps

HALVES = ((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0))
FLOOR = 1e-6  # coverage floor of the logit bias: a patch outside the region gets β·log(1e-6)


def _is_masks(m: Any) -> bool:
    if isinstance(m, Tensor):
        return m.ndim in (3, 4) and (m.is_floating_point() or m.dtype == torch.bool)
    return isinstance(m, (list, tuple)) and len(m) > 0 and all(isinstance(p, str) for p in m)


def _is_blocks(b: Any) -> bool:
    return isinstance(b, (list, tuple)) and len(b) > 0 and all(isinstance(i, int) and not isinstance(i, bool)
                                                               for i in b)


def region_coverage(x: Tensor, layout: TokenLayout, boxes: Sequence[Sequence[float]] | None = None,
                    masks: Tensor | Sequence[str] | None = None) -> Tensor:
    """Per-patch coverage ``(B, R, h, w)`` in [0, 1] of each region: boxes ``(x0, y0, x1, y1)`` as fractions of the
    image width and height (a pixel is inside when its centre is), or masks — an ``(R, H', W')`` / ``(B, R, H', W')``
    tensor in [0, 1] or mask image files (non-zero = inside) — resized to the image; each patch gets the mean of its
    pixels. Neither: the left and right halves."""
    B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    if masks is None:
        ys = (torch.arange(H, device=x.device, dtype=x.dtype) + 0.5) / H
        xs = (torch.arange(W, device=x.device, dtype=x.dtype) + 0.5) / W
        pixels = torch.stack([((ys[:, None] >= y0) & (ys[:, None] < y1) & (xs >= x0) & (xs < x1)).to(x.dtype)
                              for x0, y0, x1, y1 in (boxes or HALVES)])
    elif isinstance(masks, Tensor):
        pixels = masks.to(device=x.device, dtype=x.dtype)
    else:
        pixels = torch.stack([torch.from_numpy(read_mask(Path(p))).to(device=x.device, dtype=x.dtype) for p in masks])
    if pixels.ndim == 3:
        pixels = pixels.expand(B, *pixels.shape)
    if pixels.shape[0] != B:
        raise ValueError(f"masks hold regions for {pixels.shape[0]} images but the batch has {B}.")
    if tuple(pixels.shape[-2:]) != (H, W):
        pixels = F.interpolate(pixels, size=(H, W), mode="bilinear", align_corners=False)
    coverage = F.avg_pool2d(pixels.clamp(0, 1), kernel_size=layout.patch_size)
    empty = (coverage.flatten(2).amax(-1) <= 0).nonzero()
    if len(empty):
        b, r = empty[0].tolist()
        raise ValueError(f"Region {r} covers no patch of image {b}; every region must overlap the image.")
    return coverage


def _readout_rows(layout: TokenLayout) -> slice:
    if layout.pool == "token":
        return slice(0, 1)
    if layout.pool == "token_distilled":
        return slice(0, 2)
    return slice(layout.num_prefix, layout.num_tokens)


def guidance_bias(layout: TokenLayout, coverage: Tensor, mode: str, beta: float) -> Tensor:
    """Additive pre-softmax term ``(N, 1, T, T)`` for ``coverage`` ``(N, h, w)``: on the read-out rows (class token;
    class and distillation tokens; every patch row for average pooling) and the patch columns, ``β·log(max(m, 1e-6))``
    (``logit_bias``) or ``log m`` (``mask_renorm``: ``softmax(S + log m) = A ⊙ m`` renormalised, exactly); zero
    elsewhere, so ``m ≡ 1`` adds exactly 0."""
    m = coverage.flatten(1)
    term = beta * m.clamp(min=FLOOR).log() if mode == "logit_bias" else m.log()
    T, k = layout.num_tokens, layout.num_prefix
    bias = m.new_zeros(m.shape[0], 1, T, T)
    bias[:, 0, _readout_rows(layout), k:] = term[:, None, :]
    return bias


@contextlib.contextmanager
def guided_attention(adapter: ViTAdapter, bias: Tensor, blocks: Sequence[int]) -> Iterator[None]:
    """Inside the context, the attention logits of ``blocks`` get ``bias`` ``(N, 1, T, T)`` added before the softmax
    (for a batch of exactly N rows). Scoped to the model instance: timm attention gets the term as its ``attn_mask``,
    Hugging Face attention (transformers 5) as its ``attention_mask``, xvit's own attention runs a replacement
    forward set on the instance; all are removed on exit, also after an error. ``head_mask`` is per head, so it
    cannot express this."""

    def checked(rows: int) -> Tensor:
        if rows != bias.shape[0]:
            raise ValueError(f"The guided model ran a batch of {rows} rows, but the guidance holds {bias.shape[0]}; "
                             "guidance is per row (run the same rows it was built for).")
        return bias

    handles, replaced = [], []
    try:
        for i in blocks:
            if isinstance(adapter, TimmViTAdapter):
                handles.append(adapter.model.blocks[i].attn.register_forward_pre_hook(
                    _kwarg_term("x", "attn_mask", checked), with_kwargs=True))
            elif isinstance(adapter, HFViTAdapter):
                module = adapter.blocks()[i].attention
                if "attention_mask" not in inspect.signature(module.forward).parameters:
                    raise UnsupportedModelError("Attention guidance on Hugging Face models needs transformers 5 "
                                                "(an attention that takes an additive attention_mask).")
                handles.append(module.register_forward_pre_hook(
                    _kwarg_term("hidden_states", "attention_mask", checked), with_kwargs=True))
            elif isinstance(adapter, BuiltinViTAdapter) and "attn_mask" in inspect.signature(
                    adapter.model.blocks[i].attn.forward).parameters:  # SVDA, WinfT: take an additive attn_mask
                handles.append(adapter.model.blocks[i].attn.register_forward_pre_hook(
                    _kwarg_term("x", "attn_mask", checked), with_kwargs=True))
            elif isinstance(adapter, BuiltinViTAdapter):
                attn = adapter.model.blocks[i].attn
                if type(attn).forward is not BuiltinAttention.forward:
                    raise UnsupportedModelError(f"Attention guidance does not know {type(attn).__name__}.")
                attn.forward = _guided_builtin_forward(attn, checked)
                replaced.append(attn)
            else:
                raise UnsupportedModelError(f"Attention guidance is not implemented for {adapter.family} models.")
        yield
    finally:
        for h in handles:
            h.remove()
        for attn in replaced:
            del attn.forward


def guided_logits(adapter: ViTAdapter, layout: TokenLayout, x: Tensor, coverage: Tensor, mode: str, beta: float,
                  blocks: Sequence[int]) -> Tensor:
    """Logits ``(B, R, C)`` of each image of ``x`` with the read-out attention of ``blocks`` guided to each of its
    regions ``coverage`` ``(B, R, h, w)`` (one row per image and region, no gradient). The caller holds the model on
    its explicit attention path (as :class:`~xvit.analysis.base.Analysis` calls do)."""
    B, R = coverage.shape[:2]
    bias = guidance_bias(layout, coverage.flatten(0, 1), mode, beta)
    with torch.no_grad(), guided_attention(adapter, bias, blocks):
        return adapter.forward(x.repeat_interleave(R, 0)).view(B, R, -1)


def _kwarg_term(input_name: str, mask_name: str, checked: Callable[[int], Tensor]):
    """Forward pre-hook adding the guidance term to the attention's additive mask argument (second positional)."""

    def pre_hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs[input_name]
        term = checked(hidden.shape[0]).to(hidden.dtype)
        if len(args) > 1:
            current = args[1]
            args = (args[0], term if current is None else current + term, *args[2:])
        else:
            current = kwargs.get(mask_name)
            kwargs = {**kwargs, mask_name: term if current is None else current + term}
        return args, kwargs

    return pre_hook


def _guided_builtin_forward(attn: BuiltinAttention, checked: Callable[[int], Tensor]):
    """xvit's attention on the explicit path with the guidance term added to the logits."""

    def forward(x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        logits = (q * attn.scale) @ k.transpose(-2, -1) + checked(B).to(x.dtype)
        a = attn.attn_drop(logits.softmax(dim=-1))
        return attn.proj((a @ v).transpose(1, 2).reshape(B, N, C))

    return forward


@register_analysis("guide", citation="Cui, Fan & Chen, Transformer Interpretability from Perspective of Attention "
                   "and Gradient, arXiv:2605.11392 (2026): external attention guidance; reading cui2026-g1",
                   cost="R·F + R·k·(explanation)")
class ExternalAttentionGuidance(Analysis):
    """External attention guidance: per region, the guided top-k classes and each one's explanation under the same
    guidance — the multi-class view of one image.

    For each region ``r`` with per-patch coverage ``m`` the read-out row of every guided block gets
    ``S[0, K+j] += β·log(max(m_j, 1e-6))`` (``logit_bias``) or ``A[0, K+j] ← A·m_j`` renormalised (``mask_renorm``)
    before the model runs; ``m ≡ 1`` leaves the model unchanged.

    Tensors: ``coverage`` ``(B, R, h, w)``; ``unguided_logits`` ``(B, C)``; ``logits`` ``(B, R, C)`` under guidance;
    ``classes`` and ``probs`` ``(B, R, k)``; ``maps`` ``(B, R, k, h', w')`` raw explanations under guidance.

    Args:
        boxes: regions as ``(x0, y0, x1, y1)`` fractions of the image; None with ``masks`` None: left and right halves.
        masks: regions as mask image files (shared by all images) or an ``(R, H, W)`` / ``(B, R, H, W)`` tensor.
        beta: strength ``β`` of ``logit_bias`` (``mask_renorm`` uses ``m`` itself).
        blocks: guided block indices (negative count from the end); None: all.
        mode: "logit_bias" or "mask_renorm".
        top_k: classes read per region.
        method: explanation method (a registered token or pixel method with one pass per target).
        method_params: its parameters.
    """

    definition_version = "cui2026-g1"
    param_constraints = {
        "boxes": Nullable(Boxes()),
        "masks": Nullable(Satisfies(_is_masks, "a list of mask image paths or an (R, H, W) / (B, R, H, W) tensor")),
        "beta": Interval(0, None),
        "blocks": Nullable(Satisfies(_is_blocks, "a non-empty list of block indices")),
        "mode": Options(("logit_bias", "mask_renorm")),
        "top_k": Interval(1, None, integer=True),
        "method": Satisfies(lambda v: isinstance(v, str) and v in METHODS, "a registered method name"),
        "method_params": Nullable(Satisfies(lambda v: isinstance(v, dict), "a dict of the method's parameters")),
    }

    def __init__(self, *, boxes: Sequence[Sequence[float]] | None = None, masks: Any = None, beta: float = 1.0,
                 blocks: Sequence[int] | None = None, mode: str = "logit_bias", top_k: int = 5,
                 method: str = "gradient_corrected_attention", method_params: dict[str, Any] | None = None) -> None:
        super().__init__(boxes=boxes, masks=masks, beta=beta, blocks=blocks, mode=mode, top_k=top_k, method=method,
                         method_params=method_params)
        if boxes is not None and masks is not None:
            raise InvalidParameterError("guide takes regions as boxes or as masks, not both.")
        self.explainer_method: Method = METHODS.get(method)(**(method_params or {}))
        if not (self.explainer_method.class_specific and self.explainer_method.per_target_pass):
            raise InvalidParameterError(f"The 'method' parameter of guide must be a class-specific method with one "
                                        f"pass per target; {method!r} is not.")

    def _blocks(self, adapter: ViTAdapter) -> list[int]:
        depth = len(adapter.blocks())
        chosen = range(depth) if self.params["blocks"] is None else self.params["blocks"]
        bad = [b for b in chosen if not -depth <= b < depth]
        if bad:
            raise InvalidParameterError(f"The 'blocks' parameter of guide must hold block indices in [{-depth}, "
                                        f"{depth}) for this {depth}-block model. Got {bad[0]!r}.")
        return sorted({b % depth for b in chosen})

    def compute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        p = self.params
        blocks = self._blocks(ctx.adapter)
        self.explainer_method.validate(ctx)
        coverage = region_coverage(x, ctx.layout, p["boxes"], p["masks"])  # (B, R, h, w)
        B, R = coverage.shape[:2]
        k = min(p["top_k"], ctx.adapter.num_classes)
        rows = x.repeat_interleave(R, 0)
        bias = guidance_bias(ctx.layout, coverage.flatten(0, 1), p["mode"], p["beta"])
        with torch.no_grad():
            unguided = ctx.adapter.forward(x)
        logits = guided_logits(ctx.adapter, ctx.layout, x, coverage, p["mode"], p["beta"], blocks).flatten(0, 1)
        probs, classes = logits.softmax(-1).topk(k, dim=-1)
        with guided_attention(ctx.adapter, bias.repeat_interleave(k, 0), blocks):
            out = self.explainer_method.attribute(ctx, rows.repeat_interleave(k, 0), classes.reshape(-1))
        maps = out.raw.detach().reshape(B, R, k, *out.raw.shape[1:])
        regions = ([list(b) for b in p["boxes"] or HALVES] if p["masks"] is None
                   else [f"mask {r}" for r in range(R)])
        tensors = {"coverage": coverage, "unguided_logits": unguided, "logits": logits.reshape(B, R, -1),
                   "classes": classes.reshape(B, R, k), "probs": probs.reshape(B, R, k), "maps": maps}
        meta = {"regions": regions, "guided_blocks": blocks, "grid": list(ctx.layout.grid),
                "explanation": {"method": self.explainer_method.name, "params": self.explainer_method.get_params(),
                                "signed": bool(self.explainer_method.signed)}}
        return tensors, meta

    @classmethod
    def plot(cls, result: AnalysisResult) -> Figure:
        """First image: each region's coverage, then its guided top classes with their maps."""
        t = result.tensors
        R, k = t["classes"].shape[1:]
        shown = min(k, 3)
        fig = Figure(figsize=(1.9 * (shown + 1), 1.9 * R), layout="constrained")
        axes = fig.subplots(R, shown + 1, squeeze=False)
        for r in range(R):
            axes[r][0].imshow(t["coverage"][0, r].cpu().numpy(), vmin=0, vmax=1, cmap="gray")
            axes[r][0].set_title(f"region {r}", fontsize=8)
            for j in range(shown):
                m = t["maps"][0, r, j].float().cpu()
                axes[r][j + 1].imshow(normalise_maps(m).numpy(), cmap="inferno")
                axes[r][j + 1].set_title(f"class {int(t['classes'][0, r, j])}  p={float(t['probs'][0, r, j]):.2f}",
                                         fontsize=8)
        for ax in axes.flat:
            ax.axis("off")
        fig.suptitle(f"External attention guidance ({result.params['mode']}, β={result.params['beta']:g})", fontsize=9)
        return fig
