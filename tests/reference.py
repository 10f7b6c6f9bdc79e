"""Access to the reference fixtures in ../shared/reference (see their READMEs)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from xvit.models.vit import VisionTransformer, ViTConfig

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
CHEFER = ROOT / "chefer2021"
ATTNLRP = ROOT / "attnlrp"
WEIGHTS = CHEFER / "vit_tiny_p16_d96_l4_h3_c10_seed20240611.safetensors"
REFERENCE_CONFIG = dict(img_size=224, patch_size=16, embed_dim=96, depth=4, num_heads=3, num_classes=10)


def available() -> bool:
    return WEIGHTS.is_file()


def reference_model(dtype: torch.dtype = torch.float32) -> VisionTransformer:
    model = VisionTransformer(ViTConfig(**REFERENCE_CONFIG))
    model.load_state_dict(load_file(str(WEIGHTS)), strict=True)
    return model.to(dtype).eval()


def inputs(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    data = load_file(str(CHEFER / "inputs.safetensors"))
    return [data[f"input_{i}"].to(dtype) for i in range(4)]


def outputs(which: str) -> dict[str, torch.Tensor]:
    return load_file(str((CHEFER if which == "chefer" else ATTNLRP) / "outputs.safetensors"))


def assert_close_scaled(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4, atol_scale: float = 1e-5,
                        equal_nan: bool = False) -> None:
    """|ours − ref| ≤ atol + rtol·|ref| with atol = atol_scale · max|ref| (floored at 1e-12)."""
    ours = ours.detach().double().reshape(ref.shape)
    ref = ref.double()
    atol = max(atol_scale * ref.abs().max().item(), 1e-12)
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol, equal_nan=equal_nan)
