"""Adapters for the built-in ViT and timm ``VisionTransformer`` / DeiT (also distilled, with
registers, ``global_pool='avg'`` and ``dynamic_img_size``). Both share timm's attribute names."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from xvit.adapters.base import (
    BlockParts,
    EmbedParts,
    HeadParts,
    TokenLayout,
    UnsupportedModelError,
    ViTAdapter,
    is_identity,
    layer_scale,
    register_adapter,
)
from xvit.models import VisionTransformer, variant_of
from xvit.models.svda import SVDAttention
from xvit.models.winft import WindowAttention, WinfT
from xvit.utils.context import set_attributes


class _TimmLikeAdapter(ViTAdapter):
    """Shared logic for models with timm's layout (``patch_embed``, ``blocks``, ``norm``, ``head``)."""

    @property
    def num_classes(self) -> int:
        return self.model.head.out_features

    def blocks(self) -> Sequence[nn.Module]:
        return list(self.model.blocks)

    def attention_module(self, index: int) -> nn.Module:
        return self.model.blocks[index].attn.attn_drop

    def layout_patch_size(self) -> tuple[int, int]:
        ps = self.model.patch_embed.proj.kernel_size
        return (int(ps[0]), int(ps[1]))

    def _pool(self) -> str:
        return "avg" if self.model.global_pool == "avg" else "token"

    def layout(self, x: Tensor) -> TokenLayout:
        ph, pw = self.layout_patch_size()
        return TokenLayout(num_prefix=int(self.model.num_prefix_tokens), grid=(x.shape[-2] // ph, x.shape[-1] // pw),
                           pool=self._pool(), patch_size=(ph, pw))

    @contextlib.contextmanager
    def eager_attention(self) -> Iterator[None]:
        with set_attributes([(b.attn, "fused_attn", False) for b in self.model.blocks]):
            yield

    def block_parts(self, index: int) -> BlockParts:
        b = self.model.blocks[index]
        a = b.attn
        for name in ("q_norm", "k_norm", "norm"):
            if not is_identity(getattr(a, name, None)):
                raise UnsupportedModelError(f"Block {index} uses attn.{name}; xvit's relevance rules support "
                                            "plain attention only.")
        if not is_identity(getattr(b.mlp, "norm", None)) or getattr(a, "gate", None) is not None:
            raise UnsupportedModelError(f"Block {index} has an MLP norm or attention gate; not supported by "
                                        "xvit's relevance rules.")
        return BlockParts(norm1=b.norm1, qkv_weight=a.qkv.weight, qkv_bias=a.qkv.bias, num_heads=a.num_heads,
                          scale=float(a.scale), proj=a.proj, norm2=b.norm2, fc1=b.mlp.fc1, act=b.mlp.act,
                          fc2=b.mlp.fc2, ls1=layer_scale(getattr(b, "ls1", None)),
                          ls2=layer_scale(getattr(b, "ls2", None)),
                          spectrum=a.spectrum() if isinstance(a, SVDAttention) else None,
                          logit_bias=a.logit_bias if isinstance(a, WindowAttention) else None)

    def head_parts(self) -> HeadParts:
        m = self.model
        return HeadParts(norm=None if is_identity(m.norm) else m.norm, pool=self._pool(),
                         fc_norm=None if is_identity(m.fc_norm) else m.fc_norm, heads=[m.head])

    @abc.abstractmethod
    def _embed(self, x: Tensor) -> Tensor:
        """The first block's input, exactly as the model's own forward builds it."""

    def block_input(self, x: Tensor, at_block: int = 0) -> Tensor:
        self.check_block_index(at_block)
        h = self._embed(x)
        for block in self.model.blocks[:at_block]:
            h = block(h)
        return h

    def forward_from(self, tokens: Tensor, at_block: int = 0) -> Tensor:
        self.check_block_index(at_block)
        h = tokens
        for block in self.model.blocks[at_block:]:
            h = block(h)
        # forward_head pools ``x[:, num_prefix_tokens:]`` (avg) or the prefix rows, so shortened sequences work.
        return self.model.forward_head(self.model.norm(h))


@register_adapter
class BuiltinViTAdapter(_TimmLikeAdapter):
    """xvit's own :class:`~xvit.models.vit.VisionTransformer` and every registered model variant that declares
    itself ``vit_compatible`` (a subclass with the same layout; see :func:`xvit.models.register_model`)."""

    family = "xvit ViT"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        variant = variant_of(model)
        return variant is not None and variant.vit_compatible and isinstance(model, VisionTransformer)

    def embed_parts(self) -> EmbedParts:
        m = self.model

        def prefix_and_pos(tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
            B = tokens.shape[0]
            prefix = m.prefix_tokens(B)
            u = torch.cat([*prefix, tokens], 1)
            pos = m.position_embedding(grid).expand(B, -1, -1)
            if m.no_embed_class:
                pos = torch.cat([pos.new_zeros(B, m.num_prefix_tokens, pos.shape[-1]), pos], 1)
            return u, pos

        return EmbedParts(proj=m.patch_embed.proj, prefix_and_pos=prefix_and_pos)

    def _embed(self, x: Tensor) -> Tensor:
        return self.model.embed(x)

    def forward_selected(self, tokens: Tensor, keep: Tensor, num_prefix: int, at_block: int = 0) -> Tensor:
        if not isinstance(self.model, WinfT):
            return super().forward_selected(tokens, keep, num_prefix, at_block)
        # WinfT's windows depend on which patches the shortened sequence carries: tell it, in a scoped context.
        index = keep
        if isinstance(keep, Tensor) and keep.dtype == torch.bool and keep.ndim == 2 and keep.numel():
            counts = keep.sum(1)
            if bool((counts == counts[0]).all()):  # otherwise select_tokens names the problem
                index = keep.nonzero()[:, 1].view(keep.shape[0], -1)
        with self.model.kept_patches(index):
            return super().forward_selected(tokens, keep, num_prefix, at_block)


@register_adapter
class TimmViTAdapter(_TimmLikeAdapter):
    """timm ``VisionTransformer`` and DeiT (``VisionTransformerDistilled``), also with SVDA swapped in
    (:func:`xvit.models.svda.swap_in_svda`)."""

    family = "timm VisionTransformer/DeiT"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            from timm.models.vision_transformer import VisionTransformer as TimmViT
        except ImportError:
            return False
        if not isinstance(model, TimmViT):
            return False
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        blocks_ok = all(type(b) is Block and type(b.attn) in (Attention, SVDAttention) for b in model.blocks)
        if not blocks_ok or getattr(model, "attn_pool", None) is not None or model.global_pool not in ("token", "avg"):
            raise UnsupportedModelError(
                f"This timm {type(model).__name__} uses blocks, attention or pooling ({model.global_pool!r}) "
                "that xvit does not support yet; supported: plain Block/Attention with global_pool 'token' or "
                "'avg'."
            )
        return True

    @property
    def distilled(self) -> bool:
        return getattr(self.model, "dist_token", None) is not None

    def _pool(self) -> str:
        if self.distilled:
            return "token_distilled"
        return super()._pool()

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        pe = self.model.patch_embed
        if not getattr(self.model, "dynamic_img_size", False) and getattr(pe, "strict_img_size", True):
            if tuple(x.shape[-2:]) != tuple(pe.img_size):
                raise ValueError(f"This timm model was built for {tuple(pe.img_size)} inputs; got "
                                 f"{tuple(x.shape[-2:])}. Resize the input, or create the model with "
                                 "dynamic_img_size=True to explain other sizes.")

    def embed_parts(self) -> EmbedParts:
        m = self.model
        if not is_identity(m.patch_embed.norm) or not is_identity(getattr(m, "norm_pre", None)):
            raise UnsupportedModelError("Patch-embedding or pre-block norms are not supported by xvit's "
                                        "relevance rules.")

        def prefix_and_pos(tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
            B, N, D = tokens.shape
            shaped = (lambda t: t.reshape(B, *grid, D)) if m.dynamic_img_size else (lambda t: t)
            # timm's own _pos_embed places prefix tokens and (resampled) position embeddings; applying it
            # to zero patch tokens isolates the additive position term.
            zeros = tokens.new_zeros(B, N, D)
            with_pos = m._pos_embed(shaped(zeros))
            prefix = _prefix_tokens(m, B, tokens)
            u = torch.cat([prefix, tokens], 1)
            return u, with_pos - torch.cat([prefix, zeros], 1)

        return EmbedParts(proj=m.patch_embed.proj, prefix_and_pos=prefix_and_pos)

    def _embed(self, x: Tensor) -> Tensor:
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def head_parts(self) -> HeadParts:
        parts = super().head_parts()
        if self.distilled:
            parts.heads = [self.model.head, self.model.head_dist]
        return parts


def _prefix_tokens(m: nn.Module, batch: int, like: Tensor) -> Tensor:
    out = []
    for name in ("cls_token", "dist_token", "reg_token"):
        t = getattr(m, name, None)
        if t is not None:
            out.append(t.expand(batch, -1, -1))
    return torch.cat(out, 1) if out else like.new_zeros(batch, 0, like.shape[-1])
