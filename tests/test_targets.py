"""Targets: float tensors are refused unless they hold whole numbers; empty and bool targets are refused."""

import pytest
import torch

from xvit.targets import class_index, fill_predicted, resolve_targets


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


NAMES = ["circle", "square", "tabby cat", "Persian cat", "tiger cat", "tiger shark"]


@pytest.mark.parametrize("name, index", [("tabby cat", 2), ("Tabby_Cat", 2), ("tabby", 2), ("persian-cat", 3),
                                         ("3", 3), ("square", 1)])
def test_class_names_resolve_exactly_ignoring_case_and_by_leading_words(name, index):
    assert class_index(name, NAMES) == index
    assert resolve_targets(name, 2, 6, class_names=NAMES).tolist() == [[index], [index]]


def test_unknown_names_get_close_matches_and_ambiguous_names_list_the_candidates():
    with pytest.raises(ValueError, match=r"Unknown class name 'tabby dog'\. Did you mean 'tabby cat'"):
        resolve_targets("tabby dog", 1, 6, class_names=NAMES)
    with pytest.raises(ValueError, match=r"'tiger' is ambiguous: it matches 'tiger cat' \(4\), 'tiger shark' \(5\)"):
        class_index("tiger", NAMES)
    with pytest.raises(ValueError, match="this model has no class names"):
        resolve_targets("tabby", 1, 6)


def test_class_names_are_read_only_when_a_name_is_given():
    def names():
        raise AssertionError("class names were read for index targets")

    assert resolve_targets([1, 2], 2, 6, class_names=names).tolist() == [[1], [2]]
    assert resolve_targets("pred", 2, 6, class_names=names) is None


def test_per_image_targets_mix_indices_names_and_pred():
    t = resolve_targets(["tabby", 3, "pred"], 3, 6, class_names=NAMES)
    assert t.tolist() == [[2], [3], [-1]]
    logits = torch.tensor([[0.0, 9, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5], [5, 0, 0, 0, 9, 1]])
    assert fill_predicted(t, logits).tolist() == [[2], [3], [4]]
    assert resolve_targets(["pred", "predicted"], 2, 6) is None


def test_top_k_gives_the_k_most_probable_classes_in_order():
    t = resolve_targets(None, 2, 6, top_k=3)
    logits = torch.tensor([[0.0, 9, 1, 2, 3, 4], [5, 0, 0, 0, 9, 1]])
    assert fill_predicted(t, logits).tolist() == [[1, 5, 4], [4, 0, 5]]
    assert resolve_targets(None, 2, 6, top_k=1) is None
    with pytest.raises(ValueError, match="either target or top_k"):
        resolve_targets(1, 2, 6, top_k=2)
    with pytest.raises(ValueError, match=r"top_k must be an int in 1\.\.6"):
        resolve_targets(None, 2, 6, top_k=7)


@pytest.mark.parametrize("target", [-1, [-1, 2], [[0, -2]], "-1"])
def test_negative_classes_are_refused_not_taken_for_pred(target):
    with pytest.raises(ValueError, match="out of range"):
        resolve_targets(target, 2 if isinstance(target, list) and len(target) == 2 else 1, 6, class_names=NAMES)


def test_imagenet_models_resolve_names_with_the_shipped_labels():
    from xvit.models import class_names_for

    names = class_names_for(torch.nn.Linear(1, 1), 1000)
    assert resolve_targets("tabby", 1, 1000, class_names=names).tolist() == [[names.index("tabby cat")]]
    with pytest.raises(ValueError, match="Did you mean 'goldfish'"):
        resolve_targets("goldfisch", 1, 1000, class_names=names)
