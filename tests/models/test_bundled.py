"""The bundled checkpoints load and still classify fresh images about as well as their cards say (a smoke-level
check on 200 images; the cards' 2,000-image figures are measured by ``xvit card``, not here)."""

import json

import pytest

from xvit.models import bundled_model_dir, bundled_models
from xvit.training import shapes_accuracy

FRESH_SEED = 7_777  # a base seed no training, validation or test split uses
N = 200


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_bundled_checkpoint_meets_its_recorded_accuracy_on_fresh_images(name):
    config = json.loads((bundled_model_dir(name) / "config.json").read_text())
    recorded, variant = config["metrics"]["test_accuracy"], config["training"]["data"]["variant"]
    measured = shapes_accuracy(name, variant, N, seed=FRESH_SEED)
    # 0.06 is over four binomial standard deviations at 200 images for any accuracy in [0.4, 1].
    assert measured >= recorded - 0.06, f"{name}: {measured:.3f} on {N} fresh images, card {recorded:.3f}"
