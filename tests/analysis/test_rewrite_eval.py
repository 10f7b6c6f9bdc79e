"""Class-rewriting evaluation (xvit.analysis.rewrite_eval): the summary on hand-made records, resuming from saved
chunks, and batch invariance."""

import pytest

from xvit.analysis import rewrite_eval
from xvit.analysis.rewrite_eval import chunk_path, run_rewrite_eval, summarise_rewrite
from xvit.data.sources.base import load_dataset

from ..tiny_models import SIZE, make


def _rec(index, arm, success, l2, patches=4, psnr=40.0):
    return {"index": index, "arm": arm, "epsilon": 2 / 255, "q": 0.25, "success": success, "steps": 3,
            "target_prob": 0.6, "linf": 2 / 255, "l2": l2, "psnr": psnr, "ssim": 0.99, "patches": patches,
            "source": 0, "target": 1}


def test_summary_on_hand_made_records():
    records = [_rec(0, "explanation", True, 1.0), _rec(1, "explanation", True, 3.0), _rec(2, "explanation", False, 9.0),
               _rec(0, "random", True, 2.0), _rec(1, "random", False, 5.0), _rec(2, "random", False, 9.0),
               _rec(0, "unrestricted", True, 4.0, patches=16, psnr=None)]
    rows = {r["arm"]: r for r in summarise_rewrite(records)}
    assert [r["arm"] for r in summarise_rewrite(records)] == ["explanation", "unrestricted", "random"]
    assert rows["explanation"]["success"] == pytest.approx(2 / 3) and rows["explanation"]["n"] == 3
    assert rows["explanation"]["l2"] == pytest.approx(2.0)  # mean over the successful images only
    assert rows["random"]["success"] == pytest.approx(1 / 3) and rows["random"]["l2"] == pytest.approx(2.0)
    # paired: only image 0 succeeds in both the explanation and the random arm
    assert rows["explanation"]["paired_n"] == 1 and rows["explanation"]["paired_l2"] == pytest.approx(1.0)
    assert rows["random"]["paired_l2"] == pytest.approx(2.0)
    assert rows["unrestricted"]["paired_n"] is None and rows["unrestricted"]["psnr"] is None  # unchanged -> no PSNR
    assert rows["unrestricted"]["patches"] == 16


@pytest.fixture(scope="module")
def data():
    return load_dataset("xvit-shapes:single:test:3", size=(SIZE, SIZE))


def test_resume_skips_finished_chunks(data, tmp_path, monkeypatch):
    model = make("xvit")
    first = run_rewrite_eval(model, data, tmp_path, epsilons=[4 / 255], qs=[0.25], steps=2, chunk=2,
                             log=lambda _: None)
    assert len(first) == 3 * 3 and {r["index"] for r in first} == {0, 1, 2}
    assert chunk_path(tmp_path, 4 / 255, 0.25, 0, 2).exists() and chunk_path(tmp_path, 4 / 255, 0.25, 2, 1).exists()

    def refuse(*_, **__):
        raise AssertionError("a finished chunk was recomputed")

    monkeypatch.setattr(rewrite_eval, "rewrite_records", refuse)
    assert run_rewrite_eval(model, data, tmp_path, epsilons=[4 / 255], qs=[0.25], steps=2, chunk=2,
                            log=lambda _: None) == first
    chunk_path(tmp_path, 4 / 255, 0.25, 2, 1).write_text("{truncated")  # an unreadable chunk is recomputed
    with pytest.raises(AssertionError, match="recomputed"):
        run_rewrite_eval(model, data, tmp_path, epsilons=[4 / 255], qs=[0.25], steps=2, chunk=2, log=lambda _: None)


def test_records_do_not_depend_on_the_chunking(data, tmp_path):
    model = make("timm_vit")
    kw = {"epsilons": [2 / 255], "qs": [0.25], "steps": 3, "log": lambda _: None}
    one = run_rewrite_eval(model, data, tmp_path / "one", chunk=1, **kw)
    three = run_rewrite_eval(model, data, tmp_path / "three", chunk=3, **kw)
    key = ("index", "arm", "success", "steps", "patches", "source", "target")
    assert [tuple(r[k] for k in key) for r in one] == [tuple(r[k] for k in key) for r in three]
    for a, b in zip(one, three):
        assert a["l2"] == pytest.approx(b["l2"], rel=1e-4, abs=1e-6)


def test_a_reversed_run_gives_the_same_records_in_data_order(data, tmp_path):
    model = make("xvit")
    kw = {"epsilons": [4 / 255], "qs": [0.5], "steps": 2, "chunk": 2}
    forward = run_rewrite_eval(model, data, tmp_path / "f", log=lambda _: None, **kw)
    order = []
    backward = run_rewrite_eval(model, data, tmp_path / "b", reverse=True, log=order.append, **kw)
    assert backward == forward and [r["index"] for r in backward] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "images 2-2" in order[0] and "images 0-1" in order[1]
