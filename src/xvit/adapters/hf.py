"""Adapter for Hugging Face ``ViTForImageClassification``, ``DeiTForImageClassification`` and
``DeiTForImageClassificationWithTeacher`` (transformers 4.x and 5.x module names)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xvit.adapters.base import (
    BlockParts,
    EmbedParts,
    HeadParts,
    TokenLayout,
    ViTAdapter,
    qkv_from_linears,
    register_adapter,
)
from xvit.utils.context import set_attributes

_CLASSES = ("ViTForImageClassification", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher")


def _first(obj: Any, *paths: str) -> Any:
    for path in paths:
        cur = obj
        for part in path.split("."):
            cur = getattr(cur, part, None)
            if cur is None:
                break
        if cur is not None:
            return cur
    raise AttributeError(f"{type(obj).__name__} has none of {paths}")


def _layer_output(out: Any) -> Tensor:
    """Hidden states from a layer's output: a tensor (transformers 5) or a tuple led by it (4.x)."""
    return out[0] if isinstance(out, tuple) else out


@register_adapter
class HFViTAdapter(ViTAdapter):
    family = "HF ViT/DeiT"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return type(model).__name__ in _CLASSES and hasattr(model, "config")

    @property
    def backbone(self) -> nn.Module:
        return _first(self.model, "vit", "deit")

    @property
    def teacher(self) -> bool:
        return type(self.model).__name__ == "DeiTForImageClassificationWithTeacher"

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    def blocks(self) -> Sequence[nn.Module]:
        return list(_first(self.backbone, "layers", "encoder.layer"))

    def attention_module(self, index: int) -> nn.Module:
        layer = self.blocks()[index]
        # transformers 5: ViTAttention returns (output, probs); 4.x: the inner self-attention does.
        inner = getattr(layer.attention, "attention", None)
        return inner if inner is not None else layer.attention

    def attention_from_output(self, output: Any) -> Tensor:
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if probs is None:
            raise RuntimeError("The Hugging Face attention returned no probabilities; it is not running the "
                               "eager path. Explain inside xvit.Explainer, which switches it.")
        return probs

    def layout_patch_size(self) -> tuple[int, int]:
        k = self.embed_parts().proj.kernel_size
        return (int(k[0]), int(k[1]))

    def layout(self, x: Tensor) -> TokenLayout:
        ph, pw = self.layout_patch_size()
        prefix = 2 if hasattr(self.backbone.embeddings, "distillation_token") else 1
        return TokenLayout(num_prefix=prefix, grid=(x.shape[-2] // ph, x.shape[-1] // pw),
                           pool="token_distilled" if self.teacher else "token", patch_size=(ph, pw))

    def _native_size(self) -> tuple[int, int]:
        size = self.model.config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(pixel_values=x, interpolate_pos_encoding=tuple(x.shape[-2:]) != self._native_size())
        return out.logits

    def block_input(self, x: Tensor, at_block: int = 0) -> Tensor:
        self.check_block_index(at_block)
        emb = self.backbone.embeddings
        h = emb(x.to(emb.patch_embeddings.projection.weight.dtype),
                interpolate_pos_encoding=tuple(x.shape[-2:]) != self._native_size())
        for layer in self.blocks()[:at_block]:
            h = _layer_output(layer(h))
        return h

    def forward_from(self, tokens: Tensor, at_block: int = 0) -> Tensor:
        self.check_block_index(at_block)
        h = tokens
        for layer in self.blocks()[at_block:]:
            h = _layer_output(layer(h))
        h = self.backbone.layernorm(h)
        if self.teacher:
            return (self.model.cls_classifier(h[:, 0]) + self.model.distillation_classifier(h[:, 1])) / 2
        return self.model.classifier(h[:, 0])

    @contextlib.contextmanager
    def eager_attention(self) -> Iterator[None]:
        configs = {id(m.config): m.config for m in self.model.modules() if hasattr(m, "config")}
        with set_attributes([(c, "_attn_implementation", "eager") for c in configs.values()]):
            yield

    def block_parts(self, index: int) -> BlockParts:
        layer = self.blocks()[index]
        att = layer.attention
        q = _first(att, "q_proj", "attention.query")
        k = _first(att, "k_proj", "attention.key")
        v = _first(att, "v_proj", "attention.value")
        w, b = qkv_from_linears(q, k, v)
        heads = int(self.model.config.num_attention_heads)
        return BlockParts(
            norm1=layer.layernorm_before, qkv_weight=w, qkv_bias=b, num_heads=heads,
            scale=(q.out_features // heads) ** -0.5, proj=_first(att, "o_proj", "output.dense"),
            norm2=layer.layernorm_after, fc1=_first(layer, "mlp.fc1", "intermediate.dense"),
            act=_first(layer, "mlp.activation_fn", "intermediate.intermediate_act_fn"),
            fc2=_first(layer, "mlp.fc2", "output.dense"),
        )

    def embed_parts(self) -> EmbedParts:
        emb = self.backbone.embeddings
        size = self._native_size()

        def prefix_and_pos(tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
            B = tokens.shape[0]
            prefix = [emb.cls_token.expand(B, -1, -1)]
            if hasattr(emb, "distillation_token"):
                prefix.append(emb.distillation_token.expand(B, -1, -1))
            u = torch.cat([*prefix, tokens], 1)
            ph, pw = emb.patch_embeddings.projection.kernel_size
            h, w = grid[0] * ph, grid[1] * pw
            pos = emb.position_embeddings if (h, w) == size else emb.interpolate_pos_encoding(u, h, w)
            return u, pos.expand(B, -1, -1)

        return EmbedParts(proj=emb.patch_embeddings.projection, prefix_and_pos=prefix_and_pos)

    def head_parts(self) -> HeadParts:
        if self.teacher:
            heads = [self.model.cls_classifier, self.model.distillation_classifier]
        else:
            heads = [self.model.classifier]
        return HeadParts(norm=self.backbone.layernorm, pool="token_distilled" if self.teacher else "token",
                         fc_norm=None, heads=heads)
