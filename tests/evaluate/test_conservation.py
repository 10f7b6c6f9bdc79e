import math
from types import SimpleNamespace

import pytest
import torch

from xvit.evaluate import Conservation, NotApplicable, conservation_scores
from xvit.result import Explanation


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


def _explanation(raw, **meta):
    b = raw.shape[0]
    return Explanation(raw, raw, torch.zeros(b, 1, dtype=torch.long), torch.zeros(b, 3), "m", {}, meta)


def test_in_a_run_the_quantity_is_read_from_the_explanation():
    raw = torch.ones(2, 1, 2, 2)
    lrp = Conservation()
    lrp.update_from(SimpleNamespace(explanation=_explanation(raw, relevance_sum=torch.tensor([[4.0], [2.0]]),
                                                             explained_logit=torch.tensor([[8.0], [1.0]])),
                                    relevance_start=None))
    r = lrp.compute()
    assert r.scores.tolist() == [0.5, 2.0] and r.ideal == 1.0 and r.forward_passes == 0
    assert r.summary == {"quantity": "ratio", "start": "logit"}

    ig = Conservation(threshold=0.3)
    ig.update_from(SimpleNamespace(explanation=_explanation(raw, completeness_gap=torch.tensor([[1.0], [-0.5]])),
                                   relevance_start=None))
    r = ig.compute()  # Σ R = 4, Δ = Σ R − gap: |gap| / |Δ|
    assert r.scores.tolist() == pytest.approx([1 / 3, 0.5 / 4.5]) and r.higher_is_better is False
    assert r.summary == {"quantity": "completeness_gap", "completeness_pass": 0.5, "threshold": 0.3}

    one_hot = Conservation()
    one_hot.update_from(SimpleNamespace(explanation=_explanation(raw), relevance_start="one_hot"))
    assert one_hot.compute().scores.tolist() == [4.0, 4.0] and one_hot.compute().summary["start"] == "one-hot"
    with pytest.raises(ValueError, match="one method per metric"):
        one_hot.update_from(SimpleNamespace(explanation=_explanation(raw, completeness_gap=torch.zeros(2, 1)),
                                            relevance_start=None))
    with pytest.raises(NotApplicable, match="no conserved relevance"):
        Conservation().update_from(SimpleNamespace(explanation=_explanation(raw), relevance_start=None))
