"""Invalid parameter values, generated from each method's declared constraints, are refused up front
with a message that names the parameter (scikit-learn's check_param_validation idea)."""

import pytest

import xvit
from tests.tiny_models import make
from xvit.methods import METHODS
from xvit.params import Boxes, Interval, InvalidParameterError, Nullable, Options, validate_params


def _invalid_values(constraint):
    if isinstance(constraint, Nullable):
        constraint = constraint.inner
    if isinstance(constraint, Options):
        return ["not-an-option", 3.5]
    values = ["text", True]
    if isinstance(constraint, Interval):
        if constraint.low is not None:
            values.append(constraint.low - 1)
        if constraint.high is not None:
            values.append(constraint.high + 1)
        if constraint.integer:
            values.append(1.5)
    return values


CASES = [(name, param, bad) for name in METHODS for param, c in METHODS.get(name).param_constraints.items()
         for bad in _invalid_values(c)]


@pytest.mark.parametrize("method,param,bad", CASES)
def test_invalid_parameter_is_refused_with_its_name(method, param, bad):
    with pytest.raises(InvalidParameterError, match=f"'{param}' parameter of {method}"):
        xvit.Explainer(make("xvit"), method, **{param: bad})


def test_unknown_parameter_and_method_get_helpful_messages():
    with pytest.raises(InvalidParameterError, match="unexpected parameter 'start_layr'.*start_layer"):
        xvit.Explainer(make("xvit"), "rollout", start_layr=1)
    with pytest.raises(KeyError, match="Did you mean 'rollout'"):
        xvit.Explainer(make("xvit"), "rolout")


def test_block_index_is_checked_against_the_model_depth():
    with pytest.raises(InvalidParameterError, match="block index in \\[-2, 2\\)"):
        xvit.explain(make("xvit"), __import__("torch").randn(1, 3, 32, 32), "rollout", start_layer=5)


def test_boxes_are_fractions_x0_y0_x1_y1_with_the_corners_in_order():
    boxes = Boxes()
    assert boxes.accepts([[0, 0, 1, 1]]) and boxes.accepts(((0.1, 0.2, 0.5, 0.9), [0.5, 0, 1, 0.5]))
    for bad in ([], None, "box", [[0.5, 0, 0.2, 1]], [[0, 0.6, 1, 0.4]], [[0, 0, 1.5, 1]], [[-0.1, 0, 1, 1]],
                [[0, 0, 1]], [[0, 0, True, 1]], [["0", 0, 1, 1]], [[0.2, 0, 0.2, 1]]):
        assert not boxes.accepts(bad), bad
    with pytest.raises(InvalidParameterError, match=r"'boxes' parameter of guide must be None or a non-empty list of "
                                                    r"\(x0, y0, x1, y1\) fractions"):
        validate_params("guide", {"boxes": [[1, 0, 0, 1]]}, {"boxes": Nullable(Boxes())})
