"""Accumulating over batches, or merging the states of metrics that saw parts of the data, equals one update on
the concatenated data (torchmetrics' MetricTester idea)."""

import io

import pytest
import torch

from xvit.evaluate import (
    ClassSensitivity,
    Conservation,
    DeletionInsertion,
    EnergyPointingGame,
    MarkerShare,
    Perturbation,
    PointingGame,
    Randomization,
    Segmentation,
)

from .stubs import HALF, data, grad_x_input, tiny_cnn

D = data(n=10, size=6)
MODEL = tiny_cnn(size=6)

CASES = {
    "perturbation": (lambda: Perturbation(mean=HALF, std=HALF, batch_size=16),
                     lambda d: (MODEL, d["x"], d["maps"], d["labels"], d["targets"])),
    "deletion": (lambda: DeletionInsertion(pixels_per_step=4, batch_size=16),
                 lambda d: (MODEL, d["x"], d["maps"], d["targets"])),
    "insertion_tis": (lambda: DeletionInsertion(mode="insertion", preset="tis", steps=5),
                      lambda d: (MODEL, d["x"], d["maps"], d["targets"])),
    "segmentation": (Segmentation, lambda d: (d["maps"], d["masks"])),
    "pointing_game": (lambda: PointingGame(tol=2), lambda d: (d["maps"], d["masks"], d["labels"])),
    "energy_pointing_game": (EnergyPointingGame, lambda d: (d["maps"], d["masks"])),
    "marker_share": (MarkerShare, lambda d: (d["maps"], d["masks"], d["labels"])),
    "class_sensitivity": (ClassSensitivity, lambda d: (d["maps"], d["maps_b"], d["masks"], d["masks_b"])),
    "randomization": (lambda: Randomization(explain_fn=grad_x_input, units="module"),
                      lambda d: (MODEL, d["x"], d["targets"])),
    "conservation": (Conservation, lambda d: (MODEL, d["x"], d["maps"], d["targets"], torch.zeros_like(d["x"]))),
}


def _batches(sizes):
    start = 0
    for size in sizes:
        yield {k: v[start:start + size] for k, v in D.items()}
        start += size


def _assert_same(a, b):
    assert a.n == b.n and a.forward_passes == b.forward_passes
    for x, y in [(a.scores, b.scores), (a.curves, b.curves), (a.value, b.value), (a.mean, b.mean),
                 *[(a.per_image[k], b.per_image[k]) for k in a.per_image]]:
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(torch.as_tensor(x), torch.as_tensor(y), equal_nan=True)
    assert a.summary.keys() == b.summary.keys()
    for k in a.summary.keys() - {"explain_calls"}:  # explain_fn runs once more per unit and batch
        if isinstance(a.summary[k], float):
            assert a.summary[k] == pytest.approx(b.summary[k], nan_ok=True)
        else:
            assert a.summary[k] == b.summary[k]


@pytest.mark.parametrize("case", list(CASES))
def test_batches_equal_one_call(case):
    make, args = CASES[case]
    whole = make()
    whole.update(*args(D))
    split = make()
    for batch in _batches([3, 1, 6]):
        split.update(*args(batch))
    _assert_same(split.compute(), whole.compute())
    assert whole.compute().scores.shape == (10,)


def _saved(state):
    """A state as the runner keeps it: through torch.save and torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("case", list(CASES))
def test_merged_states_equal_one_call(case):
    make, args = CASES[case]
    whole = make()
    whole.update(*args(D))
    first, second = make(), make()
    first_half, second_half = _batches([4, 6])
    first.update(*args(first_half))
    second.update(*args(second_half))
    merged = make()
    for part in (first, second):
        merged.merge_state(_saved(part.state_dict()))
    _assert_same(merged.compute(), whole.compute())
    first.merge_state(second.state_dict())  # into a metric that holds batches of its own
    _assert_same(first.compute(), whole.compute())
