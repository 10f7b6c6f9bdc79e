"""The bundled checkpoints load and still classify fresh images about as well as their cards say (a smoke-level
check on 200 images; the cards' 2,000-image figures are measured by ``xvit card``, not here)."""

import json
import math

import pytest

from xvit.models import bundled_model_dir, bundled_models
from xvit.training import shapes_accuracy
from xvit.training.accuracy import shapes_predictions

FRESH_SEED = 7_777  # a base seed no training, validation or test split uses
N = 200


def _config(name: str) -> dict:
    return json.loads((bundled_model_dir(name) / "config.json").read_text())


def _tolerance(accuracy: float) -> float:
    """Four binomial standard deviations of an accuracy measured on ``N`` images (at least 0.03)."""
    return max(4 * math.sqrt(accuracy * (1 - accuracy) / N), 0.03)


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_bundled_checkpoint_meets_its_recorded_accuracy_on_fresh_images(name):
    config = _config(name)
    recorded, variant = config["metrics"]["test_accuracy"], config["training"]["data"]["variant"]
    measured = shapes_accuracy(name, variant, N, seed=FRESH_SEED)
    assert measured >= recorded - _tolerance(recorded), f"{name}: {measured:.3f} on {N} fresh images, " \
                                                        f"card {recorded:.3f}"


def test_bundled_spurious_model_is_accurate_without_the_marker_and_follows_it_where_planted():
    """Issue 12's two goals at smoke level: accurate on marker-free images, and the marker still means `circle`."""
    name = "shapes-vit-tiny-spurious"
    recorded = _config(name)["metrics"]["test_accuracy_marker_none"]
    assert recorded >= 0.90
    marker_free = shapes_accuracy(name, "spurious", N, seed=FRESH_SEED, marker="none")
    assert marker_free >= recorded - _tolerance(recorded)
    labels, preds, marked = shapes_predictions(name, "spurious", N, seed=FRESH_SEED, marker="random")
    planted = marked & (labels != 0)
    assert planted.sum() >= 50
    assert (preds[planted] == 0).float().mean() >= 0.80
