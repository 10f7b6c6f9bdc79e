"""Mask stacks: validation, lazily built deletion/insertion states, ranking."""

import pytest
import torch

from xvit.perturb import RankMasks, TensorMasks, as_masks, pixel_ranks


def test_ranks_break_ties_on_the_flat_index():
    assert pixel_ranks(torch.tensor([[[1.0, 3.0], [3.0, 1.0]]])).tolist() == [[2, 0, 1, 3]]


def test_rank_states_hide_or_reveal_the_top_ranked_entries():
    scores = torch.tensor([[[0.9, 0.1], [0.8, 0.2]]])  # ranks 0, 3 / 1, 2
    counts = torch.tensor([0, 1, 3, 4])
    image, index = torch.zeros(4, dtype=torch.long), torch.arange(4)
    hide = RankMasks.from_scores(scores, counts).rows(image, index)
    assert hide.shape == (4, 2, 2) and hide.dtype == torch.bool
    assert hide.flatten(1).tolist() == [[True] * 4, [False, True, True, True], [False, True, False, False],
                                        [False] * 4]
    show = RankMasks.from_scores(scores, counts, reveal=True).rows(image, index)
    assert torch.equal(show, ~hide)
    assert RankMasks.from_scores(scores, counts).kept_counts(2).tolist() == [[4, 3, 1, 0]] * 2
    assert RankMasks.from_scores(scores, counts, reveal=True).kept_counts(1).tolist() == [[0, 1, 3, 4]]


def test_tensor_masks_shared_or_per_image():
    shared = TensorMasks(torch.rand(5, 4, 4), batch=2, shape=(4, 4))
    per_image = TensorMasks(torch.rand(2, 5, 4, 4) > 0.5, batch=2, shape=(4, 4))
    assert (shared.per_image, shared.num_masks, shared.binary) == (False, 5, False)
    assert (per_image.per_image, per_image.num_masks, per_image.binary) == (True, 5, True)
    rows = per_image.rows(torch.tensor([1, 0]), torch.tensor([3, 3]))
    assert torch.equal(rows, per_image.masks[[1, 0], [3, 3]])
    assert torch.equal(per_image.kept_counts(2), per_image.masks.flatten(2).sum(-1))
    assert shared.rows(torch.tensor([1]), torch.tensor([2])).shape == (1, 4, 4)


@pytest.mark.parametrize("masks,match", [
    (torch.rand(4, 4), r"\(M, 4, 4\)"),
    (torch.rand(3, 5, 4, 4), r"\(2, M, 4, 4\)"),
    (torch.full((1, 4, 4), 1.5), r"\[0, 1\]"),
    (torch.ones(1, 4, 4, dtype=torch.long), "bool or float"),
])
def test_bad_masks_get_clear_errors(masks, match):
    with pytest.raises(ValueError, match=match):
        as_masks(masks, 2, (4, 4))
    with pytest.raises(ValueError, match="input needs"):
        as_masks(RankMasks.from_scores(torch.rand(2, 3, 3), torch.tensor([0])), 2, (4, 4))
