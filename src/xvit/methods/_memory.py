"""Memory budget of one explainer call: available memory and a per-row estimate of a forward+backward pass.

The explainer splits a batch into chunks of at most ``budget // per_row`` rows. The per-row estimate of a plain
forward+backward pass counts what autograd keeps per block of a pre-norm ViT (Korthikanti et al., Reducing
Activation Recomputation in Large Transformer Models, 2022, §4.1, without dropout masks): about ``16·T·D``
activations and two ``heads·T²`` attention tensors; a method scales it by its ``memory_factor``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xvit.adapters.base import TokenLayout, UnsupportedModelError, ViTAdapter

DEFAULT_MEMORY_FRACTION = 0.5  # of the memory available when the explainer is called


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: CUDA's free memory, or ``MemAvailable`` of ``/proc/meminfo``; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def forward_backward_bytes(adapter: ViTAdapter, layout: TokenLayout, x: Tensor) -> int | None:
    """Estimated peak bytes of one row's forward+backward pass (None for models without canonical blocks)."""
    try:
        parts = adapter.block_parts(0)
    except (UnsupportedModelError, NotImplementedError):
        return None
    T, D, depth = layout.num_tokens, parts.qkv_weight.shape[1], len(adapter.blocks())
    hidden = parts.fc1.out_features
    per_block = (10 * D + 2 * hidden) * T + 2 * parts.num_heads * T * T
    return (depth * per_block + 4 * x[0].numel()) * x.element_size()


def rows_per_chunk(budget: int, per_row: int | None, rows: int) -> int:
    """Largest chunk (at least one row, at most ``rows``) whose estimate fits ``budget``."""
    if per_row is None or per_row <= 0:
        return rows
    return max(1, min(rows, budget // per_row))
