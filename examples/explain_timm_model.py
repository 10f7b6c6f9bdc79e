"""Explain a timm VisionTransformer with xvit, offline.

No pretrained timm weights can be downloaded here, so the script builds timm's own ``VisionTransformer`` with the
architecture of the bundled ``shapes-vit-tiny`` and loads the bundled weights into it by parameter name (xvit's
built-in ViT uses timm's parameter names, so ``load_state_dict(strict=True)`` takes them as they are). With network
access, ``timm.create_model("vit_small_patch16_224", pretrained=True)`` works the same way.

    python examples/explain_timm_model.py --n 4 --out out/examples/timm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import xvit

xvit.ensure_torchvision_importable()  # before timm is imported: torchvision next to the CPU build of torch

import timm  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from xvit.data import make_shapes  # noqa: E402
from xvit.models import bundled_model_dir, preprocessing_for  # noqa: E402
from xvit.viz import comparison_grid, save_grid  # noqa: E402


def bundled_weights_in_timm(name: str = "shapes-vit-tiny") -> tuple[torch.nn.Module, list[str]]:
    """timm's VisionTransformer with the architecture and weights of a bundled xvit model, and its class names."""
    directory = bundled_model_dir(name)
    config = json.loads((directory / "config.json").read_text())
    arch = config["model"]
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=arch["img_size"], patch_size=arch["patch_size"], in_chans=arch["in_chans"],
        num_classes=arch["num_classes"], embed_dim=arch["embed_dim"], depth=arch["depth"],
        num_heads=arch["num_heads"], mlp_ratio=arch["mlp_ratio"], qkv_bias=arch["qkv_bias"],
        class_token=arch["class_token"], reg_tokens=arch["reg_tokens"], global_pool=arch["global_pool"],
        no_embed_class=arch["no_embed_class"])
    model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
    return model.eval(), config["class_names"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="test images to explain (default: 8)")
    parser.add_argument("--out", type=Path, default=Path("out/examples/timm"), help="output folder")
    args = parser.parse_args()

    model, class_names = bundled_weights_in_timm()
    reference = xvit.load_model("shapes-vit-tiny")
    print(f"model: {type(model).__module__}.{type(model).__name__} with the bundled shapes-vit-tiny weights "
          f"({sum(p.numel() for p in model.parameters()):,} parameters)")

    # The timm model carries no preprocessing config of its own for these weights: use the bundled model's.
    batch = make_shapes("single", args.n, split="test")
    arrays = [image.permute(1, 2, 0).numpy() for image in batch.images]
    x, images = xvit.load_images(arrays, preprocessing_for(reference))

    with torch.no_grad():
        gap = (model(x) - reference(x)).abs().max().item()
    print(f"largest logit difference to xvit's own ViT: {gap:.2e}")

    explanations = {}
    for method in ("rollout", "transformer_attribution", "attnlrp"):
        with xvit.Explainer(model, method=method) as explainer:
            explanations[method] = explainer(x)
    predicted = explanations["rollout"].logits.argmax(-1)
    accuracy = (predicted == batch.labels).float().mean().item()
    print(f"accuracy on {args.n} test images: {accuracy:.2f}")
    for i in range(args.n):
        print(f"image {i}: true {class_names[batch.labels[i]]:<9} predicted {class_names[predicted[i]]:<9}")

    args.out.mkdir(parents=True, exist_ok=True)
    grid = save_grid(comparison_grid(images, explanations, class_names=class_names), args.out / "timm_grid.png")
    print(f"comparison grid: {grid}")


if __name__ == "__main__":
    main()
