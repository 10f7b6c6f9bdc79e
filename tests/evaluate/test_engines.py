"""The engines: the Ray engine gives the local engine's results (also after an actor dies, and when resumed), and
`explain-dataset` writes the same maps on both. One local Ray session (2 CPUs) for the whole module."""

import csv
import json
import math

import numpy as np
import pytest
import torch

import xvit
from xvit.cli import main
from xvit.data.shapes import SHAPE_CLASSES
from xvit.evaluate import RunSpec, execute, prepare, runner
from xvit.evaluate.engines import LocalEngine, RayEngine, make_engine
from xvit.models import Preprocessing, create_vit, save_checkpoint

ray = pytest.importorskip("ray", reason="the Ray engine tests need Ray: pip install 'xvit[ray]'")
pytest.importorskip("pyarrow", reason="explain-dataset needs pyarrow: pip install 'xvit[ray]'")

METRICS = ["perturbation", "deletion_insertion", "segmentation", "conservation"]


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One local Ray instance with 2 CPUs; engines find it running and leave it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_vit("nano", img_size=32, patch_size=8, num_classes=10)
    path = tmp_path_factory.mktemp("engines") / "ckpt"
    return save_checkpoint(model, path, preprocessing=Preprocessing(size=(32, 32)),
                           class_names=list(SHAPE_CLASSES))


@pytest.fixture(scope="module")
def spec(ckpt):
    return RunSpec(data="xvit-shapes:single:test:12", model=str(ckpt), methods=("rollout", "attnlrp"),
                   metrics=tuple(METRICS), batch_size=2, steps=4)


@pytest.fixture(scope="module")
def local_run(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    execute(prepare(spec), out)
    return out


def _rows(out):
    with open(out / "per_image.csv", newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_rows(a, b):
    rows_a, rows_b = _rows(a), _rows(b)
    assert len(rows_a) == len(rows_b) == 24
    for ra, rb in zip(rows_a, rows_b):
        assert ra.keys() == rb.keys()
        for k in ra:
            try:
                x, y = float(ra[k]), float(rb[k])
            except ValueError:
                assert ra[k] == rb[k], k
            else:
                assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-6, (k, x, y)


def test_ray_engine_equals_the_local_engine_and_records_its_resources(spec, local_run, tmp_path):
    execute(prepare(spec), tmp_path, engine=RayEngine(workers=2))
    _assert_same_rows(local_run, tmp_path)
    summary = lambda out: [{k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
                           for r in json.loads((out / "summary.json").read_text())["rows"]]
    assert summary(tmp_path) == summary(local_run)
    engine = json.loads((tmp_path / "provenance.json").read_text())["engine"]
    assert engine["name"] == "ray" and engine["workers"] == 2 and engine["resources"]["CPU"] == 2
    assert json.loads((local_run / "provenance.json").read_text())["engine"]["name"] == "local"


def test_a_killed_actor_is_restarted_and_the_result_is_identical(spec, local_run, tmp_path, monkeypatch):
    engine = RayEngine(workers=2)
    write_state, killed = runner.write_state, []

    def kill_after_first_unit(state_dir, unit):
        write_state(state_dir, unit)
        if not killed:  # the other chunks queued on this actor must be retried on its restart
            ray.kill(engine.actors[0], no_restart=False)
            killed.append(unit["start"])

    monkeypatch.setattr(runner, "write_state", kill_after_first_unit)
    execute(prepare(spec), tmp_path, engine=engine)
    assert killed
    _assert_same_rows(local_run, tmp_path)


def test_an_interrupted_ray_run_resumes(spec, local_run, tmp_path, monkeypatch):
    write_state, written = runner.write_state, []

    def interrupt_after_three_units(state_dir, unit):
        if len(written) == 3:
            raise KeyboardInterrupt
        write_state(state_dir, unit)
        written.append(unit["start"])

    monkeypatch.setattr(runner, "write_state", interrupt_after_three_units)
    with pytest.raises(KeyboardInterrupt):
        execute(prepare(spec), tmp_path, engine=RayEngine(workers=2))
    assert not (tmp_path / "summary.json").exists()
    monkeypatch.setattr(runner, "write_state", write_state)
    execute(prepare(spec), tmp_path, engine=RayEngine(workers=2))
    assert json.loads((tmp_path / "provenance.json").read_text())["chunks"] == {"total": 12, "reused": 3}
    _assert_same_rows(local_run, tmp_path)


def test_explain_dataset_on_ray_equals_local(ckpt, tmp_path, capsys):
    args = ["explain-dataset", "xvit-shapes:single:test:10", "--model", str(ckpt), "--methods", "rollout",
            "attnlrp", "--batch-size", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    local = list(xvit.load_maps(tmp_path / "local"))
    on_ray = sorted(xvit.load_maps(tmp_path / "ray"), key=lambda r: r.index)
    assert [r.index for r in local] == list(range(10)) and [r.index for r in on_ray] == list(range(10))
    for a, b in zip(local, on_ray):
        assert (a.id, a.predicted, a.top5, a.targets) == (b.id, b.predicted, b.top5, b.targets)
        for m in ("rollout", "attnlrp"):
            np.testing.assert_allclose(a.maps[m], b.maps[m], atol=1e-6)
    assert xvit.load_maps(tmp_path / "ray").info["engine"]["name"] == "ray"


def test_engine_options_are_checked(spec, ckpt):
    unnamed = RunSpec(**{**spec.to_dict(), "model": None, "methods": ("rollout",), "metrics": ("segmentation",)})
    with pytest.raises(ValueError, match="as a spec"):
        execute(prepare(unnamed, model=xvit.load_model(ckpt)), engine=RayEngine())
    assert isinstance(make_engine("local"), LocalEngine)
    with pytest.raises(ValueError, match="Ray engine only"):
        make_engine("local", workers=2)
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("spark")
