import math

import pytest
import torch

from xvit.evaluate import Conservation, conservation_scores


def affine(x):
    """Two logits: y_0 = 2·Σx + 1, y_1 = -Σx."""
    s = x.flatten(1).sum(1)
    return torch.stack([2 * s + 1, -s], 1)


X = torch.ones(1, 3, 1, 1)  # y_0 = 7, y_1 = -3
T0 = torch.tensor([0])


def test_ratio_against_the_logit_and_the_one_hot_start():
    relevance = 2 * X  # gradient x input: sums to y_0 - bias = 6
    assert conservation_scores(affine, X, relevance, T0).value == pytest.approx(6 / 7)
    assert conservation_scores(affine, X, relevance, T0, start="one").value == pytest.approx(6.0)
    r = conservation_scores(affine, X, -X, torch.tensor([1]))
    assert r.value == pytest.approx(1.0) and r.per_image["logit"].item() == pytest.approx(-3.0)
    assert r.higher_is_better is None and r.forward_passes == 1


def test_completeness_gap_with_a_baseline():
    exact = conservation_scores(affine, X, 2 * X, T0, baselines=torch.zeros(1, 3, 1, 1))
    assert exact.per_image["completeness_gap"].item() == pytest.approx(0.0, abs=1e-7)
    assert exact.summary["completeness_pass"] == 1.0 and exact.forward_passes == 2
    off = conservation_scores(affine, X, 2.2 * X, T0, baselines=torch.zeros(1, 3, 1, 1))
    assert off.summary["completeness_gap"] == pytest.approx(0.1)  # |6.6 - 6| / 6
    assert off.summary["completeness_pass"] == 0.0


def test_baselines_must_be_given_for_every_batch():
    m = Conservation()
    m.update(affine, X, 2 * X, T0, baselines=torch.zeros(1, 3, 1, 1))
    m.update(affine, X, 2 * X, T0)
    with pytest.raises(RuntimeError, match="always"):
        m.compute()


def test_zero_logit_gives_a_non_finite_ratio_and_is_left_out_of_the_mean():
    x = torch.cat([X, torch.full((1, 3, 1, 1), -1 / 6)])  # y_0 = 0 for the second image
    r = conservation_scores(affine, x, 2 * x, torch.tensor([0, 0]))
    assert not math.isfinite(r.scores[1]) and r.n == 1 and r.mean == pytest.approx(6 / 7)
