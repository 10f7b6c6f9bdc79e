"""The uniform view of a ViT that every method works through.

An adapter answers, for one model family: the token layout of an input (prefix tokens, patch grid,
pooling), the blocks, where each block's attention probabilities appear, how to switch fused/SDPA
attention to the explicit path for the duration of a context, and a canonical description of every
block's parameters (:class:`BlockParts`) that the relevance engine re-plays op by op.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from xvit.registry import Registry

POOLS = ("token", "token_distilled", "avg")


@dataclass(frozen=True)
class TokenLayout:
    """Token layout of one input: ``num_prefix`` tokens (class, distillation, registers) then the
    ``grid`` of patch tokens in row-major order; ``pool`` is how the head reads the sequence."""

    num_prefix: int
    grid: tuple[int, int]
    pool: str
    patch_size: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches

    def tokens_to_grid(self, t: Tensor) -> Tensor:
        """``(..., T)`` per-token values -> ``(..., h, w)``, prefix tokens dropped."""
        return t[..., self.num_prefix:].reshape(*t.shape[:-1], *self.grid)

    def readout(self, m: Tensor) -> Tensor:
        """``(..., T, T)`` token-mixing matrix -> ``(..., h, w)`` map of the read-out token's row.

        ``token``: the class-token row (Chefer et al. 2021); ``token_distilled``: mean of the class and
        distillation rows; ``avg``: mean over the patch rows, since the head averages patch tokens.
        """
        k = self.num_prefix
        if self.pool == "token":
            row = m[..., 0, :]
        elif self.pool == "token_distilled":
            row = (m[..., 0, :] + m[..., 1, :]) / 2
        else:
            row = m[..., k:, :].mean(-2)
        return self.tokens_to_grid(row)

    def to_dict(self) -> dict[str, Any]:
        return {"num_prefix": self.num_prefix, "grid": list(self.grid), "pool": self.pool,
                "patch_size": list(self.patch_size)}


@dataclass
class BlockParts:
    """Canonical pre-norm block: ``U = Z + ls1·proj(MSA(LN1(Z)))``, ``Z' = U + ls2·fc2(act(fc1(LN2(U))))``.

    ``qkv_weight`` is ``(3D, D)`` with rows [q; k; v], head-major inside each. ``spectrum`` ``(heads, r)`` marks
    SVD-inspired attention (analysis-methods.md §2.1): queries and keys are ℓ2-normalised per row and the queries
    scaled by it before ``q kᵀ · scale``; None for plain attention. ``logit_bias(B, T)`` is an additive term on the
    attention logits of a ``T``-token sequence (``(B or 1, heads or 1, T, T)``; a WinfT window), or None.
    """

    norm1: nn.Module
    qkv_weight: Tensor
    qkv_bias: Tensor | None
    num_heads: int
    scale: float
    proj: nn.Linear
    norm2: nn.Module
    fc1: nn.Linear
    act: Callable[[Tensor], Tensor]
    fc2: nn.Linear
    ls1: Tensor | None = None
    ls2: Tensor | None = None
    spectrum: Tensor | None = None
    logit_bias: Callable[[int, int], Tensor] | None = None


@dataclass
class EmbedParts:
    """Patch embedding ``proj`` (a Conv2d) and ``prefix_and_pos(tokens, grid) -> (u, pos)`` with
    ``u = [prefix tokens; patch tokens]`` and ``pos`` the additive position term, so that the first
    block's input is ``u + pos`` (pos is zero where a token gets none)."""

    proj: nn.Conv2d
    prefix_and_pos: Callable[[Tensor, tuple[int, int]], tuple[Tensor, Tensor]]


@dataclass
class HeadParts:
    """Final ``norm`` (or None), ``pool`` (see :data:`POOLS`), ``fc_norm`` after pooling (or None) and
    the classifier ``heads``; two heads (DeiT distilled) are averaged."""

    norm: nn.Module | None
    pool: str
    fc_norm: nn.Module | None
    heads: Sequence[nn.Linear]


class UnsupportedModelError(TypeError):
    """The model is not a ViT that xvit can explain."""


class ViTAdapter(abc.ABC):
    """Base class: one subclass per model family, registered with :data:`ADAPTERS`."""

    family: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    @abc.abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter handles ``model``."""

    # --- structure -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of classes of the classifier head."""

    @abc.abstractmethod
    def layout(self, x: Tensor) -> TokenLayout:
        """Token layout for the input batch ``x``."""

    @abc.abstractmethod
    def blocks(self) -> Sequence[nn.Module]:
        """The transformer blocks, input to output."""

    @abc.abstractmethod
    def attention_module(self, index: int) -> nn.Module:
        """The module whose forward output carries block ``index``'s attention probabilities."""

    def attention_from_output(self, output: Any) -> Tensor:
        """Extract ``(B, heads, T, T)`` probabilities from :meth:`attention_module`'s output."""
        return output

    def norm1(self, index: int) -> nn.Module:
        """LN1 of a block: the default Grad-CAM layer of token models (its output feeds the attention)."""
        return self.block_parts(index).norm1

    @abc.abstractmethod
    def block_parts(self, index: int) -> BlockParts:
        """Parameters of block ``index`` in canonical form."""

    @abc.abstractmethod
    def embed_parts(self) -> EmbedParts:
        """Patch embedding and prefix/position terms in canonical form."""

    @abc.abstractmethod
    def head_parts(self) -> HeadParts:
        """Final norm, pooling and classifier in canonical form."""

    # --- running ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, C)`` of the real model."""
        return self.model(x)

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for inputs this model cannot take (wrong channels, size, dtype)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected a float tensor (B, 3, H, W); got {type(x).__name__}. "
                            "Use xvit.load_images(paths, model) to build one.")
        if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(f"Expected a float image batch (B, 3, H, W); got {x.dtype} {tuple(x.shape)}. "
                             "Use xvit.load_images(paths, model) to build one.")
        ph, pw = self.layout_patch_size()
        if x.shape[-2] % ph or x.shape[-1] % pw:
            raise ValueError(f"Input size {tuple(x.shape[-2:])} is not a multiple of the patch size "
                             f"{(ph, pw)}; resize it (xvit.load_images does) or crop it.")

    def layout_prefix(self) -> int:
        """Number of prefix tokens (class, distillation, registers)."""
        ph, pw = self.layout_patch_size()
        return self.layout(torch.empty(1, 3, ph, pw)).num_prefix

    @abc.abstractmethod
    def layout_patch_size(self) -> tuple[int, int]:
        """Patch size (h, w) in pixels."""

    @contextlib.contextmanager
    def eager_attention(self) -> Iterator[None]:
        """Inside the context, attention runs the explicit path that materialises probabilities."""
        yield

    # --- token removal ---------------------------------------------------------------------------
    def block_input(self, x: Tensor, at_block: int = 0) -> Tensor:
        """Residual stream ``(B, T, D)`` entering block ``at_block`` (0: right after the position embedding),
        prefix tokens first. Families that support token removal override this and :meth:`forward_from`."""
        raise self._no_token_removal()

    def forward_from(self, tokens: Tensor, at_block: int = 0) -> Tensor:
        """Logits ``(B, C)`` of a token sequence entering block ``at_block``: the remaining blocks, the final norm,
        pooling and the head. The sequence may be shorter than the model's (prefix tokens first, then any
        subset of patch tokens); ``avg`` pooling then averages the patch tokens present."""
        raise self._no_token_removal()

    def forward_tokens(self, x: Tensor, keep: Tensor, at_block: int = 0) -> Tensor:
        """Logits with only the prefix tokens and the kept patch tokens entering block ``at_block``.

        Token removal as in TIS (Englebert et al. 2023, arXiv:2304.00621; attribution-methods.md §5.4): the
        removed patch tokens are absent from the sequence of every later block, which is exactly a model whose
        input lacks those patches (attention cannot reach them, ``avg`` pooling ignores them).

        Args:
            x: ``(B, C, H, W)`` normalised images.
            keep: ``(B, num_patches)`` bool with the same number of kept patches per row, or ``(B, k)`` long
                indices of kept patches (row-major over the patch grid).
            at_block: 0 removes tokens after the position embedding; ``b`` at the input of block ``b``.
        """
        self.check_block_index(at_block)
        return self.forward_selected(self.block_input(x, at_block), keep, self.layout(x).num_prefix, at_block)

    def forward_selected(self, tokens: Tensor, keep: Tensor, num_prefix: int, at_block: int = 0) -> Tensor:
        """Logits of the residual stream ``tokens`` ``(B, T, D)`` entering block ``at_block``, shortened to the prefix
        tokens and the kept patch tokens (``keep`` as in :meth:`forward_tokens`). Models whose attention depends on
        token positions (WinfT windows) learn here which patches the shortened sequence carries."""
        return self.forward_from(select_tokens(tokens, keep, num_prefix), at_block)

    def check_block_index(self, at_block: int) -> None:
        """Raise for a block index outside ``0..len(blocks)`` (``len(blocks)``: only the head runs after it)."""
        depth = len(self.blocks())
        if isinstance(at_block, bool) or not isinstance(at_block, int) or not 0 <= at_block <= depth:
            raise ValueError(f"at_block must be an int in 0..{depth} for this {depth}-block model; got {at_block!r}.")

    def _no_token_removal(self) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"{type(self).__name__} does not support token removal: its adapter implements no block_input() / "
            "forward_from(). Token removal needs blocks that accept a shortened sequence (absolute position "
            "embeddings added before the blocks); use pixel-space masks instead.")


ADAPTERS: Registry[type[ViTAdapter]] = Registry("adapter", "xvit.adapters.ADAPTERS.names()")


def register_adapter(cls: type[ViTAdapter]) -> type[ViTAdapter]:
    ADAPTERS.add(cls.family, cls)
    return cls


def get_adapter(model: nn.Module) -> ViTAdapter:
    """The adapter for ``model``; a clear error naming the supported families if none matches."""
    if isinstance(model, ViTAdapter):
        return model
    for name in ADAPTERS:
        cls = ADAPTERS.get(name)
        if cls.matches(model):
            return cls(model)
    families = ", ".join(ADAPTERS.names())
    raise UnsupportedModelError(
        f"xvit cannot explain {type(model).__name__}: no adapter matches it. Supported families: {families}. "
        "For another plain ViT, write an adapter (see docs/adapters.md)."
    )


def layer_scale(module: nn.Module) -> Tensor | None:
    """timm ``LayerScale`` gamma, or None for an identity."""
    gamma = getattr(module, "gamma", None)
    return gamma if isinstance(gamma, Tensor) else None


def is_identity(module: Any) -> bool:
    return module is None or isinstance(module, nn.Identity) or (
        isinstance(module, nn.Dropout) and (not module.training or module.p == 0))


def qkv_from_linears(q: nn.Linear, k: nn.Linear, v: nn.Linear) -> tuple[Tensor, Tensor | None]:
    w = torch.cat([q.weight, k.weight, v.weight], 0)
    b = None if q.bias is None else torch.cat([q.bias, k.bias, v.bias], 0)
    return w, b


def select_tokens(tokens: Tensor, keep: Tensor, num_prefix: int) -> Tensor:
    """``tokens`` ``(B, T, D)`` shortened to the ``num_prefix`` prefix tokens and the kept patch tokens.

    ``keep`` is ``(B, T - num_prefix)`` bool with the same count per row (kept tokens stay in grid order) or
    ``(B, k)`` long patch indices.
    """
    b, t, d = tokens.shape
    n = t - num_prefix
    if not isinstance(keep, Tensor) or keep.ndim != 2 or keep.shape[0] != b:
        got = tuple(keep.shape) if isinstance(keep, Tensor) else type(keep).__name__
        raise ValueError(f"keep must be a ({b}, {n}) bool mask or ({b}, k) patch indices; got {got}.")
    if keep.dtype == torch.bool:
        if keep.shape[1] != n:
            raise ValueError(f"keep has {keep.shape[1]} entries per row but the input has {n} patch tokens.")
        counts = keep.sum(1)
        if b and not bool((counts == counts[0]).all()):
            raise ValueError("Every row of keep must keep the same number of patch tokens (one sequence length "
                             f"per batch); got counts {sorted(set(counts.tolist()))}.")
        index = keep.nonzero()[:, 1].view(b, -1)
    elif not keep.is_floating_point() and not keep.is_complex():
        index = keep.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            raise ValueError(f"keep indices must lie in 0..{n - 1} (patch tokens); got "
                             f"{int(index.min())}..{int(index.max())}.")
    else:
        raise ValueError(f"keep must be bool or integer; got {keep.dtype}.")
    kept = tokens[:, num_prefix:].gather(1, index.to(tokens.device)[..., None].expand(-1, -1, d))
    return torch.cat([tokens[:, :num_prefix], kept], 1)
