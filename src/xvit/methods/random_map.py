"""The chance baseline: a seeded random map per (image, class), so every evaluation table shows what chance scores."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from xvit.methods.base import Attribution, Context, Method, register_method
from xvit.params import Interval
from xvit.targets import explained_classes

__all__ = ["RandomMap", "row_seeds"]


def row_seeds(x: Tensor, targets: Tensor, seed: int) -> list[int]:
    """One 63-bit generator seed per row: a hash of ``seed``, the row's image content (its float32 bytes) and its
    class, so a row's map depends neither on its batch neighbours nor on its position in the batch."""
    images = x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
    classes = targets.detach().cpu().tolist()
    out = []
    for image, cls in zip(images, classes, strict=True):
        h = hashlib.blake2b(image.tobytes(), digest_size=8, key=f"{seed}:{cls}".encode())
        out.append(int.from_bytes(h.digest(), "little") >> 1)
    return out


@register_method("random", citation="Random-map baseline (chance), as the random estimator of Hooker et al., A "
                 "Benchmark for Interpretability Methods in Deep Neural Networks, NeurIPS 2019, arXiv:1806.10758",
                 passes="F")
class RandomMap(Method):
    """A map of i.i.d. ``U(0, 1)`` values, one per patch token, drawn from a generator seeded by ``seed``, the
    image's content and the explained class. It reads nothing of the model but its prediction, so its scores are
    what chance scores on each metric: the baseline row of every evaluation table.

    Args:
        seed: the base seed; the same seed, image and class always give the same map, on any device and in any
            batch.
    """

    class_specific = True
    needs_attention_probs = False
    param_constraints = {"seed": Interval(0, None, integer=True)}

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__(seed=seed)

    def attribute(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        with torch.no_grad():
            logits = ctx.adapter.forward(x).float()
        targets = explained_classes(logits, targets)
        h, w = ctx.layout.grid
        maps = torch.stack([torch.rand(h, w, generator=torch.Generator().manual_seed(s))
                            for s in row_seeds(x, targets, self.params["seed"])])
        return Attribution(maps.to(x.device), logits, targets)
