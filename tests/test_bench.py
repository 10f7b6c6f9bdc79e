"""xvit.bench: methods that count their passes are timed against that many plain passes of the same batch."""

import math

import pytest

from xvit.bench import format_table, run_benchmark
from xvit.models.vit import create_vit


@pytest.fixture(scope="module")
def rows():
    model = create_vit("nano", img_size=16, patch_size=4, num_classes=5)
    return {r["method"]: r for r in run_benchmark(
        model, ["rise", "tis", "bt_h", "tam", "rollout"], batch_size=2, repeats=1, warmup=0,
        params={"rise": {"n_masks": 12}, "tis": {"n_masks": 5, "tokens_ratio": 0.5}, "bt_h": {"steps": 3},
                "tam": {"steps": 4}})}


def test_nominal_passes_come_from_each_methods_meta(rows):
    assert rows["rise"]["nominal_passes"] == "13 F"  # 12 masks and the clean pass
    assert rows["bt_h"]["nominal_passes"] == "4 F+B"  # the perception pass and 3 integration steps
    assert rows["tam"]["nominal_passes"] == "1 F + 4 F+B"
    assert rows["tis"]["nominal_passes"] == "1 F + 5 F(9 tokens)"  # 16 patches, half kept, plus the class token
    assert "forward(9 tokens)" in rows  # the shortened forward was timed as a baseline in the same rounds
    assert "x_nominal" not in rows["rollout"]  # rollout records no pass counts


def test_nominal_ratios_and_solver_time_are_reported(rows):
    for name in ("rise", "tis", "bt_h", "tam"):
        assert math.isfinite(rows[name]["x_nominal"]) and rows[name]["x_nominal"] > 0
    assert rows["tis"]["solver_seconds_per_image"] > 0  # k-means
    assert rows["rise"]["solver_seconds_per_image"] == 0
    table = format_table(list(rows.values()))
    assert "| × nominal |" in table and "| 1 F + 4 F+B |" in table


def test_method_parameters_reach_the_explainer():
    model = create_vit("nano", img_size=16, patch_size=4, num_classes=5)
    with pytest.raises(ValueError, match="n_masks"):
        run_benchmark(model, ["rise"], batch_size=1, repeats=1, warmup=0, params={"rise": {"n_masks": 0}})
