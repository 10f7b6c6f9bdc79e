"""Shared maths of Beyond Intuition (BT-H, BT-T) and Transition Attention Maps: the integrated gradient of the
last block's attention ("reasoning feedback"), the read-out rows it is needed at, and depth-scaled start layers.

Only the rows of the token-mixing matrix that the layout reads out are propagated and weighted: the class-token
row (``token``), the class and distillation rows (``token_distilled``), or every patch row (``avg``), so
``map = Σ_i s_i · (W ⊙ R)[i, K:]`` with the read-out weights ``s`` of :func:`xvit.methods._rollout.readout_vector`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xvit.adapters.base import TokenLayout
from xvit.methods._rollout import readout_vector
from xvit.methods.base import Context, Method, check_start_layer


def readout_rows(layout: TokenLayout, device: torch.device) -> tuple[Tensor, Tensor]:
    """Indices ``(r,)`` of the rows the layout reads out and their weights ``(r,)``."""
    s = readout_vector(layout, 1, torch.float32, device)[0, 0]
    rows = s.nonzero()[:, 0]
    return rows, s[rows]


def read_out(layout: TokenLayout, weights: Tensor, rows: Tensor) -> Tensor:
    """``(B, h, w)`` map ``Σ_i s_i · rows[:, i]`` from ``(B, r, T)`` propagated rows and read-out ``weights``."""
    return layout.tokens_to_grid(torch.einsum("r,brt->bt", weights.to(rows.dtype), rows))


def integrated_last_gradient(ctx: Context, x: Tensor, targets: Tensor, steps: int, batch_size: int,
                             rows: Tensor) -> Tensor:
    """``(1/steps) Σ_k ∇A^(L)(α_k x)`` at the read-out ``rows``, ``α_k ∈ linspace(0, 1, steps)`` (both ends; the
    input is scaled in normalised space), ``(B, heads, r, T)``. The ``steps × B`` scaled copies are stacked
    image-major and sent ``batch_size`` rows per pass: a forward that builds a graph for the last block only and a
    backward through it."""
    last = len(ctx.adapter.blocks()) - 1
    alphas = torch.linspace(0, 1, steps, dtype=torch.float64).to(x.dtype).to(x.device)
    scaled = (alphas.view(1, -1, 1, 1, 1) * x[:, None]).flatten(0, 1)
    repeated = targets.repeat_interleave(steps)
    grads = []
    for start in range(0, scaled.shape[0], batch_size):
        rec = ctx.record(scaled[start:start + batch_size], repeated[start:start + batch_size], grads=True,
                         reduce=lambda _a, g: g[:, :, rows], reduce_blocks=(last,), differentiate_from=last)
        grads.append(rec.reduced[last])
    grads = torch.cat(grads)
    return grads.view(x.shape[0], steps, *grads.shape[1:]).mean(1)


def resolve_start_layer(method: Method, ctx: Context, per_block: int) -> int:
    """The ``start_layer`` parameter as a block index; None gives ``⌊L / per_block⌋`` (the papers' value at 12
    blocks), and an explicit value outside the model's depth is an error naming the depth."""
    if method.params["start_layer"] is None:
        return len(ctx.adapter.blocks()) // per_block
    return check_start_layer(method, ctx)
