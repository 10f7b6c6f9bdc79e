"""Targets: float tensors are refused unless they hold whole numbers; empty and bool targets are refused."""

import pytest
import torch

from xvit.targets import resolve_targets


def test_integral_float_targets_are_accepted_as_classes():
    assert resolve_targets(torch.tensor([1.0, 2.0]), 2, 5).tolist() == [[1], [2]]


@pytest.mark.parametrize("target", [torch.tensor([1.5, 2.0]), torch.tensor(float("nan")), torch.tensor([[0.2]])])
def test_non_integer_float_targets_are_refused_not_truncated(target):
    with pytest.raises(ValueError, match="non-integer"):
        resolve_targets(target, 2 if target.ndim == 1 else 1, 5)


@pytest.mark.parametrize("target", [torch.tensor([True, False]), torch.zeros(2, dtype=torch.complex64)])
def test_bool_and_complex_target_tensors_are_refused(target):
    with pytest.raises(TypeError, match="dtype"):
        resolve_targets(target, 2, 5)


@pytest.mark.parametrize("target", [torch.zeros(2, 0, dtype=torch.long), [[], []], torch.zeros(0, dtype=torch.long)])
def test_empty_targets_are_refused(target):
    with pytest.raises(ValueError, match="empty target"):
        resolve_targets(target, 2, 5)
