"""The chance baseline ``random``: seeded, per image and class, independent of the batch."""

import pytest
import torch

import xvit
from tests.tiny_models import SIZE, make


@pytest.fixture(scope="module")
def model():
    return make("xvit")


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_maps_are_uniform_values_at_patch_resolution(model, images):
    e = xvit.explain(model, images, "random", target=[1, 2, 3])
    grid = SIZE // 8
    assert e.raw.shape == (3, 1, grid, grid)
    assert ((e.raw >= 0) & (e.raw < 1)).all()
    assert len(torch.unique(e.raw)) == e.raw.numel()  # no two patches share a value
    assert not xvit.methods()["random"]["signed"]


def test_a_map_depends_on_seed_image_and_class_only(model, images):
    e = xvit.explain(model, images, "random", target=[[0, 1]] * 3).raw
    again = xvit.explain(model, images, "random", target=[[0, 1]] * 3).raw
    torch.testing.assert_close(again, e, rtol=0, atol=0)
    # the same image in another batch, at another position, gives the same map
    reordered = xvit.explain(model, images[[2, 0]], "random", target=[[0, 1]] * 2).raw
    torch.testing.assert_close(reordered[0], e[2], rtol=0, atol=0)
    torch.testing.assert_close(reordered[1], e[0], rtol=0, atol=0)
    assert not torch.equal(e[0, 0], e[0, 1])  # another class, another map
    assert not torch.equal(e[0, 0], e[1, 0])  # another image, another map
    other_seed = xvit.explain(model, images, "random", target=[[0, 1]] * 3, seed=1).raw
    assert not torch.equal(other_seed, e)


def test_predicted_class_is_explained_and_logits_are_the_models(model, images):
    e = xvit.explain(model, images, "random")
    with torch.no_grad():
        logits = model(images)
    torch.testing.assert_close(e.logits, logits)
    assert torch.equal(e.targets[:, 0], logits.argmax(-1))


def test_seed_must_be_a_non_negative_integer(model, images):
    with pytest.raises(ValueError, match="seed"):
        xvit.explain(model, images, "random", seed=-1)
