"""Explain a Hugging Face ViTForImageClassification with xvit, offline.

No hub weights can be downloaded here, so the script builds a ``ViTForImageClassification`` with the architecture
of the bundled ``shapes-vit-tiny`` and copies the bundled weights into it (the mapping below covers the parameter
names of transformers 4.x and 5.x). It then checks that the copy computes the same logits and that xvit explains
both the same way: the maps of a method on the Hugging Face model equal those on xvit's own ViT. With network
access, ``ViTForImageClassification.from_pretrained("google/vit-base-patch16-224")`` works the same way.

    python examples/explain_hf_model.py --n 4 --out out/examples/hf
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import xvit

xvit.ensure_torchvision_importable()  # before transformers is imported: torchvision next to the CPU build of torch

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification  # noqa: E402

from xvit.data import make_shapes  # noqa: E402
from xvit.models import bundled_model_dir, preprocessing_for  # noqa: E402
from xvit.viz import comparison_grid, save_grid  # noqa: E402

# Hugging Face names of one encoder block's parameters (prefix, q, k, v, output, LN before, LN after, fc1, fc2).
BLOCK_NAMES = {
    "transformers 5": ("vit.layers.{i}.", "attention.q_proj", "attention.k_proj", "attention.v_proj",
                       "attention.o_proj", "layernorm_before", "layernorm_after", "mlp.fc1", "mlp.fc2"),
    "transformers 4": ("vit.encoder.layer.{i}.", "attention.attention.query", "attention.attention.key",
                       "attention.attention.value", "attention.output.dense", "layernorm_before", "layernorm_after",
                       "intermediate.dense", "output.dense"),
}


def bundled_weights_in_hf(name: str = "shapes-vit-tiny") -> ViTForImageClassification:
    """A ViTForImageClassification with the architecture, weights and class names of a bundled xvit model."""
    directory = bundled_model_dir(name)
    config = json.loads((directory / "config.json").read_text())
    arch, names = config["model"], config["class_names"]
    dim = arch["embed_dim"]
    model = ViTForImageClassification(ViTConfig(
        hidden_size=dim, num_hidden_layers=arch["depth"], num_attention_heads=arch["num_heads"],
        intermediate_size=int(dim * arch["mlp_ratio"]), image_size=arch["img_size"], patch_size=arch["patch_size"],
        num_channels=arch["in_chans"], qkv_bias=arch["qkv_bias"], layer_norm_eps=arch["layer_norm_eps"],
        hidden_act="gelu", num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}))
    ours = load_file(str(directory / "model.safetensors"))
    theirs = {"vit.embeddings.cls_token": ours["cls_token"], "vit.embeddings.position_embeddings": ours["pos_embed"],
              "vit.embeddings.patch_embeddings.projection.weight": ours["patch_embed.proj.weight"],
              "vit.embeddings.patch_embeddings.projection.bias": ours["patch_embed.proj.bias"],
              "vit.layernorm.weight": ours["norm.weight"], "vit.layernorm.bias": ours["norm.bias"],
              "classifier.weight": ours["head.weight"], "classifier.bias": ours["head.bias"]}
    expected = model.state_dict().keys()
    version = next(v for v, n in BLOCK_NAMES.items() if n[0].format(i=0) + n[1] + ".weight" in expected)
    prefix, q, k, v, out, ln1, ln2, fc1, fc2 = BLOCK_NAMES[version]
    for i in range(arch["depth"]):
        p, b = prefix.format(i=i), f"blocks.{i}."
        for suffix in ("weight", "bias"):
            for hf_name, chunk in zip((q, k, v), ours[f"{b}attn.qkv.{suffix}"].chunk(3)):  # timm stacks q, k, v
                theirs[f"{p}{hf_name}.{suffix}"] = chunk
            for hf_name, own in ((out, "attn.proj"), (ln1, "norm1"), (ln2, "norm2"), (fc1, "mlp.fc1"),
                                 (fc2, "mlp.fc2")):
                theirs[f"{p}{hf_name}.{suffix}"] = ours[f"{b}{own}.{suffix}"]
    model.load_state_dict(theirs, strict=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="test images to explain (default: 8)")
    parser.add_argument("--out", type=Path, default=Path("out/examples/hf"), help="output folder")
    args = parser.parse_args()

    model = bundled_weights_in_hf()
    reference = xvit.load_model("shapes-vit-tiny")
    print(f"model: transformers.{type(model).__name__} with the bundled shapes-vit-tiny weights "
          f"({sum(p.numel() for p in model.parameters()):,} parameters)")

    batch = make_shapes("single", args.n, split="test")
    arrays = [image.permute(1, 2, 0).numpy() for image in batch.images]
    x, images = xvit.load_images(arrays, preprocessing_for(reference))
    with torch.no_grad():
        gap = (model(x).logits - reference(x)).abs().max().item()
    print(f"largest logit difference to xvit's own ViT: {gap:.2e}")

    explanations = {}
    for method in ("rollout", "grad_attention_rollout", "attnlrp"):
        explanations[method] = xvit.explain(model, x, method=method)
        same = xvit.explain(reference, x, method=method)
        print(f"{method:<24} largest map difference to xvit's own ViT: "
              f"{(explanations[method].raw - same.raw).abs().max().item():.2e}")
    labels = [model.config.id2label[int(c)] for c in explanations["rollout"].targets[:, 0]]
    accuracy = (explanations["rollout"].targets[:, 0] == batch.labels).float().mean().item()
    print(f"accuracy on {args.n} test images: {accuracy:.2f}; explained classes: {', '.join(labels)}")

    args.out.mkdir(parents=True, exist_ok=True)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    grid = save_grid(comparison_grid(images, explanations, class_names=names), args.out / "hf_grid.png")
    print(f"comparison grid: {grid}")


if __name__ == "__main__":
    main()
