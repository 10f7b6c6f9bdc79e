"""Data sources: xvit-shapes, image folders (write_shapes layout and generic) and gtsegs_ijcv.mat."""

import dataclasses
import gzip
import json
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xvit.data import load_images, make_shapes, write_shapes
from xvit.data.sources import DataSpec, DataSpecError, data_sources, load_dataset, parse_data_spec
from xvit.data.sources.mnist import read_idx
from xvit.models import Preprocessing

PREP = Preprocessing(size=(32, 32))


def _normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    return (images_uint8.float() / 255 - 0.5) / 0.5


def test_shapes_spec_renders_at_the_model_size_with_labels_and_masks():
    data = load_dataset("xvit-shapes:single:test:5", size=(32, 32))
    ref = make_shapes("single", 5, size=32, split="test")
    assert len(data) == 5 and not data.pair and data.has_masks
    assert torch.equal(data.labels, ref.labels)
    batch = data.load([1, 3], PREP)
    assert batch.x.shape == (2, 3, 32, 32) and batch.masks.shape == (2, 32, 32)
    assert torch.allclose(batch.x, _normalise(ref.images[[1, 3]]))
    assert torch.equal(batch.masks, ref.masks[[1, 3]])
    assert batch.ids == ["shapes:single:test:1", "shapes:single:test:3"]
    assert len(load_dataset("xvit-shapes:pair:val", size=(32, 32), limit=3)) == 3


@pytest.mark.parametrize("spec", ["xvit-shapes:single", "xvit-shapes:blob:test", "xvit-shapes:single:test:0",
                                  "xvit-shapes:single:test:x", "/no/such/folder"])
def test_bad_specs_raise_a_message_that_names_the_forms(spec):
    with pytest.raises(DataSpecError, match="xvit-shapes"):
        load_dataset(spec)


def test_spurious_spec_gives_marker_masks_and_takes_the_marker_policy():
    data = load_dataset("xvit-shapes:spurious:test:6:marker=aligned", size=(32, 32))
    ref = make_shapes("spurious", 6, size=32, split="test", marker="aligned")
    assert data.has_markers and data.info["marker"] == "aligned" and torch.equal(data.labels, ref.labels)
    batch = data.load(range(6), PREP)
    assert batch.marker_masks.shape == (6, 32, 32) and batch.marker_masks.dtype == torch.bool
    assert batch.marker_masks.flatten(1).any(1).tolist() == ref.marker.tolist() == (ref.labels == 0).tolist()
    for i in range(6):
        x0, y0, x1, y1 = ref.marker_boxes[i].tolist()
        expected = torch.zeros(32, 32, dtype=torch.bool)
        expected[y0:y1, x0:x1] = True
        assert torch.equal(batch.marker_masks[i], expected)
    magenta = torch.tensor([1.0, -1.0, 1.0]).view(3, 1)  # (255, 0, 255) normalised with mean = std = 0.5
    marked = int(ref.marker.nonzero()[0])
    assert torch.equal(batch.x[marked][:, batch.marker_masks[marked]], magenta.expand(3, 9))

    default = load_dataset("xvit-shapes:spurious:test:6", size=(32, 32))
    assert default.info["marker"] == "random"  # the test split's own policy
    assert load_dataset("xvit-shapes:spurious:val:marker=none", limit=3).load([0, 1, 2], PREP).marker_masks.sum() == 0
    single = load_dataset("xvit-shapes:single:test:2", size=(32, 32))
    assert not single.has_markers and single.load([0], PREP).marker_masks is None
    assert "marker" not in single.info


@pytest.mark.parametrize(("spec", "message"), [
    ("xvit-shapes:spurious:test:4:marker=sometimes", "must be one of correlated, exclusive, random, aligned, none"),
    ("xvit-shapes:single:test:4:marker=random", "applies only to the spurious variant"),
    ("xvit-shapes:spurious:test:4:seed=3", "'seed=3' in 'xvit-shapes:spurious:test:4:seed=3' is not an option"),
    ("xvit-shapes:spurious:test:marker=random:4", "'4' in .* is not an option"),
    ("xvit-shapes:spurious:test:4:marker=random:marker=none", "sets marker= twice"),
    ("xvit-shapes:spurious:test:-4:marker=random", "N in .* must be a positive integer"),
])
def test_bad_spurious_options_say_what_is_allowed(spec, message):
    with pytest.raises(DataSpecError, match=message):
        load_dataset(spec)


def test_write_shapes_folder_single_and_pair(tmp_path):
    write_shapes("single", 3, tmp_path / "single", size=32)
    data = load_dataset(tmp_path / "single")
    ref = make_shapes("single", 3, size=32, split="test")
    batch = data.load(range(3), PREP)
    assert torch.equal(data.labels, ref.labels) and data.class_names == ref.class_names
    assert torch.equal(batch.masks, ref.masks) and torch.allclose(batch.x, _normalise(ref.images))
    assert data.info["variant"] == "single"

    write_shapes("pair", 2, tmp_path / "pair", size=32)
    pair = load_dataset(tmp_path / "pair")
    ref = make_shapes("pair", 2, size=32, split="test")
    assert pair.pair and torch.equal(pair.labels, ref.labels)
    assert torch.equal(pair.load([0, 1], PREP).masks, ref.masks)


def test_folder_is_resized_bilinear_for_images_and_nearest_for_masks(tmp_path):
    write_shapes("single", 2, tmp_path, size=48)
    batch = load_dataset(tmp_path).load([0, 1], PREP)
    image = Image.open(tmp_path / "images" / "000001.png").convert("RGB").resize((32, 32), Image.BILINEAR)
    mask = Image.open(tmp_path / "masks" / "000001.png").resize((32, 32), Image.NEAREST)
    assert torch.allclose(batch.x[1], _normalise(torch.from_numpy(np.array(image)).permute(2, 0, 1)))
    assert torch.equal(batch.masks[1], torch.from_numpy(np.asarray(mask) > 0))


def test_generic_folders_class_subfolders_and_manifest_names(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "classes"
    for cls in ("dog", "cat"):
        (root / cls).mkdir(parents=True)
        (root / "masks" / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{cls}{k}.jpg")
            Image.fromarray((rng.random((20, 24)) > 0.5).astype(np.uint8)).save(root / "masks" / cls / f"{cls}{k}.png")
    data = load_dataset(root)
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1, 1] and data.has_masks
    assert data.ids[0] == "cat/cat0.jpg" and data.load([0], PREP).masks.shape == (1, 32, 32)

    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(flat / "images" / f"im{k}.png")
    (flat / "manifest.json").write_text(json.dumps({"items": [
        {"file": "images/im0.png", "label": "zebra"}, {"file": "images/im1.png", "label": "ant"},
        {"file": "images/im2.png", "label": "zebra"}]}))
    data = load_dataset(flat)
    assert data.class_names == ["ant", "zebra"] and data.labels.tolist() == [1, 0, 1] and not data.has_masks
    assert data.load([2], PREP).masks is None

    (flat / "masks").mkdir()
    Image.fromarray(np.ones((16, 16), np.uint8)).save(flat / "masks" / "im0.png")
    (flat / "manifest.json").unlink()
    with pytest.raises(DataSpecError, match="masks for 1 of 3 images"):
        load_dataset(flat)


def _write_gtsegs(path, images, masks):
    """A file in the layout of gtsegs_ijcv.mat (MATLAB v7.3): value/img and value/gt hold object references;
    arrays are stored transposed (MATLAB is column-major) and each gt is a 1x1 cell of references."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        img_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        gt_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        for i, (img, mask) in enumerate(zip(images, masks)):
            img_refs[i, 0] = refs.create_dataset(f"img{i}", data=img.transpose(2, 1, 0)).ref
            gt = refs.create_dataset(f"gt{i}", data=mask.astype(np.uint8).T)
            cell = refs.create_dataset(f"cell{i}", data=np.array([[gt.ref]], dtype=h5py.ref_dtype))
            gt_refs[i, 0] = cell.ref
        f.create_dataset("value/img", data=img_refs)
        f.create_dataset("value/gt", data=gt_refs)


def test_gtsegs_reader_orientation_and_resizing(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    masks = [np.zeros((20, 28), bool), rng.random((32, 32)) > 0.5]
    masks[0][2:9, 3:20] = True  # asymmetric: a transposed read would not match
    path = tmp_path / "gtsegs_ijcv.mat"
    _write_gtsegs(path, images, masks)
    data = load_dataset(path)
    assert len(data) == 2 and data.labels is None and data.has_masks and data.ids == ["gtsegs:0", "gtsegs:1"]
    batch = data.load([0, 1], PREP)
    expected = np.array(Image.fromarray(images[0]).resize((32, 32), Image.BILINEAR))
    assert torch.allclose(batch.x[0], _normalise(torch.from_numpy(expected).permute(2, 0, 1)))
    expected_mask = np.asarray(Image.fromarray(masks[0].astype(np.uint8)).resize((32, 32), Image.NEAREST)) > 0
    assert torch.equal(batch.masks[0], torch.from_numpy(expected_mask))
    assert torch.allclose(batch.x[1], _normalise(torch.from_numpy(images[1]).permute(2, 0, 1)))
    assert torch.equal(batch.masks[1], torch.from_numpy(masks[1]))


def test_gtsegs_data_set_pickles_with_its_file_open(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "gtsegs_ijcv.mat"
    _write_gtsegs(path, [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)], [rng.random((20, 28)) > 0.5])
    data = load_dataset(f"imagenet-segmentation:{path}")
    batch = data.load([0], PREP)  # opens the HDF5 file
    again = pickle.loads(pickle.dumps(data)).load([0], PREP)
    assert torch.equal(again.x, batch.x) and torch.equal(again.masks, batch.masks)


def test_gtsegs_without_h5py_says_how_to_install_it(tmp_path, monkeypatch):
    path = tmp_path / "gtsegs_ijcv.mat"
    path.write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        load_dataset(path)


def test_a_mat_file_of_another_layout_is_rejected(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "other.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(DataSpecError, match="value/img"):
        load_dataset(path)


# ------------------------------------------------------------------------------ one pixel path, registry, specs


def test_a_folder_feeds_a_bicubic_model_the_pixels_load_images_gives(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "images").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    bicubic = Preprocessing(size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                            interpolation="bicubic")
    x, _ = load_images(tmp_path / "images" / "a.png", bicubic)
    assert torch.equal(load_dataset(tmp_path).load([0], bicubic).x, x)


def test_folder_images_convert_16_bit_and_transparency_as_load_images_does(tmp_path):
    (tmp_path / "images").mkdir()
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "images" / "deep.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "glass.png")
    batch = load_dataset(tmp_path).load([0, 1], PREP)
    x, _ = load_images([tmp_path / "images" / "deep.png", tmp_path / "images" / "glass.png"], PREP)
    assert torch.equal(batch.x, x)
    assert float(batch.x[0, 0, 0, 16]) < 0.5, "mid-grey of a 16-bit image must not clip to white"
    assert torch.equal(batch.x[1, :, 0, 31], torch.ones(3))  # transparent: white


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_a_fifo_in_a_folder_is_never_opened(tmp_path):
    write_shapes("single", 2, tmp_path, size=32)
    (tmp_path / "manifest.json").unlink()
    os.mkfifo(tmp_path / "images" / "000002.png")
    data = load_dataset(tmp_path)  # would block in open() if the pipe were read
    assert data.ids == ["000000.png", "000001.png"]


def test_specs_are_frozen_json_able_and_read_back(tmp_path):
    write_shapes("single", 2, tmp_path / "f", size=32)
    for text, kind in [("xvit-shapes:spurious:test:5:marker=aligned", "xvit-shapes"),
                       (str(tmp_path / "f"), "folder"), (f"folder:{tmp_path / 'f'}", "folder")]:
        spec = parse_data_spec(text)
        assert spec.kind == kind and parse_data_spec(str(spec)) == spec
        assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.n = 3
    assert str(parse_data_spec("xvit-shapes:pair:val")) == "xvit-shapes:pair:val:200"
    assert parse_data_spec(DataSpec("xvit-shapes", variant="pair", split="val")).n == 200
    with pytest.raises(DataSpecError, match="not a valid xvit-shapes spec"):
        parse_data_spec(DataSpec("xvit-shapes", variant="pair", split="val", path="/somewhere"))
    with pytest.raises(DataSpecError, match="takes"):
        DataSpec.from_dict({"kind": "xvit-shapes", "colour": "red"})
    with pytest.raises(DataSpecError, match="Unknown data source 'xvit-shape'"):
        parse_data_spec(DataSpec("xvit-shape"))
    with pytest.raises(FileNotFoundError):  # a missing path is both a DataSpecError and a FileNotFoundError
        load_dataset(tmp_path / "missing")
    assert set(data_sources()) == {"xvit-shapes", "folder", "imagenet-segmentation", "mnist"}
    assert all(info["forms"] for info in data_sources().values())


def test_the_opened_data_set_is_the_same_when_reopened_from_its_spec_or_unpickled(tmp_path):
    data = load_dataset("xvit-shapes:spurious:test:9:marker=random", size=(32, 32), limit=4)
    assert len(data) == 4 and data.info["limit"] == 4 and data.data_spec.n == 4
    reopened = load_dataset(DataSpec.from_dict(data.data_spec.to_dict()), size=(32, 32))
    unpickled = pickle.loads(pickle.dumps(data))
    batch = data.load(range(4), PREP)
    for other in (reopened, unpickled):
        again = other.load(range(4), PREP)
        assert other.ids == data.ids and torch.equal(other.labels, data.labels)
        assert torch.equal(again.x, batch.x) and torch.equal(again.masks, batch.masks)
        assert torch.equal(again.marker_masks, batch.marker_masks)
    assert data.subset(2).data_spec.n == 2


def test_a_huge_count_is_not_rendered_before_the_limit_applies(monkeypatch):
    import xvit.data.shapes as shapes

    rendered = []
    real = shapes._render
    monkeypatch.setattr(shapes, "_render", lambda *args: rendered.append(args) or real(*args))
    data = load_dataset("xvit-shapes:pair:test:1000000000", size=(32, 32), limit=3)
    assert len(data) == 3 and len(rendered) <= 3  # images are rendered when read, never the whole count
    ref = make_shapes("pair", 1, size=32, split="test", start=2)
    batch = data.load([2], PREP)
    assert torch.equal(batch.masks, ref.masks) and torch.equal(batch.labels, ref.labels)
    assert torch.equal(batch.x, _normalise(ref.images))


# ----------------------------------------------------------------------------------------------------- MNIST

SHARED_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist-test"


def _write_idx(path, array, gz):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_give_labelled_gray_images_at_the_model_size(tmp_path, gz):
    rng = np.random.default_rng(3)
    images, labels = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), np.arange(10, dtype=np.uint8)[::-1]
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"tiny-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"tiny-labels-idx1-ubyte{suffix}", labels, gz)
    data = load_dataset(tmp_path)  # detected: a folder holding one IDX image file
    assert data.data_spec.kind == "mnist" and data.class_names == [str(k) for k in range(10)]
    assert data.labels.tolist() == labels.tolist() and data.ids[3] == "mnist:3" and not data.has_masks
    batch = data.load([3], PREP)
    expected = np.array(Image.fromarray(images[3]).resize((32, 32), Image.Resampling.BILINEAR))
    assert batch.x.shape == (1, 3, 32, 32)
    for c in range(3):
        assert torch.allclose(batch.x[0, c], _normalise(torch.from_numpy(expected)))
    gray = Preprocessing(size=(28, 28), mean=(0.5,), std=(0.5,))
    assert torch.equal(data.load([3], gray).x[0, 0], _normalise(torch.from_numpy(images[3])))
    assert torch.equal(pickle.loads(pickle.dumps(data)).load([3], PREP).x, batch.x)

    train, test = (load_dataset(f"mnist:{tmp_path}:{split}") for split in ("train", "test"))
    assert len(test) == 2 and len(train) == 8 and not set(train.ids) & set(test.ids)
    assert sorted(train.ids + test.ids, key=lambda s: int(s.split(":")[1])) == data.ids
    assert load_dataset(f"mnist:{tmp_path}:train:3").ids == train.ids[:3]
    assert str(parse_data_spec(f"mnist:{tmp_path}:test:2")) == f"mnist:{tmp_path}:test:2"
    with pytest.raises(DataSpecError, match="N in .* must be a positive integer"):
        load_dataset(f"mnist:{tmp_path}:train:-1")


def test_mnist_rejects_files_that_are_not_ubyte_idx(tmp_path):
    _write_idx(tmp_path / "a-images-idx3-ubyte", np.zeros((2, 4, 4)), gz=False)
    (tmp_path / "b-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    with pytest.raises(DataSpecError, match="exactly one"):
        load_dataset(f"mnist:{tmp_path}")
    with pytest.raises(DataSpecError, match="only unsigned bytes"):
        load_dataset(f"mnist:{tmp_path / 'b-images-idx3-ubyte'}")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"the shared MNIST test set is not at {SHARED_MNIST}")
def test_the_shared_mnist_test_set():
    data = load_dataset(f"mnist:{SHARED_MNIST}")
    assert len(data) == 10_000 and data.labels[:3].tolist() == [7, 2, 1]  # the first digits of t10k
    assert torch.bincount(data.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    raw = read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")
    assert raw.shape == (10_000, 28, 28) and round(float(raw.mean()), 2) == 33.79  # as SOURCE.md says
    images = data.images(range(5), Preprocessing(size=(28, 28), mean=(0.5,), std=(0.5,)))
    assert images.shape == (5, 1, 28, 28) and torch.equal(images[:, 0], torch.from_numpy(raw[:5].copy()))
    assert len(load_dataset(f"mnist:{SHARED_MNIST}:test")) == 2_000
