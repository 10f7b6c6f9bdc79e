"""RunSpec: the frozen, serialisable description of an evaluation run, checked before any model or data opens."""

import dataclasses
import json
import pickle

import pytest

from xvit.evaluate import RunSpec, default_metrics


def test_round_trips_through_json_and_pickle():
    spec = RunSpec(data="xvit-shapes:single:test:8", model="shapes-vit-tiny", methods=("rollout", "attnlrp"),
                   metrics=("perturbation", "pointing_game"),
                   metric_params={"perturbation": {"fractions": (0.5, 1.0)}, "pointing_game": {"tol": 3}},
                   method_params={"rollout": {"head_fusion": "max"}}, steps=None, seed=3)
    again = RunSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.metric_params["perturbation"]["fractions"] == (0.5, 1.0)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.options()["deletion_insertion_steps"] is None and spec.options()["seed"] == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1


def test_defaults_and_duplicates():
    spec = RunSpec(data="d", methods=("rollout", "rollout"))
    assert spec.methods == ("rollout",) and spec.metrics == default_metrics()


@pytest.mark.parametrize("kwargs, message", [
    ({"metrics": ("pointing_gme",)}, "Did you mean 'pointing_game'"),
    ({"methods": ("rolout",)}, "unknown method 'rolout'"),
    ({"metrics": ("perturbation",), "metric_params": {"perturbation": {"mode": "negative"}}}, "sets perturbation.mode"),
    ({"metrics": ("randomization",), "metric_params": {"randomization": {"explain_fn": print}}}, "explain_fn"),
    ({"metrics": ("pointing_game",), "metric_params": {"pointing_game": {"tol": -1}}}, "'tol' parameter"),
    ({"metrics": ("segmentation",), "metric_params": {"segmentation": {"x": 1}}}, "takes none"),
    ({"metrics": ("segmentation",), "metric_params": {"pointing_game": {"tol": 1}}}, "not evaluated"),
    ({"method_params": {"rollout": {"head_fusion": "median"}}, "methods": ("rollout",)}, "head_fusion"),
    ({"method_params": {"attnlrp": {}}, "methods": ("rollout",)}, "method .attnlrp., which is not run"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"class_explained": "label"}, "class_explained"),
])
def test_invalid_specs_raise_on_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunSpec(data="xvit-shapes:single:test:4", **kwargs)
