"""The evaluation runner and ``xvit evaluate``: outputs, applicability rules, resume, errors."""

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import xvit
from xvit.cli import main
from xvit.data.shapes import SHAPE_CLASSES
from xvit.data.sources import EvalDataset
from xvit.evaluate import METRICS, Metric, Plot, chunks, register_metric, runner, state
from xvit.evaluate.runner import evaluate
from xvit.models import Preprocessing, create_vit, save_checkpoint
from xvit.params import Interval

ALL_COLUMNS = ["perturbation_pos", "perturbation_neg", "deletion", "insertion", "segmentation", "pointing_game",
               "energy_pointing_game", "class_sensitivity", "randomization", "conservation", "cost"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tiny models are dominated by thread overhead on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = create_vit("nano", img_size=32, patch_size=8, num_classes=10)
    return save_checkpoint(model, tmp_path_factory.mktemp("eval") / "ckpt", preprocessing=Preprocessing(size=(32, 32)),
                           class_names=list(SHAPE_CLASSES))


@pytest.fixture(scope="module")
def model(ckpt):
    return xvit.load_model(ckpt)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_cli_writes_scores_summary_curves_and_provenance(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["evaluate", "--model", str(ckpt), "--data", "xvit-shapes:single:test:8", "--methods", "rollout",
                 "attnlrp", "--out", str(out), "--batch-size", "4", "--steps", "8", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "| rollout |" in stdout and "| attnlrp |" in stdout
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert table[-1].startswith("| random (chance) |")  # the chance baseline closes the table

    rows = _read_csv(out / "per_image.csv")
    assert len(rows) == 24 and {r["method"] for r in rows} == {"rollout", "attnlrp", "random"}
    assert set(ALL_COLUMNS[:-1]) | {"cost_seconds", "image_id", "label", "predicted", "explained"} <= set(rows[0])

    summary = json.loads((out / "summary.json").read_text())
    by = {(r["method"], r["column"]): r for r in summary["rows"]}
    assert set(by) == {(m, c) for m in ("rollout", "attnlrp", "random") for c in ALL_COLUMNS}
    for (method, column), row in by.items():
        skipped = column == "class_sensitivity" or (column == "conservation" and method != "attnlrp")
        assert row["status"] == ("skipped" if skipped else "ok"), (method, column, row["note"])
        if skipped:
            continue
        assert row["ci95_low"] <= row["mean"] <= row["ci95_high"]
        assert row["direction"] in ("↑", "↓", "→1")
        values = [float(r[column if column != "cost" else "cost_seconds"]) for r in rows
                  if r["method"] == method and r[column if column != "cost" else "cost_seconds"] != ""]
        assert row["mean"] == pytest.approx(float(np.mean(values)), rel=1e-5)
    assert by[("rollout", "perturbation_pos")]["direction"] == "↓"
    assert by[("rollout", "perturbation_neg")]["direction"] == "↑"
    # Cost of each evaluation in forward passes per image: clean + 9 fractions; k = 0..8 deletion states.
    assert by[("rollout", "perturbation_pos")]["passes_per_image"] == 10
    assert by[("rollout", "deletion")]["passes_per_image"] == 9
    assert by[("rollout", "randomization")]["passes_per_image"] == 4 + 3 + 1  # head, norm, 4 blocks, embed, a_0
    assert by[("attnlrp", "cost")]["details"]["relative_to_forward"] > 0

    md = (out / "summary.md").read_text()
    for column in ALL_COLUMNS:
        assert column in md
    assert "class_sensitivity: skipped" in md

    for name in ("perturbation", "deletion_insertion", "randomization"):
        with Image.open(out / "curves" / f"{name}.png") as im:
            assert im.format == "PNG" and im.width > 100

    prov = json.loads((out / "provenance.json").read_text())
    assert {"xvit", "torch", "numpy"} <= set(prov["versions"])
    digest = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert prov["model"]["weights"]["model.safetensors"] == digest and prov["model"]["spec"] == str(ckpt)
    assert prov["data"]["image_ids"] == [f"shapes:single:test:{i}" for i in range(8)]
    assert prov["methods"]["attnlrp"] == {"conv_gamma": 0.0, "linear_gamma": 0.0}
    assert prov["options"]["deletion_insertion_steps"] == 8 and prov["seeds"]["explanations"] == 0
    assert set(prov["wall_clock_seconds"]) == {"rollout", "attnlrp", "random"}
    assert prov["command"].startswith("xvit evaluate --model") and "--steps 8" in prov["command"]


def test_pair_data_scores_class_sensitivity_with_both_labelled_classes(model):
    res = evaluate(model, "xvit-shapes:pair:test:4", ["gradcam", "rollout"],
                   ["class_sensitivity", "pointing_game", "segmentation"], batch_size=4)
    rows = {(r["method"], r["column"]): r for r in res.summary}
    assert all(r["status"] == "ok" for r in rows.values())
    scores = res.results["gradcam"]["class_sensitivity"].scores
    finite = scores[torch.isfinite(scores)]  # NaN: a map with no energy on either object
    assert scores.shape == (4,) and finite.numel() and ((finite >= 0) & (finite <= 1)).all()
    # A class-agnostic map is the same for both classes, so its score is E(A) / (E(A) + E(B)) averaged with the
    # reverse: exactly 0.5 wherever defined.
    agnostic = res.results["rollout"]["class_sensitivity"].scores
    assert torch.allclose(agnostic[torch.isfinite(agnostic)], torch.tensor(0.5))
    explained = {r["explained"] for r in res.per_image}
    assert explained and all(";" in r["label"] for r in res.per_image)


def test_explaining_the_target_and_skipping_what_does_not_apply(model):
    res = evaluate(model, "xvit-shapes:single:test:4", ["rollout"], ["class_sensitivity", "pointing_game"],
                   class_explained="target", batch_size=2)
    assert all(r["explained"] == r["label"] for r in res.per_image)
    assert [r["status"] for r in res.summary] == ["skipped", "ok"]
    assert any("class_sensitivity" in n for n in res.notes)


def test_marker_share_audit_through_the_cli(ckpt, model, tmp_path, capsys):
    out = tmp_path / "audit"
    spec = "xvit-shapes:spurious:test:4:marker=random"
    code = main(["evaluate", "--model", str(ckpt), "--data", spec, "--methods", "rollout", "--metrics",
                 "marker_share", "--out", str(out), "--batch-size", "2", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "| method | marker_share share [0-1] |" in stdout and "| rollout |" in stdout

    data = xvit.evaluate.load_dataset(spec, size=(32, 32))
    batch = data.load(range(4), xvit.models.preprocessing_for(model))
    assert batch.marker_masks.flatten(1).any(1).tolist() == [True, True, False, True]
    exp = xvit.explain(model, batch.x, "rollout")  # the predicted class, as the runner explains by default
    ref = xvit.evaluate.marker_share(exp.maps[:, 0], batch.marker_masks, exp.targets[:, 0])
    rows = [r for r in _read_csv(out / "per_image.csv") if r["method"] == "rollout"]
    assert [r["marker_share"] for r in rows][2] == ""  # no marker: excluded
    got = [float(r["marker_share"]) for i, r in enumerate(rows) if i != 2]
    assert got == pytest.approx(ref.scores[[0, 1, 3]].tolist(), abs=1e-6)

    row = json.loads((out / "summary.json").read_text())["rows"][0]
    assert (row["column"], row["status"], row["n"], row["direction"]) == ("marker_share", "ok", 3, "")
    assert row["mean"] == pytest.approx(ref.value, abs=1e-6)
    assert row["details"]["chance"] == pytest.approx(9 / 1024)  # a 3x3 marker rendered at 32x32
    assert row["details"]["shortcut_n"] == ref.summary["shortcut_n"]
    assert "| rollout | marker_share | chance | 8.79e-03 |" in (out / "summary.md").read_text()
    assert json.loads((out / "provenance.json").read_text())["data"]["marker"] == "random"


def test_the_marker_policy_is_part_of_the_resume_fingerprint():
    keys = {spec: state.data_key(xvit.evaluate.load_dataset(spec, limit=1))
            for spec in ("xvit-shapes:spurious:test:2:marker=random", "xvit-shapes:spurious:test:3:marker=random",
                         "xvit-shapes:spurious:test:2:marker=aligned", "xvit-shapes:single:test:2")}
    assert keys["xvit-shapes:spurious:test:2:marker=random"] == keys["xvit-shapes:spurious:test:3:marker=random"]
    assert keys["xvit-shapes:spurious:test:2:marker=random"] != keys["xvit-shapes:spurious:test:2:marker=aligned"]
    assert keys["xvit-shapes:single:test:2"] == ["xvit-shapes", "single", "test"]


def test_conservation_reads_relevance_and_completeness_from_the_explanations(model):
    x = torch.randn(3, 3, 32, 32)
    data = EvalDataset("random", [f"r{i}" for i in range(3)], None, None, False, False,
                       reader=lambda i: (((x[i] * 0.5 + 0.5).clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
                                         .numpy(), []))
    res = evaluate(model, data, ["integrated_gradients", "attnlrp", "full_lrp", "rollout"], ["conservation"],
                   method_params={"integrated_gradients": {"n_steps": 8}})
    batch = data.load(range(3), xvit.models.preprocessing_for(model))
    ig = xvit.explain(model, batch.x, "integrated_gradients", n_steps=8)
    delta = ig.logits.gather(1, ig.targets)[:, 0] - model(torch.zeros_like(batch.x)).gather(1, ig.targets)[:, 0]
    gap = (ig.raw[:, 0].sum((1, 2)) - delta).abs() / delta.abs()
    got = res.results["integrated_gradients"]["conservation"]
    assert torch.allclose(got.scores, gap.detach(), rtol=1e-3, atol=1e-5)
    assert got.summary["quantity"] == "completeness_gap" and got.higher_is_better is False
    lrp = xvit.explain(model, batch.x, "attnlrp")
    ratio = lrp.meta["relevance_sum"][:, 0] / lrp.meta["explained_logit"][:, 0]
    assert torch.allclose(res.results["attnlrp"]["conservation"].scores, ratio, rtol=1e-5)
    assert res.results["full_lrp"]["conservation"].summary["start"] == "one-hot"
    assert "conservation" not in res.results["rollout"]
    assert any("not applicable to rollout" in n for n in res.notes)


def _comparable(out):
    rows = [{k: v for k, v in r.items() if k != "cost_seconds"} for r in _read_csv(out / "per_image.csv")]
    summary = [{k: v for k, v in r.items() if k not in ("seconds", "details")}
               for r in json.loads((out / "summary.json").read_text())["rows"] if r["metric"] != "cost"]
    return rows, summary


def test_no_baseline_leaves_out_the_random_row(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(ckpt), "--data", "xvit-shapes:single:test:2", "--methods", "rollout",
                 "--metrics", "segmentation", "--out", str(out), "--no-progress", "--no-baseline"]) == 0
    assert "random" not in capsys.readouterr().out
    assert {r["method"] for r in _read_csv(out / "per_image.csv")} == {"rollout"}
    assert "--no-baseline" in json.loads((out / "provenance.json").read_text())["command"]


def test_interrupted_runs_resume_and_equal_a_clean_run(ckpt, tmp_path, monkeypatch, capsys):
    args = ["evaluate", "--model", str(ckpt), "--data", "xvit-shapes:single:test:6", "--methods", "rollout",
            "attnlrp", "--metrics", "perturbation", "deletion_insertion", "segmentation", "randomization",
            "conservation", "cost", "--batch-size", "3", "--steps", "4", "--randomization-images", "4",
            "--no-progress", "--no-baseline"]
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    assert main([*args, "--out", str(clean)]) == 0

    write_state = runner.write_state
    written = []

    def interrupt_after_first_chunk(state_dir, unit):
        if written:
            raise KeyboardInterrupt
        write_state(state_dir, unit)
        written.append((unit["method"], unit["start"]))

    monkeypatch.setattr(runner, "write_state", interrupt_after_first_chunk)
    capsys.readouterr()
    assert main([*args, "--out", str(resumed)]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert written == [("rollout", 0)] and not (resumed / "summary.json").exists()
    monkeypatch.setattr(runner, "write_state", write_state)

    computed = []
    run_chunk = chunks.run_chunk

    def counting(plan, method, batch, *a, **k):
        computed.append((method, batch.indices[0]))
        return run_chunk(plan, method, batch, *a, **k)

    monkeypatch.setattr(chunks, "run_chunk", counting)
    assert main([*args, "--out", str(resumed)]) == 0
    assert sorted(computed) == [("attnlrp", 0), ("attnlrp", 3), ("rollout", 3)]
    assert _comparable(resumed) == _comparable(clean)
    assert json.loads((resumed / "provenance.json").read_text())["chunks"] == {"total": 4, "reused": 1}

    # Lose one chunk's state: only that chunk is computed again.
    (resumed / "state" / "attnlrp" / "0000003-0000006.pt").unlink()
    computed.clear()
    assert main([*args, "--out", str(resumed)]) == 0
    assert computed == [("attnlrp", 3)]
    assert _comparable(resumed) == _comparable(clean)

    # Other settings do not reuse the saved chunks.
    computed.clear()
    assert main([*args, "--out", str(resumed), "--seed", "1"]) == 0
    assert len(computed) == 4


def test_results_do_not_depend_on_the_chunk_size(model):
    kwargs = dict(methods=["attnlrp"], metrics=["perturbation", "segmentation", "pointing_game", "randomization"],
                  randomization_images=5)
    one = evaluate(model, "xvit-shapes:single:test:6", batch_size=6, **kwargs)
    three = evaluate(model, "xvit-shapes:single:test:6", batch_size=4, **kwargs)
    for column in ("perturbation_pos", "segmentation", "pointing_game", "randomization"):
        a, b = one.results["attnlrp"][column], three.results["attnlrp"][column]
        assert torch.allclose(a.scores, b.scores, atol=1e-4, equal_nan=True), column
        assert a.value == pytest.approx(b.value, abs=1e-4, nan_ok=True)
    rand = [r["randomization"] for r in one.per_image]
    assert [v is None for v in rand] == [False] * 5 + [True]


def test_gtsegs_file_through_the_runner(model, tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    path = tmp_path / "gtsegs_ijcv.mat"
    with h5py.File(path, "w") as f:
        img_refs = np.empty((3, 1), dtype=h5py.ref_dtype)
        gt_refs = np.empty((3, 1), dtype=h5py.ref_dtype)
        for i in range(3):
            img_refs[i, 0] = f.create_dataset(f"#refs#/i{i}", data=rng.integers(0, 256, (3, 40, 30), np.uint8)).ref
            gt = f.create_dataset(f"#refs#/g{i}", data=(rng.random((40, 30)) > 0.5).astype(np.uint8))
            gt_refs[i, 0] = f.create_dataset(f"#refs#/c{i}", data=np.array([[gt.ref]], dtype=h5py.ref_dtype)).ref
        f.create_dataset("value/img", data=img_refs)
        f.create_dataset("value/gt", data=gt_refs)
    res = evaluate(model, str(path), ["rollout"], ["segmentation", "perturbation", "class_sensitivity"])
    rows = {r["column"]: r for r in res.summary}
    assert rows["segmentation"]["status"] == "ok" and rows["class_sensitivity"]["status"] == "skipped"
    assert rows["perturbation_pos"]["details"]["clean_accuracy"] == 1.0  # no labels: the prediction stands in
    assert any("no labels" in n for n in res.notes)


@pytest.mark.parametrize("extra, message", [
    (["--data", "xvit-shapes:nope:test"], "xvit-shapes:<variant>:<split>"),
    (["--data", "/no/such/dir"], "neither an existing folder"),
    (["--data", "xvit-shapes:single:test:4", "--metrics", "perturbaton"], "Did you mean 'perturbation'"),
    (["--data", "xvit-shapes:single:test:4", "--methods", "rolout"], "unknown method 'rolout'"),
    (["--data", "xvit-shapes:single:test:4", "--method-param", "rollout=3"], "NAME.KEY=VALUE"),
    (["--data", "xvit-shapes:single:test:4", "--param", "rollout.head_fusion=median"], "head_fusion"),
    (["--data", "xvit-shapes:single:test:4", "--metric-param", "segmentation.tol=3"], "takes none"),
    (["--data", "xvit-shapes:single:test:4", "--method-param", "rollout.head_fusion=median"], "head_fusion"),
    (["--data", "xvit-shapes:single:test:4", "--metric-param", "perturbation.mode=negative"], "sets perturbation.mode"),
    (["--data", "xvit-shapes:single:test:4", "--metrics", "marker_share"], "xvit-shapes:spurious:test:200"),
    (["--data", "xvit-shapes:spurious:test:4:marker=sometimes"], "must be one of correlated, exclusive, random"),
])
def test_user_errors_exit_2_with_one_line(ckpt, tmp_path, capsys, extra, message):
    args = ["evaluate", "--model", str(ckpt), "--out", str(tmp_path / "o"), "--no-progress", *extra]
    assert main(args) == 2
    err = _one_line(capsys)
    assert err.startswith("xvit evaluate: error:") and message in err, err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_target_without_labels_is_a_user_error(model):
    data = EvalDataset("x", ["a"], None, None, False, False, reader=lambda i: (np.zeros((32, 32, 3), np.uint8), []))
    with pytest.raises(ValueError, match="needs labels"):
        evaluate(model, data, ["rollout"], ["perturbation"], class_explained="target")


def test_energy_maps_use_magnitude_or_positive_part_for_signed_methods():
    from xvit.evaluate.inputs import energy_maps
    from xvit.result import Explanation

    raw = torch.tensor([[[[-2.0, 0.0], [1.0, 0.0]]]])
    maps = (raw - raw.min()) / (raw.max() - raw.min())
    signed = Explanation(raw, maps.expand(1, 1, 2, 2), torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 3),
                         "x", {}, {"signed": True})
    torch.testing.assert_close(energy_maps(signed, "abs"), raw.abs())
    torch.testing.assert_close(energy_maps(signed, "positive"), raw.clamp(min=0))
    unsigned = Explanation(raw, maps, signed.targets, signed.logits, "x", {}, {"signed": False})
    torch.testing.assert_close(energy_maps(unsigned, "abs"), maps)


class MaskShare(Metric):
    """A toy metric defined outside xvit: the share of the map inside the mask, times ``scale``."""

    higher_is_better = True
    requires = frozenset({"masks"})
    display = ("largest",)
    plots = (Plot("mask_share_profile", ("mask_share",), "pixel", "map value"),)
    param_constraints = {"scale": Interval(0, None)}

    def __init__(self, *, scale: float = 1.0) -> None:
        super().__init__(scale=scale)

    def update(self, maps, masks):
        share = (maps * masks).flatten(1).sum(1) / maps.flatten(1).sum(1)
        self._append(share=self.scale * share, profile=maps.flatten(1)[:, :3])

    def update_from(self, inp):
        self.update(inp.maps, inp.masks)

    def compute(self):
        share = self._cat("share")
        return self._result(share, summary={"largest": float(share.max())}, curves=self._cat("profile"),
                            curve_x=torch.arange(3.0))


@pytest.fixture
def mask_share():
    """MaskShare registered for one test (removed afterwards)."""
    yield register_metric("mask_share", citation="a test")(MaskShare)
    METRICS.remove("mask_share")


def test_a_registered_metric_runs_with_its_columns_summary_and_plots(mask_share, ckpt, model, tmp_path, capsys):
    out = tmp_path / "toy"
    spec = "xvit-shapes:single:test:4"
    code = main(["evaluate", "--model", str(ckpt), "--data", spec, "--methods", "rollout", "--metrics", "mask_share",
                 "--metric-param", "mask_share.scale=2", "--out", str(out), "--batch-size", "3", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "| method | mask_share ↑ |" in capsys.readouterr().out

    batch = xvit.evaluate.load_dataset(spec, size=(32, 32)).load(range(4), xvit.models.preprocessing_for(model))
    maps = xvit.explain(model, batch.x, "rollout").maps[:, 0]
    expected = 2 * (maps * batch.masks).flatten(1).sum(1) / maps.flatten(1).sum(1)
    rows = [r for r in _read_csv(out / "per_image.csv") if r["method"] == "rollout"]
    assert [float(r["mask_share"]) for r in rows] == pytest.approx(expected.tolist(), abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    row = summary["rows"][0]
    assert (row["column"], row["status"], row["direction"]) == ("mask_share", "ok", "↑")
    assert row["details"]["largest"] == pytest.approx(float(expected.max()), abs=1e-6)
    assert summary["curves"]["mask_share"]["rollout"]["x"] == [0.0, 1.0, 2.0]
    assert "| rollout | mask_share | largest |" in (out / "summary.md").read_text()
    with Image.open(out / "curves" / "mask_share_profile.png") as im:
        assert im.format == "PNG"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["metrics"]["mask_share"] == {"metric": "mask_share", "scale": 2}
    assert "mask_share" in xvit.evaluate.metrics() and "mask_share" in xvit.evaluate.default_metrics()

    # Its requirement decides where it runs: on data without masks it is skipped, with the reason.
    data = EvalDataset("x", ["a"], torch.tensor([0]), None, False, False,
                       reader=lambda i: (np.zeros((32, 32, 3), np.uint8), []))
    res = evaluate(model, data, ["rollout"], ["mask_share"])
    assert res.summary[0]["status"] == "skipped" and res.summary[0]["note"] == "the data set has no ground-truth masks"
