"""The window-free ViT (WinfT): windows from a square or a window file, hard and soft modes, checkpoints, token
removal, clear errors, and the analysis -> window file -> training path."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import xvit
from xvit.adapters import get_adapter
from xvit.adapters.timm import BuiltinViTAdapter
from xvit.analysis.erf import ResponsiveField
from xvit.capture import record
from xvit.models import Preprocessing, create_model, load_model, save_checkpoint, variants
from xvit.models.winft import WinfT, square_window_mask

PREP = Preprocessing(size=(32, 32))


def _winft(**kw):
    torch.manual_seed(0)
    return create_model("winft", "nano", img_size=32, patch_size=8, num_classes=3, embed_dim=32, depth=2,
                        num_heads=2, **kw).eval()


def _window_file(tmp_path, model=None):
    """A window file written by the erf analysis from a (random) reference ViT."""
    ref = model or create_model("vit", "nano", img_size=32, patch_size=8, num_classes=3, embed_dim=32, depth=2,
                                num_heads=2).eval()
    result = xvit.analyse(ref, torch.randn(4, 3, 32, 32), "erf", method="jacobian", probes=4, tau=0.6)
    return ResponsiveField.write_window_mask(result, tmp_path / "windows")


def test_winft_is_a_vit_compatible_registered_variant():
    info = variants()["winft"]
    assert info["vit_compatible"] and "arXiv:2203.05922" in info["citation"]
    model = _winft(window=3)
    assert isinstance(get_adapter(model), BuiltinViTAdapter)
    # same initial weights as the built-in ViT of the same seed: only the windows differ
    torch.manual_seed(0)
    vit = create_model("vit", "nano", img_size=32, patch_size=8, num_classes=3, embed_dim=32, depth=2, num_heads=2)
    shared = vit.state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in shared.items())


def test_hard_window_zeroes_attention_outside_it_on_both_attention_paths():
    model = _winft(window=3)
    x = torch.randn(2, 3, 32, 32)
    adapter = get_adapter(model)
    with adapter.eager_attention(), torch.no_grad():
        rec = record(adapter, x, None, attention=True)
        explicit = model(x)
    fused = model(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    outside = ~square_window_mask((4, 4), 3)
    for a in rec.attentions:
        assert a[:, :, 1:, 1:][..., outside].abs().max() == 0  # patch rows: only inside the window
        assert bool((a[:, :, 0] > 0).all()) and bool((a[:, :, 1:, 0] > 0).all())  # CLS sees all, all see CLS
    # without the window the same weights attend outside it
    wide = _winft(window=7)
    with get_adapter(wide).eager_attention(), torch.no_grad():
        assert record(get_adapter(wide), x, None, attention=True).attentions[0][:, :, 1:, 1:][..., outside].max() > 0


def test_soft_mode_adds_a_learnable_log_kernel_bias(tmp_path):
    path = _window_file(tmp_path)
    model = _winft(window_mask=str(path), mode="soft")
    kernel = load_file(str(path))["kernel"]
    attn = model.blocks[1].attn
    h = w = 4
    i, j = 5, 10  # (1, 1) and (2, 2): offset (1, 1)
    expected = torch.log(kernel[1, h - 1 + 1, w - 1 + 1] + 1e-6)
    torch.testing.assert_close(attn.patch_bias()[:, i, j], expected.expand(2))
    assert attn.beta.requires_grad and torch.equal(attn.beta.detach(), torch.ones(2))
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    first = model.blocks[0].attn.beta  # (the last block's patch rows do not reach the class token)
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_checkpoint_round_trip_restores_the_windows_without_the_window_file(tmp_path, mode):
    path = _window_file(tmp_path)
    model = _winft(window_mask=str(path), mode=mode, mask_source="erf_mask")
    with torch.no_grad():
        for b in model.blocks:
            if mode == "soft":
                b.attn.beta.mul_(1.5)  # a trained beta must come back
    ckpt = save_checkpoint(model, tmp_path / "ckpt", preprocessing=PREP, class_names=["a", "b", "c"])
    path.unlink()  # the checkpoint carries the windows
    loaded = load_model(ckpt)
    assert type(loaded) is WinfT and json.loads((ckpt / "config.json").read_text())["arch"] == "winft"
    assert torch.equal(loaded.windows(), model.windows())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    if mode == "hard":  # the ERF masks of the file, not a default
        assert loaded.mean_window_size() < 16


def test_window_file_masks_match_what_the_model_uses(tmp_path):
    path = _window_file(tmp_path)
    stored = load_file(str(path))
    model = _winft(window_mask=str(path))
    eye = torch.eye(16, dtype=torch.bool)
    assert torch.equal(model.windows(), stored["kernel_mask"].bool() | eye)
    erf_model = _winft(window_mask=str(path), mask_source="erf_mask")
    assert torch.equal(erf_model.windows(), stored["erf_mask"].bool() | eye)


def test_token_removal_keeps_each_patch_window():
    model = _winft(window=3)
    attn = model.blocks[0].attn
    index = torch.tensor([[0, 5, 15], [2, 3, 9]])
    full = attn.logit_bias(1, 17)[0, 0, 1:, 1:]
    with model.kept_patches(index):
        short = attn.logit_bias(2, 4)
    assert attn.kept is None  # restored
    for b in range(2):
        torch.testing.assert_close(short[b, 0, 1:, 1:], full[index[b]][:, index[b]])
        assert torch.equal(short[b, 0, 0], torch.zeros(4))
    adapter = get_adapter(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(adapter.forward_tokens(x, torch.ones(2, 16, dtype=torch.bool)), model(x))
        adapter.forward_tokens(x, index)  # shortened sequences run with the kept windows


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one of window"):
        _winft()
    with pytest.raises(ValueError, match="exactly one of window"):
        _winft(window=3, window_mask="x.safetensors")
    with pytest.raises(ValueError, match="mode must be 'hard' or 'soft'"):
        _winft(window=3, mode="medium")
    with pytest.raises(ValueError, match="window must be a positive int"):
        _winft(window=0)
    with pytest.raises(ValueError, match="does not exist; write one with `xvit analyse erf"):
        _winft(window_mask=str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        _winft(window_mask=str(bad))
    other = tmp_path / "other.safetensors"
    save_file({"kernel": torch.ones(2, 5, 5), "kernel_mask": torch.ones(2, 9, 9, dtype=torch.uint8),
               "erf_mask": torch.ones(2, 9, 9, dtype=torch.uint8)}, str(other), metadata={"grid": "[3, 3]"})
    with pytest.raises(ValueError, match=r"estimated for a \(3, 3\) patch grid"):
        _winft(window_mask=str(other))
    with pytest.raises(ValueError, match="defined on 16 patch tokens; got a sequence of 36"):
        _winft(window=3)(torch.randn(1, 3, 48, 48))


def test_erf_cli_writes_a_window_file_that_trains_a_winft(tmp_path):
    from xvit.cli import main

    ref = create_model("vit", "nano", img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2, num_heads=2)
    ckpt = save_checkpoint(ref.eval(), tmp_path / "ref", preprocessing=PREP, class_names=[str(i) for i in range(10)])
    out = tmp_path / "erf"
    assert main(["analyse", "erf", "xvit-shapes:single:train:4", "--model", str(ckpt), "--out", str(out),
                 "--param", "erf.method=jacobian", "--param", "erf.probes=2", "--batch-size", "2"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["meta"]["images"] == 4 and (out / "figure.png").is_file()
    mask = out / "window_mask.safetensors"
    assert main(["train", "--arch", "winft", "--model-arg", f"window_mask={mask}", "--model-arg", "mode=soft",
                 "--data", "xvit-shapes:single", "--img-size", "32", "--patch-size", "8", "--preset", "nano",
                 "--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--epochs", "1", "--train-size", "32",
                 "--val-size", "16", "--test-size", "16", "--batch-size", "16", "--no-bf16", "--no-progress",
                 "--out", str(tmp_path / "winft")]) == 0
    trained = load_model(tmp_path / "winft")
    assert type(trained) is WinfT and trained.config.mode == "soft"
