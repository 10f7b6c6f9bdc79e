"""Attention-propagation methods that need no gradient: raw attention, rollout, attention flow."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from xvit.methods._rollout import fuse_heads, rollout_factor, rollout_row
from xvit.methods.base import Attribution, Context, Method, check_start_layer, register_method
from xvit.params import Interval, Options

ABNAR = "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020, arXiv:2005.00928"


@register_method("raw_attention", citation="Baseline in Chefer, Gur & Wolf, Transformer Interpretability Beyond "
                 "Attention Visualization, CVPR 2021, arXiv:2012.09838", passes="F")
class RawAttention(Method):
    """Attention of the read-out token in one block, fused over heads: ``ρ(E_h[A^(layer)]⁺)``.

    Class-agnostic. Args: ``layer`` block index (default the last), ``head_fusion`` mean/max/min.
    """

    class_specific = False
    param_constraints = {"layer": Interval(None, None, integer=True),
                         "head_fusion": Options(("mean", "max", "min"))}

    def __init__(self, *, layer: int = -1, head_fusion: str = "mean") -> None:
        super().__init__(layer=layer, head_fusion=head_fusion)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        layer = check_start_layer(self, ctx, "layer")
        how = self.params["head_fusion"]
        rec = ctx.record(x, targets, reduce=lambda a, _: ctx.layout.readout(fuse_heads(a.clamp(min=0), how)),
                         reduce_blocks=(layer,))
        return Attribution(rec.reduced[layer], rec.logits, rec.targets)


@register_method("rollout", citation=ABNAR, passes="F")
class Rollout(Method):
    """Attention rollout ``J = Π_b M^(b)``, ``M^(b) = rownorm(fuse_h(A^(b)) + I)``, read out at the class
    token (Abnar & Zuidema 2020, Eq. 1). Class-agnostic.

    Args:
        head_fusion: "mean", "max" or "min" over heads.
        discard_ratio: share of the smallest fused weights set to 0 per block and image (vit-explain),
            the class token's self-attention excepted.
        start_layer: first block included (0-based). Chefer et al.'s tables use 1.
    """

    class_specific = False
    param_constraints = {"head_fusion": Options(("mean", "max", "min")),
                         "discard_ratio": Interval(0, 1, closed="left"),
                         "start_layer": Interval(None, None, integer=True)}

    def __init__(self, *, head_fusion: str = "mean", discard_ratio: float = 0.0, start_layer: int = 0) -> None:
        super().__init__(head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        start = check_start_layer(self, ctx)
        how, ratio = self.params["head_fusion"], self.params["discard_ratio"]
        depth = len(ctx.adapter.blocks())
        rec = ctx.record(x, targets, reduce=lambda a, _: rollout_factor(fuse_heads(a, how), ratio),
                         reduce_blocks=range(start, depth))
        return Attribution(rollout_row(ctx.layout, [rec.reduced[b] for b in range(start, depth)]), rec.logits,
                           rec.targets)


def _max_flows(capacity: list[np.ndarray], solver: str) -> np.ndarray:
    """Max-flow from the read-out token at the top to every input token of a layered graph.

    ``capacity[b][i, j]`` is the capacity of the edge from token i at layer b+1 to token j at layer b.
    """
    L = len(capacity)
    T = capacity[0].shape[0]
    n = (L + 1) * T
    node = lambda layer, tok: layer * T + tok  # noqa: E731
    rows, cols, caps = [], [], []
    for b, m in enumerate(capacity):
        i, j = np.nonzero(m)
        rows.append(node(b + 1, i))
        cols.append(node(b, j))
        caps.append(m[i, j])
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(caps)
    source = node(L, 0)
    flows = np.zeros(T)
    if solver == "networkx":
        import networkx as nx

        g = nx.DiGraph()
        g.add_weighted_edges_from(zip(r.tolist(), c.tolist(), w.tolist()), weight="capacity")
        for j in range(T):
            flows[j] = nx.maximum_flow_value(g, source, node(0, j), flow_func=nx.algorithms.flow.edmonds_karp)
        return flows
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    scale = 1e6
    graph = csr_matrix((np.round(w * scale).astype(np.int64), (r, c)), shape=(n, n))
    for j in range(T):
        flows[j] = maximum_flow(graph, source, node(0, j)).flow_value / scale
    return flows


@register_method("attention_flow", citation=ABNAR, passes="F + T max-flows")
class AttentionFlow(Method):
    """Attention flow: the maximum flow from the read-out token at the top layer to each input token in
    the layered graph whose edge capacities are the rollout factors ``M^(b)`` (Abnar & Zuidema 2020, §3),
    normalised to sum to 1. Class-agnostic and far slower than rollout: ``T`` max-flow problems per image.

    Args:
        start_layer: first block included.
        solver: "scaled_int" (scipy's integer max-flow on capacities scaled by 1e6, the fast default) or
            "networkx" (Edmonds-Karp on float capacities, the reference's solver).
    """

    class_specific = False
    param_constraints = {"start_layer": Interval(None, None, integer=True),
                         "solver": Options(("scaled_int", "networkx"))}

    def __init__(self, *, start_layer: int = 0, solver: str = "scaled_int") -> None:
        super().__init__(start_layer=start_layer, solver=solver)

    def validate(self, ctx: Context) -> None:
        module = "scipy" if self.params["solver"] == "scaled_int" else "networkx"
        try:
            __import__(module)
        except ImportError:
            raise ImportError(f"attention_flow with solver={self.params['solver']!r} needs {module}: "
                              f"pip install {module}") from None
        if ctx.layout.pool != "token":
            from xvit.params import InvalidParameterError

            raise InvalidParameterError("attention_flow needs a class-token read-out; this model pools "
                                        f"{ctx.layout.pool!r}.")

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        start = check_start_layer(self, ctx)
        depth = len(ctx.adapter.blocks())
        rec = ctx.record(x, targets, reduce=lambda a, _: rollout_factor(fuse_heads(a, "mean")),
                         reduce_blocks=range(start, depth))
        factors = [rec.reduced[b].double().cpu().numpy() for b in range(start, depth)]
        maps = []
        for i in range(x.shape[0]):
            flows = _max_flows([f[i] for f in factors], self.params["solver"])
            maps.append(flows / max(flows.sum(), 1e-12))
        tokens = torch.as_tensor(np.stack(maps), dtype=x.dtype, device=x.device)
        return Attribution(ctx.layout.tokens_to_grid(tokens), rec.logits, rec.targets)
