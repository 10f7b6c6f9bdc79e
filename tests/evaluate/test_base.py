import math
from types import SimpleNamespace

import pytest
import torch

import xvit.evaluate as ev
from xvit.evaluate.base import summarize
from xvit.params import InvalidParameterError
from xvit.perturb import pixel_ranks
from xvit.utils.logits import unwrap_logits
from xvit.utils.maps import normalise_maps

NAMES = {"perturbation", "deletion_insertion", "segmentation", "pointing_game", "energy_pointing_game",
         "class_sensitivity", "marker_share", "randomization", "conservation", "cost"}


def test_registry_lists_every_metric_with_its_class():
    listed = ev.metrics()
    assert set(listed) == NAMES
    for name in NAMES:
        cls = ev.get_metric(name)
        assert cls.name == name and issubclass(cls, ev.Metric)
        info = listed[name]
        assert info["citation"] and "paper" not in info and info["inputs"]
        assert {"higher_is_better", "requirements", "columns", "params"} <= set(info)
        assert all(c.metric == name for c in cls.columns)
    assert listed["perturbation"]["columns"] == ["perturbation_pos", "perturbation_neg"]
    assert listed["perturbation"]["higher_is_better"] == {"perturbation_pos": False, "perturbation_neg": True}
    assert listed["class_sensitivity"]["requirements"] == ["pairs"]
    assert listed["pointing_game"]["params"] == {"tol": 15, "max_overlap": None}
    assert listed["cost"]["columns"] == ["cost"] and ev.get_metric("cost").columns[0].field_name == "cost_seconds"
    assert "marker_share" not in ev.default_metrics() and ev.default_metrics()[0] == "perturbation"


def test_set_params_changes_what_the_metric_reads():
    m = ev.PointingGame(tol=3)
    assert m.tol == 3 and m.set_params(tol=0).tol == 0 and m.get_params() == {"tol": 0, "max_overlap": None}
    with pytest.raises(InvalidParameterError, match="'tol' parameter of pointing_game"):
        m.set_params(tol=-1)


def test_unknown_metric_suggests_close_names():
    with pytest.raises(KeyError, match="pointing_game"):
        ev.get_metric("pointing_gme")


def test_summary_interval():
    s = summarize(torch.tensor([1.0, 2.0, 3.0, math.nan]))
    half = 1.96 * 1.0 / math.sqrt(3)
    assert s["n"] == 3 and s["mean"] == 2.0
    assert (s["low"], s["high"]) == pytest.approx((2 - half, 2 + half))
    assert math.isnan(summarize(torch.tensor([1.0]))["low"])


def test_ranks_break_ties_on_the_flat_index():
    maps = torch.tensor([[[1.0, 3.0], [3.0, 1.0]]])
    assert pixel_ranks(maps).tolist() == [[2, 0, 1, 3]]


def test_minmax_per_image_and_constant_maps():
    out = normalise_maps(torch.tensor([[[2.0, 4.0]], [[5.0, 5.0]]]))
    assert out.tolist() == [[[0.0, 1.0]], [[0.0, 0.0]]]


def test_logits_are_unwrapped_from_hf_outputs_and_tuples():
    t = torch.zeros(2, 3)
    assert unwrap_logits(SimpleNamespace(logits=t)) is t
    assert unwrap_logits((t, "attn")) is t


def test_compute_before_update_and_reset():
    m = ev.EnergyPointingGame()
    with pytest.raises(RuntimeError, match="before any update"):
        m.compute()
    m.update(torch.rand(2, 3, 3), torch.rand(2, 3, 3) > 0.8)
    m.reset()
    with pytest.raises(RuntimeError):
        m.compute()


def test_result_carries_parameters_as_given():
    r = ev.energy_pointing_game(torch.rand(2, 3, 3), torch.rand(2, 3, 3) > 0.8, max_overlap=0.9)
    assert r.params == {"normalise": True, "max_overlap": 0.9} and r.name == "energy_pointing_game"
