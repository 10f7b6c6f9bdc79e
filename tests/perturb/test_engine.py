"""The perturbation engine against hand-built loops, in pixel and token space."""

import pytest
import torch

from tests.tiny_models import make
from xvit.adapters import UnsupportedModelError, get_adapter
from xvit.adapters.base import ViTAdapter
from xvit.perturb import Black, GaussianNoise, Masks, RankMasks, score

B, M, H = 3, 4, 32


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, H, H, generator=g)
    masks = torch.rand(M, H, H, generator=g) > 0.5
    targets = torch.tensor([[0, 3], [1, 1], [4, 2]])
    return x, masks, targets


class Counting:
    """A model wrapper that records the batch size of every forward pass."""

    def __init__(self, model):
        self.model, self.sizes, self.inputs = model, [], []

    def __call__(self, x):
        self.sizes.append(x.shape[0])
        self.inputs.append(x)
        return self.model(x)


def test_pixel_masks_match_a_hand_loop_and_respect_batch_size():
    model = make("xvit")
    x, masks, targets = _setup()
    black = Black((0.5,) * 3, (0.25,) * 3)
    counting = Counting(model)
    out = score(counting, x, masks, targets, substrate=black, batch_size=5)
    assert out.shape == (B, M, 2) and max(counting.sizes) <= 5 and sum(counting.sizes) == B * M
    fill = torch.full((3, 1, 1), -2.0)
    for b in range(B):
        for m in range(M):
            probs = model(torch.where(masks[m], x[b], fill)[None]).softmax(1)[0]
            torch.testing.assert_close(out[b, m], probs[targets[b]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(score(model, x, masks, targets, substrate=black, batch_size=100), out,
                               rtol=1e-5, atol=1e-6)


def test_soft_per_image_masks_blend_with_the_substrate():
    model = make("xvit")
    x, _, targets = _setup()
    soft = torch.rand(B, M, H, H)
    out = score(model, x, soft, targets, readout="logit", batch_size=7)
    for b in range(B):
        ref = model(x[b] * soft[b][:, None])  # mean colour (0) substrate: x·M + 0·(1 − M)
        torch.testing.assert_close(out[b], ref[:, targets[b]], rtol=1e-5, atol=1e-5)


def test_readouts_and_an_all_ones_mask_reproduce_the_clean_model():
    model = make("xvit")
    x, _, targets = _setup()
    ones = torch.ones(1, H, H, dtype=torch.bool)
    logits = model(x)
    torch.testing.assert_close(score(model, x, ones, targets, readout="logit")[:, 0], logits.gather(1, targets))
    top1 = score(model, x, ones, targets, readout="top1")[:, 0]
    assert torch.equal(top1, (logits.argmax(1, keepdim=True) == targets).float())
    doubled = score(model, x, ones, targets, readout=lambda z, image: 2 * z)[:, 0]
    torch.testing.assert_close(doubled, 2 * logits.gather(1, targets))


def test_gaussian_noise_is_drawn_per_mask_and_independent_of_batching():
    # ViT-CX: s = p(x⊙M + ε⊙(1−M)) − p(x + ε⊙(1−M)) + p(x), the same ε in both terms.
    x, _, _ = _setup()
    soft = torch.rand(M, H, H)
    seen = {}
    for name, substrate in (("noise", GaussianNoise(0.1, seed=3)),
                            ("additive", GaussianNoise(0.1, additive=True, seed=3))):
        counting = Counting(lambda z: z.flatten(1)[:, :5])
        score(counting, x, soft, torch.zeros(B, 1, dtype=torch.long), substrate=substrate, batch_size=5)
        seen[name] = torch.cat(counting.inputs).view(B, M, 3, H, H)
    eps = (seen["noise"] - x[:, None] * soft[:, None]) / (1 - soft[:, None])
    torch.testing.assert_close(seen["additive"], x[:, None] + eps * (1 - soft[:, None]), rtol=1e-4, atol=1e-4)
    assert 0.08 < float(eps.std()) < 0.12
    torch.testing.assert_close(eps[0], eps[2], rtol=1e-3, atol=1e-3)  # same mask, same noise on every image
    # Another chunking and a single image give the same rows.
    again = Counting(lambda z: z.flatten(1)[:, :5])
    score(again, x[2:], soft, torch.zeros(1, 1, dtype=torch.long), substrate=GaussianNoise(0.1, seed=3),
          batch_size=1)
    assert torch.equal(torch.cat(again.inputs), seen["noise"][2])


def test_lazy_masks_are_built_per_chunk():
    class Recording(Masks):
        def __init__(self, inner):
            self.inner, self.num_masks, self.shape, self.sizes = inner, inner.num_masks, inner.shape, []

        binary = True

        def rows(self, image, index):
            self.sizes.append(len(image))
            return self.inner.rows(image, index)

        def kept_counts(self, batch):
            return self.inner.kept_counts(batch)

    x, _, targets = _setup()
    maps = torch.randn(B, H, H)
    states = Recording(RankMasks.from_scores(maps, torch.arange(0, H * H + 1, 64)))
    out = score(make("xvit"), x, states, targets, batch_size=4)
    assert out.shape == (B, 17, 2) and max(states.sizes) <= 4 and sum(states.sizes) == B * 17


@pytest.mark.parametrize("family", ["xvit_reg_avg", "timm_deit_distilled", "hf_deit_teacher"])
def test_token_masks_match_forward_tokens_row_by_row(family):
    model = make(family)
    adapter = get_adapter(model)
    x, _, targets = _setup()
    n = adapter.layout(x).num_patches
    g = torch.Generator().manual_seed(1)
    keep = torch.rand(B, M, n, generator=g) > 0.4  # per image, varying kept counts
    keep[..., 0] = True
    for at_block in (0, 1):
        out = score(model, x, keep, targets, space="token", readout="logit", batch_size=3, at_block=at_block)
        for b in range(B):
            for m in range(M):
                ref = adapter.forward_tokens(x[b:b + 1], keep[b, m][None], at_block)[0]
                torch.testing.assert_close(out[b, m], ref[targets[b]], rtol=1e-5, atol=1e-5)
    everything = torch.ones(1, n, dtype=torch.bool)
    torch.testing.assert_close(score(model, x, everything, targets, space="token", readout="logit")[:, 0],
                               adapter.forward(x).gather(1, targets), rtol=0, atol=0)


def test_token_rows_share_one_sequence_length_per_forward():
    model = make("xvit")
    lengths = []
    handle = model.blocks[0].register_forward_pre_hook(lambda mod, args: lengths.append(args[0].shape))
    x, _, targets = _setup()
    states = RankMasks.from_scores(torch.randn(B, 16), torch.tensor([0, 4, 8, 12]))  # token deletion curve
    out = score(model, x, states, targets, space="token", batch_size=5)
    handle.remove()
    # block_input runs the embedding only; each block-0 call is one chunk: the 3 rows of one kept count.
    assert out.shape == (B, 4, 2)
    assert sorted((s[0], s[1]) for s in lengths) == [(3, 5), (3, 9), (3, 13), (3, 17)]


def test_errors_name_the_problem():
    model = make("xvit")
    x, masks, targets = _setup()
    with pytest.raises(ValueError, match=r"\(M, 32, 32\)"):
        score(model, x, masks[:, :16], targets)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        score(model, x, masks.float() * 2, targets)
    with pytest.raises(ValueError, match="targets"):
        score(model, x, masks, targets[:, 0])
    with pytest.raises(ValueError, match="0..4"):
        score(model, x, masks, targets + 5)
    with pytest.raises(ValueError, match="binary"):
        score(model, x, torch.rand(2, 16), targets, space="token")
    with pytest.raises(ValueError, match="space"):
        score(model, x, masks, targets, space="latent")
    with pytest.raises(ValueError, match="Unknown substrate"):
        score(model, x, masks, targets, substrate="sepia")
    with pytest.raises(ValueError, match="readout"):
        score(model, x, masks, targets, readout="probit")
    with pytest.raises(ValueError, match="at_block"):
        score(model, x, torch.ones(1, 16, dtype=torch.bool), targets, space="token", at_block=3)
    with pytest.raises(ValueError, match="keeps no patch token"):
        score(make("xvit_reg_avg"), x, torch.zeros(1, 16, dtype=torch.bool), targets, space="token")


def test_an_adapter_without_token_removal_says_so():
    class PixelOnly(type(get_adapter(make("xvit")))):
        block_input = ViTAdapter.block_input

    adapter = PixelOnly(make("xvit"))
    x, _, targets = _setup()
    with pytest.raises(UnsupportedModelError, match="token removal"):
        score(adapter, x, torch.ones(1, 16, dtype=torch.bool), targets, space="token")
