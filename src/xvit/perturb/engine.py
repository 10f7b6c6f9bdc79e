"""Score B images under M masks for K targets in one call: the perturbation engine of mask methods and metrics.

Every (image, mask) pair is one row; the ``B·M`` rows are stacked along the batch axis (row ``b·M + m``) and sent
through the model ``batch_size`` rows at a time, each chunk's perturbed inputs built only when it runs. The K
targets of an image are read from the same forward pass, so a multi-target method pays ``M`` forwards per image,
not ``M·K``.

* **Pixel space**: row ``(b, m)`` is ``x_b ⊙ M + s ⊙ (1 − M)`` with the substrate ``s``
  (:mod:`xvit.perturb.substrates`); binary masks select instead of blending.
* **Token space**: row ``(b, m)`` keeps the prefix tokens and the patch tokens where the mask is 1, removing the
  others from the sequence after the position embedding (``at_block=0``, as TIS does) or at the input of block
  ``at_block`` (:meth:`xvit.adapters.ViTAdapter.forward_tokens`). Rows with equal kept counts share chunks, so
  each forward pass has one sequence length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xvit.adapters import get_adapter
from xvit.adapters.base import ViTAdapter
from xvit.perturb.masks import Masks, as_masks
from xvit.perturb.substrates import Substrate, get_substrate
from xvit.utils.logits import unwrap_logits
from xvit.utils.progress import Progress

__all__ = ["PROGRESS_ROWS", "READOUTS", "score"]

PROGRESS_ROWS = 500  # masked forwards (image x mask rows) from which a score() call reports progress by itself
PROGRESS_DELAY = 10.0  # seconds a call runs before that progress shows (short calls stay silent)

# Logits of ``n`` perturbed rows and the index of each row's image -> per-class scores ``(n, classes)``.
Readout = Callable[[Tensor, Tensor], Tensor]

READOUTS: dict[str, Readout] = {
    "logit": lambda logits, image: logits.float(),
    "softmax": lambda logits, image: logits.float().softmax(1),
    "top1": lambda logits, image: F.one_hot(logits.argmax(1), logits.shape[1]).float(),
}


@torch.no_grad()
def score(model: Any, x: Tensor, masks: Tensor | Masks, targets: Tensor, *, space: str = "pixel",
          substrate: str | Substrate | Tensor = "mean", readout: str | Readout = "softmax", batch_size: int = 64,
          at_block: int = 0, progress: bool | None = None) -> Tensor:
    """Scores of ``targets`` for every image under every mask.

    Args:
        model: pixel space: a callable returning logits (a tensor, a ``ModelOutput`` or a tuple) or a
            :class:`~xvit.adapters.ViTAdapter`; token space: a supported ViT or its adapter.
        x: ``(B, C, H, W)`` normalised images.
        masks: 1 keeps the image, 0 perturbs it. Pixel space: ``(M, H, W)`` shared or ``(B, M, H, W)`` per image,
            bool or float in [0, 1]. Token space: ``(M, N)`` or ``(B, M, N)`` bool over the ``N`` patch tokens
            (row-major grid). Or a lazy :class:`~xvit.perturb.masks.Masks` (e.g. ``RankMasks``).
        targets: ``(B, K)`` integer classes scored for each image.
        space: ``"pixel"`` or ``"token"``.
        substrate: pixel space only: a name in :data:`~xvit.perturb.substrates.SUBSTRATES`, a ``Substrate``
            (e.g. ``Black(mean, std)``) or a fill tensor.
        readout: ``"softmax"`` (probabilities), ``"logit"``, ``"top1"`` (1 where the class is the prediction) or
            a callable ``readout(logits, image)`` mapping the logits ``(n, classes)`` of ``n`` perturbed rows and
            the index ``(n,)`` of each row's image to per-class scores ``(n, classes)``.
        batch_size: rows per forward pass (the memory bound).
        at_block: token space only: remove tokens at the input of this block (0: after the position embedding).
        progress: report progress on stderr (:class:`~xvit.utils.progress.Progress`): True always, False never,
            None for :data:`PROGRESS_ROWS` or more rows once the call has run :data:`PROGRESS_DELAY` seconds, unless
            an outer progress (e.g. ``xvit evaluate``'s) is showing.

    Returns:
        ``(B, M, K)`` scores (float32 for the named read-outs).
    """
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"Expected x as a normalised float image batch (B, C, H, W); got {got}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    targets = _check_targets(targets, x.shape[0]).to(x.device)
    read = _readout(readout)
    if space == "pixel":
        masks = as_masks(masks, x.shape[0], tuple(x.shape[2:]))
        chunks = _pixel_chunks(model, x, masks, get_substrate(substrate), batch_size)
    elif space == "token":
        adapter = get_adapter(model)
        adapter.check_input(x)
        adapter.check_block_index(at_block)
        masks = as_masks(masks, x.shape[0], (adapter.layout(x).num_patches,))
        chunks = _token_chunks(adapter, x, masks, at_block, batch_size)
    else:
        raise ValueError(f"space must be 'pixel' or 'token'; got {space!r}.")
    b, m, k = x.shape[0], masks.num_masks, targets.shape[1]
    out: Tensor | None = None
    auto = progress is None
    with Progress(b * m, desc="masked forwards", unit="input", delay=PROGRESS_DELAY if auto else 0.0,
                  enabled=(None if b * m >= PROGRESS_ROWS else False) if auto else progress) as bar:
        for rows, logits in chunks:
            if out is None:
                _check_classes(targets, logits.shape[1])
            scores = read(logits, rows // m).gather(1, targets[rows // m])
            if out is None:
                out = scores.new_empty(b * m, k)
            out[rows] = scores
            bar.update(len(rows))
    return (out if out is not None else x.new_empty(0, k)).view(b, m, k)


def _pixel_chunks(model: Any, x: Tensor, masks: Masks, substrate: Substrate,
                  batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    forward = model.forward if isinstance(model, ViTAdapter) else model
    m = masks.num_masks
    fill = substrate.image(x)
    for rows in torch.arange(x.shape[0] * m, device=x.device).split(batch_size):  # chunks of rows, not images
        image, index = rows // m, rows % m
        keep = masks.rows(image, index).to(x.device)[:, None]
        background = substrate.rows(fill[image], index)
        if keep.dtype == torch.bool:
            inputs = torch.where(keep, x[image], background)
        else:
            keep = keep.to(x.dtype)
            inputs = x[image] * keep + background * (1 - keep)
        yield rows, unwrap_logits(forward(inputs))


def _token_chunks(adapter: ViTAdapter, x: Tensor, masks: Masks, at_block: int,
                  batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if not masks.binary:
        raise ValueError("Token removal needs binary masks (bool): a token is kept or removed.")
    layout = adapter.layout(x)
    m = masks.num_masks
    tokens = torch.cat([adapter.block_input(part, at_block) for part in x.split(batch_size)])
    counts = masks.kept_counts(x.shape[0]).to(x.device).flatten()
    for count in counts.unique().tolist():  # one sequence length per forward pass
        if count == 0 and layout.pool == "avg":
            raise ValueError("A token mask keeps no patch token, but this model averages the patch tokens; keep "
                             "at least one.")
        for rows in (counts == count).nonzero()[:, 0].split(batch_size):
            image, index = rows // m, rows % m
            keep = masks.rows(image, index).to(x.device).flatten(1)
            yield rows, unwrap_logits(adapter.forward_selected(tokens[image], keep, layout.num_prefix, at_block))


def _readout(readout: str | Readout) -> Readout:
    if callable(readout):
        return readout
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {sorted(READOUTS)} or a callable readout(logits, image); got "
                         f"{readout!r}.")
    return READOUTS[readout]


def _check_targets(targets: Tensor, batch: int) -> Tensor:
    if (not isinstance(targets, Tensor) or targets.ndim != 2 or targets.shape[0] != batch
            or targets.is_floating_point() or targets.dtype == torch.bool):
        got = f"{targets.dtype} {tuple(targets.shape)}" if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"Expected targets as an integer tensor (B, K) = ({batch}, K); got {got}. "
                         "Use targets[:, None] for one class per image.")
    return targets.long()


def _check_classes(targets: Tensor, classes: int) -> None:
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise ValueError(f"targets must lie in 0..{classes - 1} (the model has {classes} classes); got "
                         f"{int(targets.min())}..{int(targets.max())}.")
