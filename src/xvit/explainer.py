"""The explainer: wraps a model and a method, and is called like a function."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from xvit.adapters import get_adapter
from xvit.data.images import ImageSource, load_images, warn_if_unnormalised
from xvit.methods import METHODS
from xvit.methods._memory import DEFAULT_MEMORY_FRACTION, available_memory, rows_per_chunk
from xvit.methods.base import Attribution, Context, Method
from xvit.models import class_names_for, preprocessing_for
from xvit.params import Interval, Nullable, validate_params
from xvit.result import Explanation
from xvit.targets import fill_predicted, resolve_targets
from xvit.utils.context import eval_mode
from xvit.utils.logits import unwrap_logits
from xvit.utils.maps import normalise_maps, upsample_maps


class Explainer:
    """Explain a ViT's predictions with one attribution method.

    The explainer is a context manager: on entry it puts the model in eval mode and, if the method reads
    attention probabilities (``method.needs_attention_probs``), switches the model's attention to the explicit
    path; gradient-only and relevance-engine methods keep the fused kernel. On exit (also after an error) it
    restores every flag it touched. Called outside a ``with`` block it does the same around the
    single call. The switches are reference-counted per model, so explainers may be nested, re-entered, exited
    in any order and used from several threads on one model: the last one out restores the original state.

    Args:
        model: a supported ViT (built-in, timm ViT/DeiT, Hugging Face ViT/DeiT).
        method: registry name (see :func:`xvit.methods`), or a :class:`~xvit.methods.Method` instance.
        batch_size: at most this many rows (images x targets) per pass; ``None`` runs the whole batch.
        max_memory: memory budget in bytes of one pass; rows are chunked so that the method's per-row estimate
            (:meth:`~xvit.methods.Method.memory_per_row`) fits. ``None``: half the memory available at the call.
        **params: the method's parameters.

    Calling it:
        ``explainer(x, target=None, top_k=None)`` with ``x`` a normalised float batch ``(B, 3, H, W)`` or one
        image ``(3, H, W)`` in the model's dtype and device, or image files / PIL images (one or a list), which
        go through the model's own preprocessing (:func:`xvit.load_images`). ``target`` is None or ``"pred"``
        (each image's predicted class), a class index or name (``"tabby cat"``, resolved among the model's class
        names with a close-match hint when unknown), one of those per image (``["tabby", 3, "pred"]``), a
        ``(B, K)`` tensor or nested list, or grad-cam style objects with a ``category``; ``top_k=K`` explains
        each image's K most probable classes instead. Returns an :class:`~xvit.result.Explanation`.
    """

    def __init__(self, model: nn.Module, method: str | Method = "transformer_attribution", *,
                 batch_size: int | None = None, max_memory: int | None = None, **params: Any) -> None:
        validate_params("Explainer", {"batch_size": batch_size, "max_memory": max_memory},
                        {"batch_size": Nullable(Interval(1, None, integer=True)),
                         "max_memory": Nullable(Interval(1, None, integer=True))})
        self.model = model
        self.adapter = get_adapter(model)
        if isinstance(method, Method):
            if params:
                raise TypeError(f"Parameters {sorted(params)} were given with a {type(method).__name__} instance; "
                                "set them on the instance (set_params) or pass the method's registry name.")
            self.method = method
        else:
            cls = METHODS.get(method)
            validate_params(method, params, cls.param_constraints)  # before __init__, to name unknown keys
            self.method = cls(**params)
        self.batch_size = batch_size
        self.max_memory = max_memory
        self._stacks: list[contextlib.ExitStack] = []

    def _contexts(self) -> contextlib.ExitStack:
        """Eval mode and, if the method reads attention, the explicit attention path; both reference-counted per
        model (:mod:`xvit.utils.context`), so nested, repeated, out-of-order and concurrent explainers on one model
        leave it as it was once the last one exits."""
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(eval_mode(self.model))
            if self.method.needs_attention_probs:
                stack.enter_context(self.adapter.eager_attention())
        except BaseException:
            stack.close()
            raise
        return stack

    def __enter__(self) -> Explainer:
        self._stacks.append(self._contexts())
        return self

    def __exit__(self, *exc: Any) -> bool:
        if self._stacks:
            self._stacks.pop().close()
        return False

    def attribute(self, inputs: Tensor, target: Any = None) -> Tensor:
        """Captum-style alias: the raw maps ``(B, K, ...)`` only."""
        return self(inputs, target=target).raw

    def _as_batch(self, x: Any) -> Tensor:
        """A ``(B, C, H, W)`` batch from a batch, one ``(C, H, W)`` image, or image files / PIL images / arrays
        (loaded with the model's preprocessing onto its device and dtype)."""
        if isinstance(x, Tensor):
            return x[None] if x.ndim == 3 else x
        single = isinstance(x, (str, os.PathLike, Image.Image, np.ndarray))
        if not single and not (isinstance(x, Sequence) and x and all(_is_image(i) for i in x)):
            raise TypeError(f"Cannot explain a {type(x).__name__}; pass a normalised (B, 3, H, W) or (3, H, W) "
                            "tensor, an image path, a PIL image, or a list of paths or PIL images.")
        batch, _ = load_images(x, preprocessing_for(self.model))
        param = next(self.model.parameters(), None)
        return batch if param is None else batch.to(device=param.device, dtype=param.dtype)

    def _check_input(self, x: Tensor) -> None:
        self.adapter.check_input(x)
        if x.shape[0] == 0 or x.shape[-1] == 0 or x.shape[-2] == 0:
            raise ValueError(f"The input batch {tuple(x.shape)} is empty (no images, or images of zero size); pass "
                             "at least one image, e.g. xvit.load_images(paths, model).")
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"The input holds {bad} NaN or infinite values, which would make every map NaN; check "
                             "how the batch was built (xvit.load_images gives finite, normalised images).")
        param = next(self.model.parameters(), None)
        if param is not None and (x.dtype != param.dtype or x.device != param.device):
            raise ValueError(f"The input is {x.dtype} on {x.device} but the model is {param.dtype} on "
                             f"{param.device}; move one to the other, e.g. x.to(next(model.parameters())).")
        warn_if_unnormalised(x, preprocessing_for(self.model))

    def _run(self, ctx: Context, x: Tensor, targets: Tensor | None) -> Attribution:
        budget = self.max_memory or int(DEFAULT_MEMORY_FRACTION * (available_memory(x.device) or 0))
        fit = rows_per_chunk(budget, self.method.memory_per_row(ctx, x), x.shape[0]) if budget else x.shape[0]
        step = min(self.batch_size or x.shape[0], fit)
        parts = [self.method.attribute(ctx, x[i:i + step], None if targets is None else targets[i:i + step])
                 for i in range(0, x.shape[0], step)]
        if len(parts) == 1:
            return parts[0]
        extras = {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
        return Attribution(torch.cat([p.raw for p in parts]), torch.cat([p.logits for p in parts]),
                           torch.cat([p.targets for p in parts]), extras)

    def __call__(self, x: Tensor | ImageSource | Sequence[ImageSource], target: Any = None, *,
                 top_k: int | None = None) -> Explanation:
        x = self._as_batch(x)
        with self._contexts():  # cheap inside a with block; also covers parameters changed inside it
            return self._explain(x, target, top_k)

    def _explain(self, x: Tensor, target: Any, top_k: int | None = None) -> Explanation:
        self._check_input(x)
        B, H, W = x.shape[0], x.shape[-2], x.shape[-1]
        layout = self.adapter.layout(x)
        ctx = Context(self.adapter, layout)
        self.method.validate(ctx)
        num_classes = self.adapter.num_classes
        targets = resolve_targets(target, B, num_classes, x.device, top_k=top_k,
                                  class_names=lambda: class_names_for(self.model, num_classes))
        if targets is not None and bool((targets < 0).any()):  # "pred" or top-k entries: one plain forward
            with torch.no_grad():
                targets = fill_predicted(targets, unwrap_logits(self.adapter.forward(x)))
        K = 1 if targets is None else targets.shape[1]
        start = time.perf_counter()
        if targets is None:
            out = self._run(ctx, x, None)
        elif self.method.class_specific and self.method.per_target_pass:
            out = self._run(ctx, x.repeat_interleave(K, 0) if K > 1 else x, targets.reshape(-1))
        elif self.method.class_specific:  # one set of passes serves all K targets of an image
            out = self._run(ctx, x, targets)
        else:
            out = self._run(ctx, x, targets[:, 0])
        seconds = time.perf_counter() - start
        if not bool(torch.isfinite(out.logits).all()):
            raise ValueError(f"The model's logits hold NaN or infinite values for this finite input, so its "
                             f"{self.method.name} maps would be NaN; check the model's weights (a diverged training "
                             "run or a corrupt checkpoint) and its dtype (float16 overflows easily).")
        if not bool(torch.isfinite(out.raw).all()):
            warnings.warn(f"{self.method.name} produced NaN or infinite map values (numerical overflow); the "
                          "maps of those images are not meaningful. Try float32/float64 inputs or other parameters.",
                          RuntimeWarning, stacklevel=2)
        per_image = self.method.class_specific or K == 1
        raw = out.raw.reshape(B, K if per_image else 1, *out.raw.shape[1:])
        raw = raw.expand(B, K, *raw.shape[2:])
        logits = out.logits.reshape(B, -1, out.logits.shape[-1])[:, 0] if per_image else out.logits
        used = out.targets.view(B, 1) if targets is None else targets
        up = upsample_maps(raw, (H, W))
        extras = {k: v.reshape(B, K) if isinstance(v, Tensor) and v.numel() == B * K else v
                  for k, v in out.extras.items()}
        meta = {"signed": bool(self.method.signed), "class_specific": self.method.class_specific,
                "resolution": self.method.resolution, "layout": layout.to_dict(), "seconds": seconds,
                "adapter": self.adapter.family, **extras}
        return Explanation(raw=raw.detach(), maps=normalise_maps(up.detach()), targets=used.detach(),
                           logits=logits.detach(), method=self.method.name, params=self.method.get_params(),
                           meta=meta)


def explain(model: nn.Module, x: Tensor | ImageSource | Sequence[ImageSource],
            method: str = "transformer_attribution", target: Any = None, *, top_k: int | None = None,
            **params: Any) -> Explanation:
    """One-call form of :class:`Explainer`: ``with Explainer(model, method, **params) as e: return e(x, target)``.
    ``x`` and ``target`` as for calling an :class:`Explainer` (batches, single images, paths, PIL images; class
    indices or names); ``top_k=K`` explains each image's K most probable classes."""
    with Explainer(model, method, **params) as explainer:
        return explainer(x, target, top_k=top_k)


def _is_image(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike, Image.Image, np.ndarray))
