"""Transition Attention Maps (XAI4Debugging workshop at NeurIPS 2021; XianrenYty/Transition_Attention_Maps
``transition_attention_maps``; attribution-methods.md §5.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from xvit.methods._feedback import integrated_last_gradient, read_out, readout_rows, resolve_start_layer
from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval, Nullable, Options


@register_method("tam", citation="Explaining Information Flow Inside Vision Transformers Using Markov Chain, "
                 "XAI4Debugging workshop at NeurIPS 2021 (Transition Attention Maps)",
                 passes="F + steps x (F+B)")
class TransitionAttentionMaps(Method):
    """Markov chain over the blocks: ``s = E_h[A^(L)][0]``, ``s ← s·E_h[A^(i)] + s`` for code index
    ``i = L−2, …, start_layer`` (self-loops, no normalisation), weighted by the integrated gradient
    ``W = E_h[(mean_k ∇A^(L)(α_k x))⁺][0]``: ``patch_map = (s ⊙ W)[K:]``.

    Args:
        start_layer: last code index applied by the chain (the same meaning as the reference's); None:
            ``⌊L/3⌋`` (4 at 12 blocks, the reference default). ``L − 1`` applies no transition.
        steps: integration steps, ``α_k ∈ linspace(0, 1, steps)``.
        with_integral: False takes ``W`` from the plain gradient at ``x`` (one forward+backward pass).
        internal_batch_size: scaled inputs per forward+backward pass (16 on a CPU, 64 elsewhere).
    """

    memory_factor = 2.0
    param_constraints = {"start_layer": Nullable(Interval(None, None, integer=True)),
                         "steps": Interval(1, None, integer=True), "with_integral": Options((True, False)),
                         "internal_batch_size": Nullable(Interval(1, None, integer=True))}

    def __init__(self, *, start_layer: int | None = None, steps: int = 20, with_integral: bool = True,
                 internal_batch_size: int | None = None) -> None:
        super().__init__(start_layer=start_layer, steps=steps, with_integral=with_integral,
                         internal_batch_size=internal_batch_size)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        p = self.params
        last = len(ctx.adapter.blocks()) - 1
        start = resolve_start_layer(self, ctx, 3)
        rows, weights = readout_rows(ctx.layout, x.device)
        chain = range(start, last)
        rec = ctx.record(x, targets, reduce=lambda a, _: a.mean(1), reduce_blocks=(*chain, last))
        state = rec.reduced[last][:, rows]
        for i in reversed(chain):
            state = state @ rec.reduced[i] + state
        if p["with_integral"]:
            grad = integrated_last_gradient(ctx, x, rec.targets, p["steps"], self.rows_per_pass(x), rows)
        else:
            grad = ctx.record(x, rec.targets, grads=True, reduce=lambda _a, g: g[:, :, rows],
                              reduce_blocks=(last,)).reduced[last]
        feedback = grad.clamp(min=0).mean(1)  # clamp before the head mean
        # Nominal passes per image: one forward, then steps forward+backward passes (one without the integral).
        steps = torch.full((x.shape[0],), p["steps"] if p["with_integral"] else 1)
        return Attribution(read_out(ctx.layout, weights, state * feedback), rec.logits, rec.targets,
                           {"n_forwards": torch.ones_like(steps), "n_forward_backward": steps})
