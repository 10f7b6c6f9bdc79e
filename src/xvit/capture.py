"""The one recording mechanism: attention probabilities, their gradients, token states and inputs.

:func:`record` runs the real model once with forward hooks on the adapter's attention modules (and on
any extra modules asked for), then, if gradients are wanted, one backward pass of
``sum_i y_{i, c_i}`` (pre-softmax logits; ViTs in eval mode do not mix samples, so every image gets its
own gradient). Gradients are taken with ``torch.autograd.grad`` of exactly the recorded tensors, so
attention and gradient are paired by identity, never by hook order, and no parameter gradients are
computed. Hooks are removed on exit, also on error.

Methods that need only a reduction of each block's attention (and of its gradient) pass ``reduce``: the
reduction is applied as soon as the attention (forward) or its gradient (backward) exists, and only its
result is kept, so no full ``(B, heads, T, T)`` tensor outlives its block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from xvit.adapters.base import ViTAdapter
from xvit.targets import explained_classes


@dataclass
class Recording:
    """What one :func:`record` call captured. Lists are indexed by block."""

    logits: Tensor
    targets: Tensor
    attentions: list[Tensor] = field(default_factory=list)
    attention_grads: list[Tensor] = field(default_factory=list)
    block_inputs: dict[int, Tensor] = field(default_factory=dict)
    block_input_grads: dict[int, Tensor] = field(default_factory=dict)
    outputs: dict[str, Tensor] = field(default_factory=dict)
    output_grads: dict[str, Tensor] = field(default_factory=dict)
    input_grad: Tensor | None = None
    reduced: dict[int, Tensor] = field(default_factory=dict)


def select_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """``y_{i, c_i}`` for every row: ``(B,)``."""
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def record(
    adapter: ViTAdapter,
    x: Tensor,
    targets: Tensor | None,
    *,
    attention: bool = False,
    grads: bool = False,
    input_grad: bool = False,
    block_inputs: tuple[int, ...] = (),
    modules: dict[str, nn.Module] | None = None,
    reduce: Callable[[Tensor, Tensor | None], Tensor] | None = None,
    reduce_blocks: Sequence[int] | None = None,
    objective: Callable[[Tensor, Tensor], Tensor] = select_logits,
    differentiate_from: int = 0,
) -> Recording:
    """Run the model on ``x`` and capture what is asked for.

    Args:
        adapter: the model's adapter (the caller has entered ``adapter.eager_attention()``).
        x: normalised input batch ``(B, 3, H, W)``.
        targets: ``(B,)`` classes to differentiate; ``None`` uses each row's arg-max.
        attention: record every block's attention probabilities ``(B, heads, T, T)``.
        grads: also record ``d y_c / d`` of everything recorded (attention, ``modules`` outputs, block inputs).
        input_grad: record ``d y_c / d x``.
        block_inputs: indices of blocks whose input (the residual stream) to record (detached in the result).
        modules: extra modules whose outputs to record, by name.
        reduce: ``reduce(A, ∂y_c/∂A)`` (with ``grads``) or ``reduce(A, None)`` for each block in ``reduce_blocks``
            (default all), kept in ``Recording.reduced`` by block; the full tensors are not kept.
        objective: ``objective(logits, targets)`` ``(B,)``, the quantity differentiated (default the logit ``y_c``;
            R-Cut differentiates the probability ``p_c``).
        differentiate_from: first block whose gradients are asked for; the blocks before it run without building
            a graph, so nothing is kept for a backward pass that never reaches them.
    """
    modules = modules or {}
    need_grad = grads or input_grad
    n_blocks = len(adapter.blocks())
    if differentiate_from:
        early = [i for i in block_inputs if i < differentiate_from]
        early += [i for i in (reduce_blocks or range(n_blocks)) if reduce and i < differentiate_from]
        if input_grad or (grads and (attention or modules)) or early or not 0 < differentiate_from < n_blocks:
            raise ValueError(f"record(differentiate_from={differentiate_from}) needs every differentiated tensor "
                             f"in blocks {differentiate_from}..{n_blocks - 1}.")
    store: dict[str, Tensor] = {}
    handles = []
    reduce_blocks = sorted(set(range(n_blocks) if reduce_blocks is None else reduce_blocks)) if reduce else []
    reduced: dict[int, Tensor] = {}

    def keep_reduced(index: int):
        def hook(_m, _inp, out):
            a = adapter.attention_from_output(out)
            if grads:
                store[f"reduce.{index}"] = a
            else:
                reduced[index] = reduce(a, None)
        return hook

    def keep(name: str, extract=None):
        def hook(_m, _inp, out):
            store[name] = extract(out) if extract is not None else out
        return hook

    def keep_input(index: int):
        def hook(_m, args):
            store[f"block_input.{index}"] = args[0] if grads else args[0].detach()
        return hook

    try:
        if attention:
            for i in range(len(adapter.blocks())):
                handles.append(adapter.attention_module(i).register_forward_hook(
                    keep(f"attn.{i}", adapter.attention_from_output)))
        for i in reduce_blocks:
            handles.append(adapter.attention_module(i).register_forward_hook(keep_reduced(i)))
        for name, module in modules.items():
            handles.append(module.register_forward_hook(keep(f"module.{name}")))
        for i in block_inputs:
            handles.append(adapter.blocks()[i].register_forward_pre_hook(keep_input(i)))
        if differentiate_from and need_grad:
            blocks = adapter.blocks()
            handles.append(blocks[0].register_forward_pre_hook(_stop_graph))
            handles.append(blocks[differentiate_from].register_forward_pre_hook(_start_graph, with_kwargs=True))
        with torch.set_grad_enabled(need_grad):
            # The input starts the graph, so a model whose parameters are frozen still has one.
            xin = x.detach().requires_grad_(True) if need_grad else x
            logits = adapter.forward(xin)
    finally:
        for h in handles:
            h.remove()

    targets = explained_classes(logits, targets)
    rec = Recording(logits=logits.detach(), targets=targets,
                    block_inputs={i: store[f"block_input.{i}"].detach() for i in block_inputs})
    missing = [i for i in range(n_blocks) if attention and f"attn.{i}" not in store]
    missing += [i for i in reduce_blocks if i not in reduced and f"reduce.{i}" not in store]
    if missing:
        raise RuntimeError(
            f"No attention probabilities were captured for blocks {sorted(set(missing))}: the model ran a fused "
            "attention kernel. Explain inside xvit.Explainer (which switches to the explicit path), "
            "or check that the adapter's attention_module() is called in the forward pass."
        )
    if attention:
        rec.attentions = [store[f"attn.{i}"] for i in range(n_blocks)]
    rec.outputs = {name: store[f"module.{name}"] for name in modules}
    if need_grad:
        # Reduced blocks: the earliest is differentiated, the later ones hand their gradient to ``reduce`` from a
        # tensor hook as the backward pass reaches them, so their gradients are never all held at once.
        first = [store.pop(f"reduce.{reduce_blocks[0]}")] if grads and reduce_blocks else []
        wrt: list[Tensor] = list(first)
        if grads:
            wrt += rec.attentions + list(rec.outputs.values()) + [store[f"block_input.{i}"] for i in block_inputs]
        if input_grad:
            wrt.append(xin)
        later = {i: store.pop(f"reduce.{i}") for i in reduce_blocks[1:]} if grads else {}
        grad_hooks = [a.register_hook(_reduce_hook(reduce, reduced, i, a)) for i, a in later.items()]
        try:
            with torch.enable_grad():
                g = torch.autograd.grad(objective(logits, targets).sum(), wrt, allow_unused=True)
        finally:
            for h in grad_hooks:
                h.remove()
        g = [torch.zeros_like(t) if gi is None else gi for t, gi in zip(wrt, g)]
        for i, a in later.items():  # a block the backward pass did not reach has a zero gradient
            if i not in reduced:
                reduced[i] = reduce(a.detach(), torch.zeros_like(a))
        if first:
            reduced[reduce_blocks[0]] = reduce(first[0].detach(), g[0])
            g = g[1:]
        if grads:
            n_att = len(rec.attentions)
            rec.attention_grads = g[:n_att]
            n_out = n_att + len(rec.outputs)
            rec.output_grads = dict(zip(rec.outputs, g[n_att:n_out]))
            rec.block_input_grads = dict(zip(block_inputs, g[n_out:n_out + len(block_inputs)]))
        if input_grad:
            rec.input_grad = g[-1]
    rec.reduced = {i: reduced[i] for i in reduce_blocks}
    rec.attentions = [a.detach() for a in rec.attentions]
    rec.outputs = {k: v.detach() for k, v in rec.outputs.items()}
    return rec


def _reduce_hook(reduce: Callable[[Tensor, Tensor | None], Tensor], out: dict[int, Tensor], index: int,
                 attention: Tensor) -> Callable[[Tensor], None]:
    def hook(grad: Tensor) -> None:
        out[index] = reduce(attention.detach(), grad)
    return hook


def _stop_graph(_module: nn.Module, _args: tuple) -> None:
    torch.set_grad_enabled(False)  # restored by record()'s set_grad_enabled context


def _start_graph(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Builds the graph again from the block's input (the residual stream, positional or ``hidden_states``)."""
    torch.set_grad_enabled(True)
    if args and isinstance(args[0], Tensor):
        args = (args[0].detach().requires_grad_(True), *args[1:])
    elif isinstance(kwargs.get("hidden_states"), Tensor):
        kwargs = {**kwargs, "hidden_states": kwargs["hidden_states"].detach().requires_grad_(True)}
    return args, kwargs
