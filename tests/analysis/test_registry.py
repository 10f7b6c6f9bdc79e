"""Registry-driven checks run on every registered analysis: info, parameters, result shape, restoring."""

import json

import pytest
import torch

import xvit
from xvit.analysis import ANALYSES, AnalysisResult
from xvit.params import InvalidParameterError

from ..tiny_models import FACTORIES, SIZE, make

NAMES = ANALYSES.names()


@pytest.mark.parametrize("name", NAMES)
def test_info_lists_citation_cost_version_and_parameters(name):
    info = xvit.analyses()[name]
    assert info["citation"] and info["cost"] and info["definition_version"]
    assert info["params"] == ANALYSES.get(name).default_params()


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_is_refused_once_at_construction(name):
    with pytest.raises(InvalidParameterError, match="unexpected parameter 'no_such_param'"):
        ANALYSES.get(name)(no_such_param=1)


@pytest.mark.parametrize("family", ["xvit", "timm_deit_distilled", "hf_vit"])
@pytest.mark.parametrize("name", NAMES)
def test_result_is_batch_invariant_serialisable_plottable_and_restores_the_model(name, family):
    model = make(family)
    model.train()
    flags = {n: m.fused_attn for n, m in model.named_modules() if hasattr(m, "fused_attn")}
    x = torch.randn(3, 3, SIZE, SIZE)
    result = xvit.analyse(model, x, name)
    assert isinstance(result, AnalysisResult) and result.name == name
    assert result.meta["definition_version"] == ANALYSES.get(name).definition_version
    one = xvit.analyse(model, x[1:2], name)
    for key, value in one.tensors.items():
        if value.shape[:1] == (1,):
            torch.testing.assert_close(value[0], result.tensors[key][1], rtol=1e-4, atol=1e-5)
    json.dumps(result.to_dict())
    assert result.plot().axes
    assert model.training and all(m.training for m in model.modules())
    assert flags == {n: m.fused_attn for n, m in model.named_modules() if hasattr(m, "fused_attn")}


def test_every_family_is_covered_by_the_tiny_models():
    assert {"xvit", "timm_deit_distilled", "hf_vit"} <= set(FACTORIES)
