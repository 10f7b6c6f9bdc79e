"""`xvit analyse` on a data spec (batched, merged, labels as targets) and `xvit bench --analyses`."""

import json

import pytest
import torch

from xvit.bench import format_analysis_table, run_analysis_benchmark
from xvit.cli import main
from xvit.models import Preprocessing, create_model, save_checkpoint

from ..tiny_models import make


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("vit", "nano", img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=2, num_heads=2)
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("ckpt") / "m", preprocessing=Preprocessing(
        size=(32, 32)), class_names=[str(i) for i in range(10)])


def test_a_data_spec_is_analysed_in_batches_and_merged(checkpoint, tmp_path):
    out = tmp_path / "removal"
    assert main(["analyse", "patch_removal", "xvit-shapes:single:test:6", "--model", str(checkpoint), "--out",
                 str(out), "--batch-size", "4", "--param", "patch_removal.keep=[1.0, 0.5]"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["meta"]["images"] == 6 and result["meta"]["labelled"]
    assert len(result["tensors"]["correct"]) == 6 and (out / "figure.png").is_file()
    out = tmp_path / "kernel"
    assert main(["analyse", "interactions", "xvit-shapes:single:test:5", "--model", str(checkpoint), "--out",
                 str(out), "--batch-size", "2"]) == 0
    t = json.loads((out / "result.json").read_text())["tensors"]
    assert len(t["kernel"]) == 2 and len(t["kernel"][0]) == 7 and "indicator" not in t
    counts = torch.tensor(t["kernel_count"])
    assert counts[0, 3, 3] == 5 * 16  # the zero offset: every target of every image


def test_analyses_without_a_merge_refuse_a_data_spec(checkpoint, tmp_path, capsys):
    assert main(["analyse", "attention_distance", "xvit-shapes:single:test:2", "--model", str(checkpoint),
                 "--out", str(tmp_path / "x")]) != 0
    assert "pass image files, not the data spec" in capsys.readouterr().err


def test_bench_times_each_analysis_against_its_plain_passes():
    rows = run_analysis_benchmark(make("xvit"), batch_size=2, image_size=32, repeats=1, warmup=0, probes=2)
    by = {r["entry"]: r for r in rows}
    assert set(by) == {"F+B", "F", "R·N JVP", "interactions:grad_attention", "interactions:jacobian", "coverage",
                       "erf", "patch_removal"}
    assert by["interactions:jacobian"]["nominal_passes"] == "2·16 JVP"
    assert all(r["x_nominal"] > 0 for r in rows if "x_nominal" in r)
    table = format_analysis_table(rows)
    assert "| interactions:grad_attention |" in table and "(baseline)" in table
