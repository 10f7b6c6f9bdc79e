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


def test_top_k_records_every_explained_class_and_writes_one_overlay_each(tmp_path):
    model = make("xvit")
    x = torch.randn(2, 3, SIZE, SIZE)
    result = explain_batch(model, x, ["rollout", "input_x_gradient"], top_k=3,
                           display=[Image.new("RGB", (SIZE, SIZE))] * 2, names=["a", "b"])
    with torch.no_grad():
        probs = model(x).softmax(-1)
    for b, rec in enumerate(result.records):
        for m, mrec in rec.methods.items():
            assert [t.target.index for t in mrec.explained] == probs[b].topk(3).indices.tolist()
            assert mrec.target == mrec.explained[0].target and mrec.stats == mrec.explained[0].stats
            for k, t in enumerate(mrec.explained):
                assert t.stats == map_statistics(result.explanations[m].raw[b, k])
    written = write_batch(result, tmp_path)
    rec = written.records[0]
    assert [t.overlay for t in rec.methods["rollout"].explained] == ["a_rollout_1.png", "a_rollout_2.png",
                                                                     "a_rollout_3.png"]
    assert rec.methods["rollout"].overlay == "a_rollout_1.png"
    assert all((tmp_path / t.overlay).is_file() for m in rec.methods.values() for t in m.explained)
    d = rec.to_dict()["methods"]["input_x_gradient"]
    assert [e["overlay"] for e in d["explained"]] == [f"a_input_x_gradient_{k}.png" for k in (1, 2, 3)]


def test_per_image_targets_follow_the_images_across_batches(tmp_path):
    model = make("xvit")
    model.xvit_class_names = ["circle", "square", "triangle", "star", "cross"]
    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    targets = ["star", 0, "pred", "Triangle", 1]
    records = [r for b in explain_images(model, paths, ["rollout"], target=targets, batch_size=2) for r in b.records]
    got = [r.methods["rollout"].target.index for r in records]
    assert got[:2] == [3, 0] and got[3:] == [2, 1] and got[2] == records[2].prediction.index


def test_explain_images_reports_progress_as_lines_when_not_on_a_terminal(tmp_path, capsys):
    model = make("xvit")
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    list(explain_images(model, [tmp_path / "a.png"] * 3, ["rollout"], progress=True))
    err = capsys.readouterr().err
    assert "explain: done 3/3 map (100%)" in err and "map/s" in err
    list(explain_images(model, [tmp_path / "a.png"] * 3, ["rollout"]))
    assert capsys.readouterr().err == ""  # fewer than 8 maps: quiet by default
