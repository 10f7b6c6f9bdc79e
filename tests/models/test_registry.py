"""The model-variant registry: the built-in ViT is a variant, and a registered variant is built, saved, loaded,
explained and trained with no change elsewhere."""

import json
import shutil

import pytest
import torch

from tests.models.toy_variants import HalfLogitViT, OpaqueViT, registered
from xvit.adapters import UnsupportedModelError, get_adapter
from xvit.adapters.timm import BuiltinViTAdapter
from xvit.models import (
    Preprocessing,
    VisionTransformer,
    bundled_model_dir,
    bundled_models,
    create_model,
    create_vit,
    get_variant,
    load_model,
    save_checkpoint,
    variant_of,
    variants,
)

PREP = Preprocessing(size=(32, 32))


def test_the_builtin_vit_is_the_registered_variant_vit():
    info = variants()["vit"]
    assert info["citation"].startswith("Dosovitskiy et al.") and "arXiv:2010.11929" in info["citation"]
    assert info["presets"] == ["nano", "tiny", "small", "base"] and info["default_preset"] == "tiny"
    assert info["vit_compatible"] is True and info["model_class"] == "xvit.models.vit.VisionTransformer"
    torch.manual_seed(0)
    built = create_model("vit", "nano", img_size=32, num_classes=3)
    torch.manual_seed(0)
    reference = create_vit("nano", img_size=32, num_classes=3)
    assert type(built) is VisionTransformer and variant_of(built).name == "vit"
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), reference.state_dict().values()))
    assert create_model().config.embed_dim == 192  # default preset "tiny"
    with pytest.raises(ValueError, match="Unknown vit preset 'huge'"):
        create_model("vit", "huge")
    with pytest.raises(KeyError, match="Unknown model variant 'vti'. Did you mean 'vit'"):
        get_variant("vti")


def test_checkpoints_record_the_arch_and_ones_without_it_default_to_vit(tmp_path):
    archs = {}
    for name in bundled_models():
        config = json.loads((bundled_model_dir(name) / "config.json").read_text())
        archs[name] = config.get("arch", "vit")  # the oldest checkpoints predate the field
        assert variant_of(load_model(name)).name == archs[name]
    assert archs["shapes-vit-tiny"] == "vit" and archs["shapes-vit-tiny-svda"] == "svda"
    old = shutil.copytree(bundled_model_dir("shapes-vit-tiny"), tmp_path / "before-the-registry")
    config = json.loads((old / "config.json").read_text())
    config.pop("arch", None)  # what checkpoints written before the registry existed hold
    (old / "config.json").write_text(json.dumps(config))
    assert variant_of(load_model(str(old))).name == "vit"
    path = save_checkpoint(create_vit("nano", img_size=32, num_classes=3), tmp_path / "ckpt", preprocessing=PREP,
                           class_names=["a", "b", "c"])
    assert json.loads((path / "config.json").read_text())["arch"] == "vit"


def test_a_registered_variant_round_trips_and_is_explained_by_the_builtin_adapter(tmp_path):
    with registered("half-logit-vit", HalfLogitViT, vit_compatible=True):
        assert variants()["half-logit-vit"]["vit_compatible"] is True
        torch.manual_seed(0)
        model = create_model("half-logit-vit", "nano", img_size=32, num_classes=3).eval()
        path = save_checkpoint(model, tmp_path / "ckpt", preprocessing=PREP, class_names=["a", "b", "c"])
        assert json.loads((path / "config.json").read_text())["arch"] == "half-logit-vit"
        loaded = load_model(path)
        assert type(loaded) is HalfLogitViT
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
        assert isinstance(get_adapter(loaded), BuiltinViTAdapter)
    with pytest.raises(ValueError, match="variant 'half-logit-vit', which is not registered"):
        load_model(path)


def test_only_registered_vit_compatible_classes_get_the_builtin_adapter(tmp_path):
    with registered("opaque-vit", OpaqueViT, vit_compatible=False):
        opaque = create_model("opaque-vit", "nano", img_size=32, num_classes=3)
        assert not BuiltinViTAdapter.matches(opaque)
        with pytest.raises(UnsupportedModelError, match="no adapter matches"):
            get_adapter(opaque)
    unregistered = HalfLogitViT(create_vit("nano", img_size=32, num_classes=3).config)
    assert variant_of(unregistered) is None and not BuiltinViTAdapter.matches(unregistered)
    with pytest.raises(ValueError, match="HalfLogitViT is not one"):
        save_checkpoint(unregistered, tmp_path / "ckpt", preprocessing=PREP, class_names=["a", "b", "c"])


def test_registering_a_taken_name_or_a_missing_default_preset_fails():
    with pytest.raises(ValueError, match="already registered"), registered("vit", HalfLogitViT, True):
        pass
    from xvit.models import ViTConfig, register_model

    with pytest.raises(ValueError, match="default_preset 'huge'"):
        register_model("x", config_class=ViTConfig, citation="-", presets={"a": {}}, default_preset="huge")(OpaqueViT)
