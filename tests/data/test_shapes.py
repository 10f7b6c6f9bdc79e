"""xvit-shapes: determinism, ground-truth exactness, variant statistics and the on-disk format."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from xvit.data import SHAPE_CLASSES, ShapesBatch, ShapesDataset, make_shapes, shapes_labels, write_shapes
from xvit.data.shapes import MARKER_COLOR, default_seed

SIZE = 64


def test_at_least_eight_distinct_classes():
    assert len(SHAPE_CLASSES) >= 8
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES)


@pytest.mark.parametrize("variant", ["single", "pair", "spurious"])
def test_same_seed_same_bytes_and_independent_of_n(variant):
    a = make_shapes(variant, 6, seed=123, size=SIZE)
    b = make_shapes(variant, 6, seed=123, size=SIZE)
    for name in ("images", "labels", "masks", "boxes", "seeds", "marker"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    head = make_shapes(variant, 3, seed=123, size=SIZE)
    assert torch.equal(head.images, a.images[:3])
    tail = make_shapes(variant, 2, seed=123, size=SIZE, start=4)
    assert torch.equal(tail.images, a.images[4:])
    assert torch.equal(tail.masks, a.masks[4:])
    other = make_shapes(variant, 6, seed=124, size=SIZE)
    assert not torch.equal(other.images, a.images)


def test_splits_and_variants_have_their_own_default_seeds():
    seeds = {default_seed(v, s) for v in ("single", "pair", "spurious") for s in ("train", "val", "test")}
    assert len(seeds) == 9
    train = make_shapes("single", 4, size=SIZE, split="train")
    test = make_shapes("single", 4, size=SIZE, split="test")
    assert not torch.equal(train.images, test.images)
    assert torch.equal(train.images, make_shapes("single", 4, seed=default_seed("single", "train"), size=SIZE).images)


@pytest.mark.parametrize("variant,k", [("single", ()), ("pair", (2,)), ("spurious", ())])
def test_shapes_and_dtypes(variant, k):
    n = 5
    b = make_shapes(variant, n, size=SIZE)
    assert isinstance(b, ShapesBatch) and len(b) == n
    assert b.images.shape == (n, 3, SIZE, SIZE) and b.images.dtype == torch.uint8
    assert b.labels.shape == (n, *k) and b.labels.dtype == torch.int64
    assert b.masks.shape == (n, *k, SIZE, SIZE) and b.masks.dtype == torch.bool
    assert b.boxes.shape == (n, *k, 4) and b.boxes.dtype == torch.int64
    assert b.seeds.shape == (n,) and b.marker.shape == (n,) and b.marker.dtype == torch.bool
    assert b.class_names == list(SHAPE_CLASSES)
    assert b.variant == variant and b.split == "train"
    assert int(b.labels.min()) >= 0 and int(b.labels.max()) < len(SHAPE_CLASSES)


def _check_object(image: np.ndarray, mask: np.ndarray, box: list[int]) -> None:
    """The mask is exactly the object: one colour inside, and that colour on no pixel bordering it."""
    assert mask.sum() >= 20
    colours = np.unique(image[mask], axis=0)
    assert len(colours) == 1, "masked pixels must all carry the object's colour"
    padded = np.pad(mask, 1)
    grown = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:] | mask
    border = grown & ~mask
    assert border.any()
    assert not (image[border] == colours[0]).all(axis=1).any(), "object pixels lie outside the mask"
    ys, xs = np.nonzero(mask)
    assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("variant", ["single", "spurious"])
def test_masks_are_exactly_the_object(variant):
    b = make_shapes(variant, 40, size=112)
    for i in range(len(b)):
        _check_object(b.images[i].permute(1, 2, 0).numpy(), b.masks[i].numpy(), b.boxes[i].tolist())


def test_pair_has_two_distinct_classes_with_disjoint_exact_masks():
    b = make_shapes("pair", 40, size=112)
    assert (b.labels[:, 0] < b.labels[:, 1]).all()
    assert not (b.masks[:, 0] & b.masks[:, 1]).any()
    for i in range(len(b)):
        image = b.images[i].permute(1, 2, 0).numpy()
        for j in range(2):
            _check_object(image, b.masks[i, j].numpy(), b.boxes[i, j].tolist())


def test_every_class_occurs():
    b = make_shapes("single", 300, size=SIZE, split="val")
    assert set(b.labels.tolist()) == set(range(len(SHAPE_CLASSES)))


def test_spurious_marker_follows_class_zero_in_train_only():
    train = make_shapes("spurious", 800, size=SIZE, split="train")
    zero = train.labels == 0
    assert zero.sum() >= 40
    assert train.marker[zero].float().mean() >= 0.8
    assert train.marker[~zero].float().mean() <= 0.05
    test = make_shapes("spurious", 800, size=SIZE, split="test")
    zero = test.labels == 0
    assert 0.3 <= test.marker[zero].float().mean() <= 0.7
    assert 0.4 <= test.marker[~zero].float().mean() <= 0.6
    aligned = make_shapes("spurious", 100, size=SIZE, split="test", marker="aligned")
    assert torch.equal(aligned.marker, aligned.labels == 0)
    assert not make_shapes("spurious", 50, size=SIZE, split="test", marker="none").marker.any()
    assert not make_shapes("single", 50, size=SIZE).marker.any()


def test_exclusive_marker_keeps_the_class_zero_draws_and_drops_the_others():
    correlated = make_shapes("spurious", 800, size=SIZE, split="train")
    exclusive = make_shapes("spurious", 800, size=SIZE, split="train", marker="exclusive")
    zero = correlated.labels == 0
    assert torch.equal(exclusive.labels, correlated.labels)
    assert torch.equal(exclusive.marker[zero], correlated.marker[zero]) and correlated.marker[~zero].any()
    assert not exclusive.marker[~zero].any()
    assert torch.equal(exclusive.images[zero], correlated.images[zero])


def test_marker_pixels_and_box():
    b = make_shapes("spurious", 60, size=112, split="test")
    assert b.marker.any() and not b.marker.all()
    for i in range(len(b)):
        box = b.marker_boxes[i].tolist()
        if not b.marker[i]:
            assert box == [0, 0, 0, 0]
            continue
        x0, y0, x1, y1 = box
        assert (x1 - x0, y1 - y0) == (10, 10)
        patch = b.images[i, :, y0:y1, x0:x1]
        assert (patch == torch.tensor(MARKER_COLOR, dtype=torch.uint8).view(3, 1, 1)).all()
        assert not b.masks[i, y0:y1, x0:x1].any()


def test_dataset_renders_the_same_stream_and_moves_with_epoch():
    batch = make_shapes("single", 8, seed=5, size=SIZE)
    ds = ShapesDataset("single", 4, seed=5, size=SIZE)
    image, label = ds[2]
    assert torch.equal(image, batch.images[2]) and int(label) == int(batch.labels[2])
    ds.set_epoch(1)
    image, label = ds[2]
    assert torch.equal(image, batch.images[6]) and int(label) == int(batch.labels[6])
    with pytest.raises(IndexError):
        ds[4]
    image, label, mask = ShapesDataset("single", 8, seed=5, size=SIZE, with_masks=True)[3]
    assert torch.equal(mask, batch.masks[3]) and int(label) == int(batch.labels[3])
    pair = make_shapes("pair", 2, seed=5, size=SIZE)
    _, labels, masks = ShapesDataset("pair", 2, seed=5, size=SIZE, with_masks=True)[1]
    assert torch.equal(labels, pair.labels[1]) and torch.equal(masks, pair.masks[1])


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="variant"):
        make_shapes("triple", 1)
    with pytest.raises(ValueError, match="split"):
        make_shapes("single", 1, split="dev")
    with pytest.raises(ValueError, match="spurious"):
        make_shapes("single", 1, marker="aligned")


@pytest.mark.parametrize("variant", ["single", "pair"])
def test_write_shapes_round_trip(tmp_path, variant):
    out = write_shapes(variant, 3, tmp_path / variant, seed=9, size=SIZE)
    batch = make_shapes(variant, 3, seed=9, size=SIZE, split="test")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["variant"] == variant and manifest["split"] == "test" and manifest["base_seed"] == 9
    assert manifest["class_names"] == list(SHAPE_CLASSES) and manifest["generator_version"]
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(manifest["items"]) == len(rows) == 3
    for i, item in enumerate(manifest["items"]):
        image = np.asarray(Image.open(out / item["file"]))
        assert np.array_equal(image, batch.images[i].permute(1, 2, 0).numpy())
        masks = batch.masks[i].reshape(-1, SIZE, SIZE)
        assert len(item["masks"]) == len(masks) == (2 if variant == "pair" else 1)
        for f, m in zip(item["masks"], masks, strict=True):
            assert np.array_equal(np.asarray(Image.open(out / f)) > 0, m.numpy())
        assert item["labels"] == batch.labels[i].reshape(-1).tolist()
        assert item["boxes"] == batch.boxes[i].reshape(-1, 4).tolist()
        assert item["seed"] == int(batch.seeds[i]) == int(rows[i]["seed"])
        assert rows[i]["file"] == item["file"]
        assert rows[i]["labels"] == ";".join(map(str, item["labels"]))


@pytest.mark.parametrize("variant", ["single", "pair", "spurious"])
def test_shapes_labels_equal_the_rendered_labels_without_rendering(variant):
    batch = make_shapes(variant, 12, size=32, split="val", start=7)
    assert torch.equal(shapes_labels(variant, 12, split="val", start=7), batch.labels)
    assert shapes_labels(variant, 0).shape == make_shapes(variant, 0).labels.shape
