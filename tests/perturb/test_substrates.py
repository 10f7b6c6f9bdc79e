"""Substrates: values, seeding, broadcasting and errors."""

import pytest
import torch

from xvit.perturb import Black, Blur, GaussianNoise, MeanColour, UniformNoise, black_value, get_substrate
from xvit.utils.filters import gaussian_blur

X = torch.randn(2, 3, 8, 8)


def test_deterministic_fills():
    assert torch.equal(MeanColour().image(X), torch.zeros_like(X))
    black = Black((0.2, 0.4, 0.6), (0.5, 0.25, 0.2)).image(X)
    assert black[1, :, 3, 3].tolist() == pytest.approx([-0.4, -1.6, -3.0])
    assert torch.equal(Blur(kernel="truncated", padding="reflect").image(X),
                       gaussian_blur(X, 11, 5.0, kernel="truncated", padding="reflect"))
    assert torch.equal(get_substrate(torch.ones(3, 1, 1)).image(X), torch.ones_like(X))
    assert get_substrate("blur").kernel == "folded"


def test_noise_is_seeded_per_mask_index():
    fill = torch.zeros(3, 3, 8, 8)
    noise = UniformNoise(seed=1).rows(fill, torch.tensor([4, 7, 4]))
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert 0 <= float(noise.min()) and float(noise.max()) < 1
    assert torch.equal(UniformNoise(seed=1).rows(fill[:1], torch.tensor([7]))[0], noise[1])
    assert not torch.equal(UniformNoise(seed=2).rows(fill[:1], torch.tensor([7]))[0], noise[1])
    additive = GaussianNoise(0.1, additive=True, seed=0)
    rows = additive.rows(additive.image(X), torch.tensor([0, 1]))
    plain = GaussianNoise(0.1, seed=0).rows(MeanColour().image(X), torch.tensor([0, 1]))
    torch.testing.assert_close(rows - X, plain)


def test_errors_say_what_to_pass():
    with pytest.raises(ValueError, match="channels"):
        black_value((0.5,), (0.5,), X)
    with pytest.raises(ValueError, match="needs parameters"):
        get_substrate("black")
    with pytest.raises(ValueError, match="Reflect padding"):
        Blur(padding="reflect").image(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="broadcast"):
        get_substrate(torch.zeros(2, 8, 8)).image(X)
