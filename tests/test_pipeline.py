"""The one explanation pipeline: typed records, targets, written files."""

import numpy as np
import pytest
import torch
from PIL import Image

import xvit
from xvit.pipeline import ImageRecord, explain_batch, explain_images, map_statistics, unique_names, write_batch

from .tiny_models import SIZE, make


def test_records_hold_prediction_top5_and_each_methods_explained_class():
    model = make("xvit")
    x = torch.randn(3, 3, SIZE, SIZE)
    result = explain_batch(model, x, ["rollout", "input_x_gradient"], target=[1, 2, 4])
    assert len(result.records) == 3 and set(result.explanations) == {"rollout", "input_x_gradient"}
    with torch.no_grad():
        probs = model(x).softmax(-1)
    for b, rec in enumerate(result.records):
        assert isinstance(rec, ImageRecord)
        assert rec.prediction.index == int(probs[b].argmax())
        assert [c.index for c in rec.top5] == probs[b].topk(5).indices.tolist()
        assert rec.methods["input_x_gradient"].target.index == [1, 2, 4][b]
        assert abs(rec.methods["rollout"].target.probability - float(probs[b, [1, 2, 4][b]])) < 1e-5
        assert rec.methods["input_x_gradient"].signed and not rec.methods["rollout"].signed
        assert rec.methods["rollout"].seconds_per_image > 0
    direct = xvit.explain(model, x, "rollout", target=[1, 2, 4])
    torch.testing.assert_close(result.explanations["rollout"].raw, direct.raw)


def test_predicted_class_is_explained_by_default_and_to_dict_is_json_ready():
    model = make("xvit")
    result = explain_batch(model, torch.randn(2, 3, SIZE, SIZE), ["rollout"], names=["a", "b"], labels=["x", None])
    for rec in result.records:
        assert rec.methods["rollout"].target.index == rec.prediction.index
    d = result.records[0].to_dict()
    assert d["name"] == "a" and d["label"] == "x" and d["methods"]["rollout"]["overlay"] is None
    assert set(d) >= {"file", "image", "prediction", "top5", "methods"}


def test_explain_images_and_write_batch_write_every_file(tmp_path):
    model = make("xvit")
    rng = np.random.default_rng(0)
    paths = []
    for name in ("one", "two", "three"):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    batches = list(explain_images(model, paths, ["rollout"], batch_size=2))
    assert [len(b.records) for b in batches] == [2, 1]
    written = write_batch(batches[0], tmp_path / "out", prefix="p/")
    assert written.grid == "p/grid.png" and (tmp_path / "out" / written.grid).is_file()
    for rec in written.records:
        assert (tmp_path / "out" / rec.image).is_file()
        assert (tmp_path / "out" / rec.methods["rollout"].overlay).is_file()
    assert batches[0].records[0].image is None  # write_batch returns new records


def test_unique_names_and_map_statistics():
    assert unique_names(["a/x.png", "b/y.png"]) == ["x", "y"]
    assert unique_names(["a/x.png", "b/x.png"]) == ["000_x", "001_x"]
    stats = map_statistics(torch.tensor([[0.0, 1.0], [3.0, -4.0]]))
    assert stats["max"] == 3.0 and stats["sum"] == 0.0 and stats["top10_mass"] == 0.5
    assert map_statistics(torch.zeros(2, 2))["top10_mass"] is None


@pytest.mark.parametrize("images", [["a.png", "a_rollout.png"], ["x/grid.png", "y.png"], ["a.png", "b/a.jpg"],
                                    ["grid_000.png"]])
def test_unique_names_never_let_written_files_collide(images):
    from xvit.pipeline import GRID_NAME, output_files

    names = unique_names(images, ["rollout", "gradcam"])
    files = [f for n in names for f in output_files(n, ["rollout", "gradcam"])]
    assert len(set(files)) == len(files) and not any(GRID_NAME.fullmatch(n) for n in names)
    assert names[0].startswith("000_")
