"""The relevance engine: re-plays a ViT op by op with a composite's rules and propagates back.

:func:`vit_graph` rebuilds the forward pass of any adapted ViT from its canonical parts (patch
embedding, blocks, head) with every op routed through the composite, so the rules of every LRP-style
method (Chefer's relprop, AttnLRP, CP-LRP) run through one graph. :func:`propagate` seeds the explained
logit with a one-hot vector and returns the relevance at the start point and at the attention
probabilities of the blocks asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.adapters.base import BlockParts, ViTAdapter
from xvit.relevance.composites import Composite
from xvit.targets import explained_classes


def _block(p: BlockParts, c: Composite, z: Tensor, attn_out: list[Tensor] | None,
           mix_out: list[tuple[Tensor, Tensor]] | None, fused: bool) -> Tensor:
    B, T, D = z.shape
    heads = p.num_heads
    head_dim = p.qkv_weight.shape[0] // 3 // heads
    skip, branch = c.clone(z)
    qkv = c.linear(c.norm(branch, p.norm1), p.qkv_weight, p.qkv_bias)
    q, k, v = qkv.reshape(B, T, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k, v = c.qkv(q, k, v)
    if p.spectrum is not None:
        # SVDA (analysis-methods.md §2.1): ℓ2 normalisers by the composite's ``unit`` rule, the spectrum a
        # linear diagonal scaling of the queries.
        sigma = p.spectrum[:, None, :].to(q.dtype)
        q, k = c.scale(c.unit(q), lambda t: t * sigma), c.unit(k)
    bias = None if p.logit_bias is None else p.logit_bias(B, T).to(q.dtype)
    if fused and attn_out is None and c.plain_attention:
        # Nothing reads this block's probabilities and the rules leave softmax(q kᵀ)v to plain autograd: the
        # fused kernel gives the same values and gradients without a (T, T) tensor.
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=p.scale)
    else:
        scores = c.scale(c.matmul(q, k.transpose(-2, -1)), lambda t: t * p.scale)
        if bias is not None:  # a constant term (WinfT window): relevance and gradients pass unchanged
            scores = scores + bias
        attn = c.softmax(scores, lambda t: t.softmax(-1))
        ctx = c.matmul(attn, v)
        if attn_out is not None:
            attn_out.append(attn)
            if mix_out is not None:
                mix_out.append((v, ctx))
    ctx = ctx.transpose(1, 2).reshape(B, T, heads * head_dim)
    o = c.linear(ctx, p.proj.weight, p.proj.bias)
    if p.ls1 is not None:
        o = c.scale(o, lambda t: t * p.ls1)
    u = c.add(skip, o)
    skip, branch = c.clone(u)
    h = c.linear(c.norm(branch, p.norm2), p.fc1.weight, p.fc1.bias)
    m = c.linear(c.act(h, p.act), p.fc2.weight, p.fc2.bias)
    if p.ls2 is not None:
        m = c.scale(m, lambda t: t * p.ls2)
    return c.add(skip, m)


def vit_graph(adapter: ViTAdapter, c: Composite, *, x: Tensor | None = None, z: Tensor | None = None,
              start: int = 0, stop: int | None = None, attn_out: list[Tensor] | None = None,
              attention_blocks: Collection[int] | None = None, mix_out: list[tuple[Tensor, Tensor]] | None = None,
              fused_attention: bool = False) -> Tensor:
    """Logits of the adapted ViT computed with composite ``c``'s rules.

    Starts from pixels ``x`` (then ``start`` must be 0) or from ``z``, the residual stream entering block
    ``start``. With ``stop``, returns the residual stream entering block ``stop`` instead of logits.
    Attention probabilities of the blocks run (of ``attention_blocks`` only, when given) are appended to
    ``attn_out``, and their values ``V`` and mixed values ``A·V`` (per head) to ``mix_out`` as pairs.
    ``fused_attention=True`` lets the blocks whose probabilities are not recorded use
    ``scaled_dot_product_attention`` where the composite's rules leave the attention core plain.
    """
    if x is not None:
        emb = adapter.embed_parts()
        proj = emb.proj
        p = c.conv(x, proj.weight, proj.bias, tuple(proj.stride))
        B, D, h, w = p.shape
        u, pos = emb.prefix_and_pos(p.flatten(2).transpose(1, 2), (h, w))
        z = c.add(u, pos)
        num_prefix = u.shape[1] - h * w
    else:
        num_prefix = adapter.layout_prefix()
    for i in range(start, len(adapter.blocks()) if stop is None else stop):
        recorded = attn_out is not None and (attention_blocks is None or i in attention_blocks)
        z = _block(adapter.block_parts(i), c, z, attn_out if recorded else None, mix_out, fused_attention)
    if stop is not None:
        return z
    head = adapter.head_parts()
    if head.norm is not None:
        z = c.norm(z, head.norm)
    if head.pool == "avg":
        pooled = [c.mean(z[:, num_prefix:])]
    elif head.pool == "token_distilled":
        pooled = [z[:, 0], z[:, 1]]
    else:
        pooled = [z[:, 0]]
    if head.fc_norm is not None:
        pooled = [c.norm(t, head.fc_norm) for t in pooled]
    logits = [c.linear(t, lin.weight, lin.bias) for t, lin in zip(pooled, head.heads)]
    if len(logits) == 1:
        return logits[0]
    return c.scale(c.add(logits[0], logits[1]), lambda t: t / 2)


@dataclass
class Propagation:
    """Result of :func:`propagate`. Relevances are per sample; ``targets`` are the explained classes."""

    logits: Tensor
    targets: Tensor
    start: Tensor | None
    attention: dict[int, Tensor] = field(default_factory=dict)
    attention_grads: dict[int, Tensor] = field(default_factory=dict)


def residual_stream(adapter: ViTAdapter, x: Tensor, block: int) -> Tensor:
    """The residual stream entering ``block`` (plain ops, no gradient)."""
    from xvit.relevance.composites import gradient

    with torch.no_grad():
        return vit_graph(adapter, gradient(), x=x, stop=block, fused_attention=True)


def propagate(adapter: ViTAdapter, composite: Composite, targets: Tensor | None, *, x: Tensor | None = None,
              z: Tensor | None = None, start: int = 0, attention_blocks: Iterable[int] = (),
              attention_gradients: bool = False, reduce: Callable[[Tensor, Tensor | None], Tensor] | None = None,
              start_relevance: bool = True) -> Propagation:
    """Relevance of the explained logits at the start point (pixels or block input) and at attention.

    The seed is the one-hot vector of each row's target (Chefer et al. 2021 start from relevance 1;
    in the gradient convention this is the gradient of ``y_c``). In the ``gradient`` convention the
    returned relevances are ``input * modified gradient``; in the ``relevance`` convention they are
    the propagated relevance itself. ``attention_gradients=True`` (relevance-convention composites) also
    returns ``∂y_c/∂A`` of the same blocks from a true-gradient backward pass over the same forward graph.

    With ``reduce``, ``attention[b]`` is ``reduce(R_A^(b), ∂y_c/∂A^(b) or None)``, computed as the relevance
    pass reaches block ``b``; each block's gradient is released there and no full relevance is kept.
    ``start_relevance=False`` skips the relevance at the start point (``start`` is then None), so the pass
    stops at the earliest attention asked for.
    """
    origin = (x if x is not None else z).detach().requires_grad_(True)
    attn: list[Tensor] = []
    mixes: list[tuple[Tensor, Tensor]] = []
    blocks = sorted(set(attention_blocks))
    if not start_relevance and not blocks:
        raise ValueError("propagate() with start_relevance=False needs attention_blocks.")
    with torch.enable_grad():
        kwargs = {"x": origin} if x is not None else {"z": origin, "start": start}
        logits = vit_graph(adapter, composite, attn_out=attn, attention_blocks=blocks,
                           mix_out=mixes if attention_gradients else None, fused_attention=True, **kwargs)
        targets = explained_classes(logits, targets)
        seed = torch.zeros_like(logits).scatter_(1, targets.view(-1, 1), 1.0)
        tensors = attn  # in block order, one per block of `blocks`
        pending: dict[int, tuple[Tensor, Tensor]] = {}
        if attention_gradients:
            if composite.mode is None:
                raise ValueError(f"Composite {composite.name!r} has no gradient mode.")
            composite.mode.gradient = True
            try:
                g = torch.autograd.grad(logits, [m for _, m in mixes], grad_outputs=seed, retain_graph=True)
            finally:
                composite.mode.gradient = False
            # ∂y/∂A = ∂y/∂(A·V) · Vᵀ per head: keep the (T, d) gradient and form the (T, T) one when used.
            pending = {b: (gm, v.detach()) for b, gm, (v, _) in zip(blocks, g, mixes)}

        def attention_grad(block: int) -> Tensor | None:
            if block not in pending:
                return None
            gm, v = pending.pop(block)
            return gm @ v.transpose(-2, -1)

        if reduce is None:
            attention_grads = {b: attention_grad(b) for b in blocks} if attention_gradients else {}
            grads = torch.autograd.grad(logits, [origin] + tensors, grad_outputs=seed)
            if composite.convention == "gradient":
                grads = [t.detach() * g for t, g in zip([origin] + tensors, grads)]
            return Propagation(logits=logits.detach(), targets=targets, start=grads[0],
                               attention=dict(zip(blocks, grads[1:])), attention_grads=attention_grads)
        attention: dict[int, Tensor] = {}

        def reduced(block: int, tensor: Tensor, grad: Tensor) -> Tensor:
            rel = tensor.detach() * grad if composite.convention == "gradient" else grad
            return reduce(rel, attention_grad(block))

        def hook(block: int, tensor: Tensor) -> Callable[[Tensor], None]:
            return lambda grad: attention.__setitem__(block, reduced(block, tensor, grad))

        # Later blocks are reduced from tensor hooks as the backward pass reaches them; the pass itself
        # differentiates only the earliest attention (and the start point when asked for).
        handles = [t.register_hook(hook(b, t)) for b, t in zip(blocks[1:], tensors[1:])]
        wrt = ([origin] if start_relevance else []) + tensors[:1]
        try:
            grads = torch.autograd.grad(logits, wrt, grad_outputs=seed, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wrt, grads)]
    for b, t in zip(blocks, tensors):
        if b not in attention:
            attention[b] = reduced(b, t, grads[-1] if b == blocks[0] else torch.zeros_like(t))
    start_rel = None
    if start_relevance:
        start_rel = origin.detach() * grads[0] if composite.convention == "gradient" else grads[0]
    return Propagation(logits=logits.detach(), targets=targets, start=start_rel,
                       attention={b: attention[b] for b in blocks})
