"""The catchable error types (xvit.errors) and the guarantee behind them: bad arguments, tensors and targets given
to ``explain``/``Explainer`` raise only documented types, with a message, and never leave NaN maps unannounced."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xvit
from xvit import errors
from xvit.adapters.base import UnsupportedModelError
from xvit.data.preprocess import ImageLoadError
from xvit.models import CheckpointError
from xvit.params import InvalidParameterError

from .tiny_models import SIZE, make


def test_errors_re_exports_the_classes_where_they_are_raised():
    assert errors.ImageLoadError is ImageLoadError and errors.CheckpointError is CheckpointError
    assert errors.InvalidParameterError is InvalidParameterError
    assert errors.UnsupportedModelError is UnsupportedModelError
    assert all(issubclass(e, (ValueError, TypeError, KeyError, OSError)) for e in errors.DOCUMENTED_ERRORS)


@pytest.fixture(scope="module")
def model():
    return make("xvit")


@pytest.mark.parametrize("x, message", [
    (torch.zeros(0, 3, SIZE, SIZE), "empty"),
    (torch.zeros(1, 3, 0, 0), "empty"),
    (torch.full((1, 3, SIZE, SIZE), float("nan")), "NaN or infinite"),
    (torch.zeros(1, 3, SIZE, SIZE).index_fill_(3, torch.tensor([0]), float("inf")), "NaN or infinite"),
])
def test_empty_zero_size_and_non_finite_inputs_are_refused(model, x, message):
    with pytest.raises(ValueError, match=message):
        xvit.explain(model, x, "rollout")


def test_nan_logits_are_refused_rather_than_giving_nan_maps():
    model = make("xvit")
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="logits hold NaN"):
        xvit.explain(model, torch.zeros(1, 3, SIZE, SIZE), "gradcam")


VALUES = st.sampled_from([-1, 0, 1, 3, 0.5, -0.5, math.nan, math.inf, "", "max", None, True, [1], (0, 1), {}])
METHODS = ["rollout", "gradcam", "attnlrp", "integrated_gradients", "smoothgrad", "no_such_method", ""]
SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 7, 16, SIZE]), min_size=0, max_size=5).map(tuple)


@st.composite
def inputs(draw):
    kind = draw(st.sampled_from(["tensor", "tensor", "tensor", "list", "none", "string", "good"]))
    if kind == "good":
        x = torch.randn(draw(st.integers(1, 2)), 3, SIZE, SIZE)
    elif kind == "tensor":
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.bool]))
        x = torch.randn(draw(SHAPES)).to(dtype)
    else:
        return {"list": [[0.0] * 4], "none": None, "string": "cat.png"}[kind]
    if x.is_floating_point() and x.numel() and draw(st.booleans()):
        x.view(-1)[0] = draw(st.sampled_from([math.nan, math.inf, 1e30]))
    return x


TARGETS = st.one_of(st.none(), st.integers(-3, 8), st.floats(allow_nan=True), st.text(max_size=2),
                    st.lists(st.integers(-1, 6), max_size=3), st.lists(st.lists(st.integers(0, 4), max_size=2),
                                                                        max_size=2),
                    st.builds(torch.tensor, st.lists(st.floats(-1, 6, allow_nan=False), min_size=1, max_size=2)))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                 HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), params=st.dictionaries(st.sampled_from(["n_steps", "head_fusion", "layer",
                                                                                 "nonsense", "batch_size"]),
                                                                VALUES, max_size=2),
       x=inputs(), target=TARGETS)
def test_malformed_arguments_raise_only_documented_errors(model, method, params, x, target):
    try:
        explanation = xvit.explain(model, x, method, target=target, **params)
    except errors.DOCUMENTED_ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        assert message.strip(), f"{type(e).__name__} without a message"
        return
    assert torch.isfinite(explanation.maps).all()
