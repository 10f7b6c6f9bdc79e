import numpy as np
import pytest
import torch

from xvit.evaluate import Segmentation, average_precision, segmentation_scores

from .stubs import data

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_hand_computed():
    # m = [0, .25, .75, 1], threshold 0.5 -> foreground {2, 3}; ground truth {1, 3}.
    maps = torch.tensor([[[0.0, 1.0], [3.0, 4.0]]])
    masks = torch.tensor([[[False, True], [False, True]]])
    r = segmentation_scores(maps, masks)
    assert r.summary["pixel_accuracy"] == pytest.approx(50.0)
    assert r.per_image["intersection"].tolist() == [[1, 1]] and r.per_image["union"].tolist() == [[3, 3]]
    assert r.summary["miou"] == pytest.approx(100 / 3)
    # Scores [1-m, m] = [1, .75, .25, 0, 0, .25, .75, 1] vs [1, 0, 1, 0, 0, 1, 0, 1]:
    # AP = 1/2 * 1 (threshold 1) + 1/2 * 4/6 (threshold .25) = 5/6.
    assert r.value == pytest.approx(500 / 6) and r.summary["map"] == r.value


def test_average_precision_equals_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = (torch.rand(8, 200, generator=g) * 10).round() / 10  # many ties
    targets = torch.rand(8, 200, generator=g) > 0.7
    targets[3] = False  # no positives: sklearn returns 0
    ours = average_precision(scores, targets)
    with pytest.warns(UserWarning):
        ref = [sklearn_metrics.average_precision_score(t.numpy(), s.numpy()) for s, t in zip(scores, targets,
                                                                                               strict=True)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-12)


def test_per_image_ap_equals_the_reference_recipe():
    d = data(n=6, size=8)
    r = segmentation_scores(d["maps"], d["masks"])
    ref = []
    for a, gt in zip(d["maps"].numpy(), d["masks"].numpy(), strict=True):
        m = ((a - a.min()) / (a.max() - a.min())).astype(np.float32)
        scores = np.concatenate([1 - m, m]).reshape(-1)
        labels = np.concatenate([~gt, gt]).reshape(-1)
        ref.append(100 * np.nan_to_num(sklearn_metrics.average_precision_score(labels, scores)))
    np.testing.assert_allclose(r.scores.numpy(), ref, rtol=0, atol=1e-9)


def test_miou_accumulates_intersections_over_the_dataset():
    d = data(n=6, size=8)
    r = segmentation_scores(d["maps"], d["masks"])
    fg = torch.stack([(m > m.mean()) for m in (d["maps"] - d["maps"].amin((1, 2), keepdim=True))])
    inter = [((~fg) & (~d["masks"])).sum(), (fg & d["masks"]).sum()]
    union = [((~fg) | (~d["masks"])).sum(), (fg | d["masks"]).sum()]
    expected = 100 * np.mean([float(i) / float(u) for i, u in zip(inter, union, strict=True)])
    assert r.summary["miou"] == pytest.approx(expected)
    assert r.summary["pixel_accuracy"] == pytest.approx(100 * float((fg == d["masks"]).float().mean()))


def test_constant_map_predicts_background():
    m = Segmentation()
    m.update(torch.ones(1, 2, 2), torch.tensor([[[False, True], [False, False]]]))
    assert m.compute().summary["pixel_accuracy"] == pytest.approx(75.0)
