"""Explainer plumbing: method instances, targets resolved once, one set of passes for multi-target methods."""

import pytest
import torch

import xvit
from xvit.methods.base import Attribution, Method
from xvit.targets import explained_classes

from .tiny_models import SIZE, make


class CountingAllClasses(Method):
    """Toy multi-target method: one forward per batch; the map of class c is the constant logit y_c."""

    name = "counting_all_classes"
    per_target_pass = False

    def __init__(self) -> None:
        super().__init__()
        self.forwards = 0

    def attribute(self, ctx, x, targets):
        with torch.no_grad():
            logits = ctx.adapter.forward(x)
        self.forwards += 1
        targets = explained_classes(logits, None)[:, None] if targets is None else targets
        h, w = ctx.layout.grid
        raw = logits.gather(1, targets)[..., None, None].expand(*targets.shape, h, w)
        return Attribution(raw.reshape(-1, h, w), logits, targets.reshape(-1))


def test_multi_target_method_scores_all_targets_from_one_set_of_passes():
    model = make("xvit")
    x = torch.randn(3, 3, SIZE, SIZE)
    method = CountingAllClasses()
    targets = torch.tensor([[0, 1, 2], [4, 3, 2], [1, 1, 0]])
    exp = xvit.Explainer(model, method)(x, targets)
    assert method.forwards == 1
    assert exp.raw.shape[:2] == (3, 3)
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(exp.raw[..., 0, 0], logits.gather(1, targets))
    torch.testing.assert_close(exp.logits, logits)


def test_method_instance_with_extra_parameters_is_refused():
    with pytest.raises(TypeError, match="set_params"):
        xvit.Explainer(make("xvit"), CountingAllClasses(), start_layer=1)


def test_predicted_class_is_decided_in_one_place():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert explained_classes(logits, None).tolist() == [1, 0]
    assert explained_classes(logits, torch.tensor([2, 2])).tolist() == [2, 2]
    model = make("xvit")
    x = torch.randn(2, 3, SIZE, SIZE)
    for method in ("attnlrp", "input_x_gradient", "grad_attention_rollout"):
        exp = xvit.explain(model, x, method)
        assert exp.targets[:, 0].tolist() == exp.logits.argmax(-1).tolist()
