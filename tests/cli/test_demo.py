"""``xvit demo``: the story page (sections, scores, colour bars, references once) on a tiny sample tree."""

import html
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import xvit
from xvit.cli import demo, main
from xvit.data.images import load_images
from xvit.models import Preprocessing, create_vit, preprocessing_for, save_checkpoint

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring"]
SIZE = 32


def _write(folder, name, rng, masks=(), **item):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    mask_files = []
    for j, (r0, r1, c0, c1) in enumerate(masks):
        m = np.zeros((SIZE, SIZE), np.uint8)
        m[r0:r1, c0:c1] = 255
        mask_files.append(f"{name}_{j}_mask.png")
        Image.fromarray(m).save(folder / mask_files[-1])
    return {"file": f"{name}.png", "masks": mask_files, **item}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    model = create_vit("nano", img_size=SIZE, patch_size=8, num_classes=len(CLASSES))
    save_checkpoint(model, root / "ckpt", preprocessing=Preprocessing(size=(SIZE, SIZE)), class_names=CLASSES)
    rng = np.random.default_rng(0)
    samples = root / "samples"
    single = [_write(samples / "single", f"s{i}", rng, [(8, 20, 4, 16)], labels=[1], class_names=["square"])
              for i in range(2)]
    pair = [_write(samples / "pair", f"p{i}", rng, [(2, 12, 2, 12), (18, 30, 18, 30)], labels=[2, 3],
                   class_names=["triangle", "star"]) for i in range(2)]
    spurious = [_write(samples / "spurious", f"m{i}", rng, [(10, 20, 10, 20)], labels=[4], class_names=["cross"],
                       marker=i == 1, marker_box=[1, 1, 5, 5] if i == 1 else [0, 0, 0, 0]) for i in range(2)]
    for variant, items in (("single", single), ("pair", pair), ("spurious", spurious)):
        (samples / variant / "samples.json").write_text(json.dumps({"items": items}))
    return root


def test_samples_carry_their_ground_truth(workspace):
    samples = demo.discover_samples(workspace / "samples")
    assert list(samples) == ["single", "pair", "spurious"]
    p0 = samples["pair"][0]
    assert p0.label == "triangle + star" and p0.labels == (2, 3) and [m.name for m in p0.masks] == ["p0_0_mask.png",
                                                                                                    "p0_1_mask.png"]
    assert [s.marker_box for s in samples["spurious"]] == [None, (1, 1, 5, 5)]


@pytest.fixture(scope="module")
def page(workspace):
    out = workspace / "out"
    monkey = pytest.MonkeyPatch()
    monkey.setattr(demo, "SAMPLES_DIR", workspace / "samples")
    try:
        assert main(["demo", "--model", str(workspace / "ckpt"), "--spurious-model", str(workspace / "ckpt"),
                     "--methods", "rollout", "gradcam", "attnlrp", "--images", "2", "--out", str(out)]) == 0
    finally:
        monkey.undo()
    return out, (out / "index.html").read_text()


def test_page_tells_the_story_in_sections(page):
    out, text = page
    for key in ("single", "pair", "spurious", "notes", "references", "details"):
        assert f'href="#{key}"' in text and f'id="{key}"' in text  # table of contents and its targets
    assert text.count('class="look"') == 3 and text.count('class="finding"') == 3
    assert "which methods find the object" in text and "class-sensitive" in text and "corner marker" in text
    assert "Grad-CAM&#x27;s halo" in text  # gradcam was run: its note is there
    assert "<script" not in text and "http" not in text


def test_citations_are_listed_once_and_referenced_by_number(page):
    _, text = page
    for method in ("rollout", "gradcam", "attnlrp"):
        assert text.count(html.escape(xvit.methods()[method]["citation"])) == 1
    refs = re.findall(r'<li id="ref-(\d+)"><b>([^<]+)</b>', text)
    assert [name for _, name in refs][:3] == ["rollout", "gradcam", "attnlrp"]
    assert text.count('href="#ref-1"') == 3  # rollout's column header in each section


def test_colour_bars_and_overlays_are_written(page):
    out, text = page
    for name in ("colourbar_unsigned.png", "colourbar_signed.png"):  # rollout/gradcam unsigned, attnlrp signed
        assert f'src="{name}"' in text and (out / name).is_file()
    # a pair cell shows both classes' maps side by side
    for src in ("pair/p0_rollout_1.png", "pair/p0_rollout_2.png", "single/s0_gradcam.png", "spurious/m1.png"):
        assert f'src="{src}"' in text and (out / src).is_file()
    results = json.loads((out / "results.json").read_text())
    pair = [r for r in results["images"] if r["group"] == "pair"][0]
    assert [t["target"]["name"] for t in pair["methods"]["rollout"]["explained"]] == ["triangle", "star"]
    # the marked image comes first in the spurious section
    assert [r["name"] for r in results["images"] if r["group"] == "spurious"] == ["m1", "m0"]


def test_single_score_is_the_share_of_the_map_on_the_object(workspace, page):
    out, text = page
    model = xvit.load_model(str(workspace / "ckpt"))
    files = [workspace / "samples" / "single" / f"s{i}.png" for i in range(2)]
    x, _ = load_images(files, preprocessing_for(model))
    masks = torch.stack([torch.from_numpy(np.asarray(Image.open(f.with_name(f.stem + "_0_mask.png"))) > 127)
                         for f in files])
    expected = xvit.evaluate.energy_pointing_game(xvit.explain(model, x, "rollout").maps[:, 0], masks,
                                                  max_overlap=None).value
    single = text.split('id="single"')[1].split('id="pair"')[0]
    foot = re.search(r"<tfoot>(.*?)</tfoot>", single).group(1)
    assert re.findall(r"<td>([0-9.–]+)</td>", foot)[0] == f"{expected:.2f}"


def test_method_parameters_reach_the_demo_and_bad_ones_stop_it_first(workspace, tmp_path, capsys):
    monkey = pytest.MonkeyPatch()
    monkey.setattr(demo, "SAMPLES_DIR", workspace / "samples")
    try:
        common = ["demo", "--model", str(workspace / "ckpt"), "--spurious-model", str(workspace / "ckpt"),
                  "--methods", "rollout", "--images", "1"]
        assert main([*common, "--out", str(tmp_path / "bad"), "--param", "rollout.head_fusion=median"]) == 2
        assert "xvit demo: error: --param: rollout" in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
        for fusion in ("mean", "max"):
            assert main([*common, "--out", str(tmp_path / fusion), "--param", f"rollout.head_fusion={fusion}"]) == 0
    finally:
        monkey.undo()
    overlay = "single/s0_rollout.png"
    assert (tmp_path / "mean" / overlay).read_bytes() != (tmp_path / "max" / overlay).read_bytes()
