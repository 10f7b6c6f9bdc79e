"""Guidance evaluation on two-object data (xvit.analysis.guide_eval): region construction, the table's shares on a
hand-made case, resuming from saved chunks, and batch invariance."""

import pytest
import torch

from xvit.analysis import guide_eval
from xvit.analysis.guide_eval import GuideArm, guide_top1, run_guide_eval, shape_regions, summarise_guide
from xvit.data.sources.base import load_dataset
from xvit.models import preprocessing_for

from ..tiny_models import SIZE, make

ARMS = [GuideArm("logit_bias", 1.0, None, "mask"), GuideArm("mask_renorm", 1.0, (-1,), "patch+1")]


@pytest.fixture(scope="module")
def pair_data():
    return load_dataset("xvit-shapes:pair:test:3", size=(SIZE, SIZE))


def test_region_constructions_on_a_hand_made_coverage():
    cov = torch.zeros(1, 2, 4, 4)
    cov[0, 0, 0, 0] = 0.25
    cov[0, 1, 3, 3] = 1.0
    assert torch.equal(shape_regions(cov, "mask"), cov)
    assert shape_regions(cov, "patch")[0, 0, 0, 0] == 1 and shape_regions(cov, "patch")[0, 0].sum() == 1
    dilated = shape_regions(cov, "patch+1")
    assert dilated[0, 0].sum() == 4 and dilated[0, 1].sum() == 4 and dilated[0, 0, 1, 1] == 1
    not_other = shape_regions(cov, "not_other")
    assert torch.equal(not_other[0, 0], 1 - dilated[0, 1]) and torch.equal(not_other[0, 1], 1 - dilated[0, 0])
    assert torch.equal(shape_regions(cov[:, :1], "not_other"), torch.ones(1, 1, 4, 4))  # no other object


def test_arm_keys_are_distinct_and_bad_arms_are_refused():
    assert ARMS[0].key == "logit_bias|beta=1|blocks=all|region=mask"
    assert ARMS[1].key == "mask_renorm|beta=-|blocks=-1|region=patch+1"
    with pytest.raises(ValueError, match="region"):
        GuideArm(region="box")


def test_summary_shares_on_a_hand_made_case():
    arm = GuideArm()
    chunks = [{"labels": [[1, 2]], "unguided": {"classes": [[1, 5]], "probs": [[0.6, 0.2]]},
               "arms": {arm.key: {"classes": [[1, 2]], "probs": [[0.9, 0.7]]}}},
              {"labels": [[3, 4]], "unguided": {"classes": [[4, 3]], "probs": [[0.4, 0.3]]},
               "arms": {arm.key: {"classes": [[3, 3]], "probs": [[0.5, 0.5]]}}}]
    unguided, guided = summarise_guide(chunks, [arm])
    # unguided top-1 used for both regions: image 0 names region 0, image 1 names region 1 -> 2 of 4
    assert unguided["region_acc"] == pytest.approx(0.5) and unguided["n"] == 2
    assert unguided["both"] == pytest.approx(0.5)  # only image 1's top-2 are exactly its two classes
    assert unguided["prob"] == pytest.approx(0.5)
    assert guided["region_acc"] == pytest.approx(0.75)  # 3 of 4 regions right
    assert guided["both"] == pytest.approx(0.5) and guided["distinct"] == pytest.approx(0.5)
    assert guided["prob"] == pytest.approx(0.65)
    assert guided["top_class"] == 3 and guided["top_share"] == pytest.approx(0.5)  # class 3 named in 2 of 4 regions
    assert unguided["top_share"] == pytest.approx(0.5)


def test_resume_skips_finished_chunks_and_computes_only_missing_arms(pair_data, tmp_path, monkeypatch):
    model = make("xvit")
    first = run_guide_eval(model, pair_data, tmp_path, ARMS[:1], chunk=2, log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images_00000_00002.json", "images_00002_00003.json"]
    calls = []
    real = guide_eval.guide_top1

    def counting(model, x, masks, arms):
        calls.append([a.key for a in arms])
        return real(model, x, masks, arms)

    monkeypatch.setattr(guide_eval, "guide_top1", counting)
    again = run_guide_eval(model, pair_data, tmp_path, ARMS[:1], chunk=2, log=lambda _: None)
    assert calls == [] and again == first
    extended = run_guide_eval(model, pair_data, tmp_path, ARMS, chunk=2, log=lambda _: None)
    assert calls == [[ARMS[1].key], [ARMS[1].key]]
    assert [c["arms"][ARMS[0].key] for c in extended] == [c["arms"][ARMS[0].key] for c in first]


def test_results_do_not_depend_on_the_chunking(pair_data, tmp_path):
    model = make("timm_vit")
    one = run_guide_eval(model, pair_data, tmp_path / "one", ARMS, chunk=1, log=lambda _: None)
    three = run_guide_eval(model, pair_data, tmp_path / "three", ARMS, chunk=3, log=lambda _: None)
    for arm in ARMS:
        assert [r for c in one for r in c["arms"][arm.key]["classes"]] == three[0]["arms"][arm.key]["classes"]
        torch.testing.assert_close(torch.tensor([r for c in one for r in c["arms"][arm.key]["probs"]]),
                                   torch.tensor(three[0]["arms"][arm.key]["probs"]), rtol=1e-5, atol=1e-6)
    assert summarise_guide(one, ARMS)[1]["region_acc"] == summarise_guide(three, ARMS)[1]["region_acc"]


def test_all_ones_regions_give_the_unguided_class(pair_data):
    model = make("xvit")
    batch = pair_data.load(range(3), preprocessing_for(model))
    out = guide_top1(model, batch.x, torch.ones(3, 2, SIZE, SIZE), [GuideArm("logit_bias", 4.0, None, "mask")])
    unguided = [row[0] for row in out["unguided"]["classes"]]
    assert out[GuideArm("logit_bias", 4.0, None, "mask").key]["classes"] == [[c, c] for c in unguided]


def test_blocks_outside_the_model_are_refused(pair_data):
    model = make("xvit")  # two blocks
    batch = pair_data.load(range(1), preprocessing_for(model))
    with pytest.raises(ValueError, match="2-block model"):
        guide_top1(model, batch.x, batch.masks, [GuideArm(blocks=(5,))])


def test_data_without_pairs_is_refused(tmp_path):
    with pytest.raises(ValueError, match="two-object data"):
        run_guide_eval(make("xvit"), load_dataset("xvit-shapes:single:test:2", size=(SIZE, SIZE)), tmp_path, ARMS)


def test_a_reversed_run_gives_the_same_chunks_in_data_order(pair_data, tmp_path):
    model = make("xvit")
    forward = run_guide_eval(model, pair_data, tmp_path / "f", ARMS[:1], chunk=2, log=lambda _: None)
    order = []
    backward = run_guide_eval(model, pair_data, tmp_path / "b", ARMS[:1], chunk=2, reverse=True, log=order.append)
    assert backward == forward and [line.split(":")[0] for line in order] == ["guide images 2-2", "guide images 0-1"]
