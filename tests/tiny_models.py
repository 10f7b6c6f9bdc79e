"""Small randomly initialised models of every supported family (no downloads)."""

from __future__ import annotations

import torch

from xvit.models import create_model
from xvit.models.vit import create_vit

SIZE = 32


def _timm(name: str, **kw):
    import timm

    return timm.create_model(name, pretrained=False, num_classes=5, img_size=SIZE, patch_size=8, depth=2,
                             embed_dim=48, num_heads=3, **kw)


def _timm_svda():
    from xvit.models.svda import swap_in_svda

    return swap_in_svda(_timm("vit_tiny_patch16_224"), spectrum="softplus", spectrum_init_c=1.0)


def _hf_vit():
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                               intermediate_size=96, image_size=SIZE, patch_size=8, num_labels=5))


def _hf_deit(teacher: bool):
    from transformers import DeiTConfig, DeiTForImageClassification, DeiTForImageClassificationWithTeacher

    cls = DeiTForImageClassificationWithTeacher if teacher else DeiTForImageClassification
    return cls(DeiTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                          image_size=SIZE, patch_size=8, num_labels=5))


FACTORIES = {
    "xvit": lambda: create_vit("nano", img_size=SIZE, patch_size=8, num_classes=5, embed_dim=48, depth=2),
    "xvit_reg_avg": lambda: create_vit("nano", img_size=SIZE, patch_size=8, num_classes=5, embed_dim=48, depth=2,
                                       reg_tokens=2, global_pool="avg", class_token=False, no_embed_class=True),
    "timm_vit": lambda: _timm("vit_tiny_patch16_224"),
    "timm_deit_distilled": lambda: _timm("deit_tiny_distilled_patch16_224"),
    "timm_reg_avg_dynamic": lambda: _timm("vit_tiny_patch16_224", reg_tokens=4, global_pool="avg", fc_norm=True,
                                          dynamic_img_size=True, init_values=0.1),
    "xvit_svda": lambda: create_model("svda", "nano", img_size=SIZE, patch_size=8, num_classes=5, embed_dim=48,
                                      depth=2),
    "timm_svda": _timm_svda,
    "xvit_winft": lambda: create_model("winft", "nano", img_size=SIZE, patch_size=8, num_classes=5, embed_dim=48,
                                       depth=2, window=3),
    "hf_vit": _hf_vit,
    "hf_deit": lambda: _hf_deit(False),
    "hf_deit_teacher": lambda: _hf_deit(True),
}


def make(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = FACTORIES[name]()
    # Larger-than-default attention weights make attention clearly non-uniform, so maps differ per image.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim == 2 and any(k in n for k in ("qkv", "q_proj", "k_proj", "query", "key")):
                p.normal_(0, 0.3)
    return model.eval()
