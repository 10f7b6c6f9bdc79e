"""`xvit explain-dataset` and `xvit.load_maps`: the Parquet rows hold what the pipeline computes, read back lazily."""

import sys

import numpy as np
import pytest
import torch

import xvit
from xvit.cli import main
from xvit.data.shapes import SHAPE_CLASSES
from xvit.data.sources import load_dataset
from xvit.evaluate.dataset_maps import explain_dataset
from xvit.evaluate.engines import make_engine
from xvit.models import Preprocessing, create_vit, save_checkpoint
from xvit.pipeline import explain_batch

pytest.importorskip("pyarrow", reason="explain-dataset needs pyarrow: pip install 'xvit[ray]'")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_vit("nano", img_size=32, patch_size=8, num_classes=10)
    return save_checkpoint(model, tmp_path_factory.mktemp("maps") / "ckpt", preprocessing=Preprocessing(size=(32, 32)),
                           class_names=list(SHAPE_CLASSES))


def test_maps_round_trip_through_load_maps(ckpt, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["explain-dataset", "xvit-shapes:single:test:7", "--model", str(ckpt), "--methods", "rollout",
                 "gradcam", "--batch-size", "3", "--overlays", "--no-progress", "--out", str(out)]) == 0
    assert "xvit.load_maps" in capsys.readouterr().out
    maps = xvit.load_maps(out)
    assert len(maps) == 7 and maps.methods == ["rollout", "gradcam"] and maps.info["engine"]["name"] == "local"
    assert maps._file.num_row_groups == 3  # one row group per chunk: written as it streams
    records = list(maps)

    model = xvit.load_model(ckpt)
    data = load_dataset("xvit-shapes:single:test:7", size=(32, 32))
    batch = data.load(range(7), xvit.models.preprocessing_for(model))
    torch.manual_seed(0)
    expected = explain_batch(model, batch.x, ["rollout", "gradcam"])
    assert [r.index for r in records] == list(range(7)) and [r.id for r in records] == data.ids
    for b, rec in enumerate(records):
        assert rec.labels == [int(data.labels[b])]
        assert rec.predicted == expected.records[b].prediction.index
        assert rec.top5 == [c.index for c in expected.records[b].top5]
        for m in ("rollout", "gradcam"):
            raw = expected.explanations[m].raw[b, 0].numpy()
            assert rec.maps[m].shape == raw.shape == (4, 4) and rec.maps[m].dtype == np.float32
            np.testing.assert_allclose(rec.maps[m], raw, atol=1e-6)
            assert rec.stats[m] == pytest.approx(expected.records[b].methods[m].stats)
            assert (out / rec.overlays[m]).is_file()


def test_float16_maps_and_a_subset(ckpt, tmp_path):
    explain_dataset(str(ckpt), "xvit-shapes:single:test:9", ["rollout"], tmp_path, batch_size=4, max_images=5,
                    map_dtype="float16")
    records = list(xvit.load_maps(tmp_path))
    assert len(records) == 5 and records[0].maps["rollout"].dtype == np.float16
    assert records[0].overlays == {"rollout": None} and not (tmp_path / "overlays").exists()
    with pytest.raises(ValueError, match="map_dtype"):
        explain_dataset(str(ckpt), "xvit-shapes:single:test:2", ["rollout"], tmp_path, map_dtype="int8")
    with pytest.raises(FileNotFoundError, match="explain-dataset"):
        xvit.load_maps(tmp_path / "nothing")


def test_missing_extras_are_usage_errors_that_say_how_to_install(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"xvit\[ray\]"):
        make_engine("ray")
    args = ["explain-dataset", "xvit-shapes:single:test:2", "--model", str(ckpt), "--out", str(tmp_path)]
    assert main([*args, "--engine", "ray"]) == 2
    assert "pip install 'xvit[ray]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(args) == 2
    assert "needs pyarrow" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(ckpt), "--data", "xvit-shapes:single:test:2", "--workers", "2",
                 "--out", str(tmp_path)]) == 2
    assert "apply to the Ray engine only" in capsys.readouterr().err
