"""Labelled images for training: lazily read (image, label) pairs and the seeded hold-out split."""

import numpy as np
import pytest
import torch
from PIL import Image

from xvit.data import DataSpecError, LabelledImages, holdout_split, load_dataset, make_shapes, write_shapes
from xvit.models import Preprocessing

PREP = Preprocessing(size=(16, 16))


def _class_folder(root, n_per_class=5):
    rng = np.random.default_rng(0)
    for cls in ("b", "a"):
        (root / cls / "nested").mkdir(parents=True)
        for k in range(n_per_class):
            folder = root / cls / ("nested" if k == 0 else "")
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return root


def test_holdout_split_is_the_seeded_permutation_of_the_folder(tmp_path):
    data = load_dataset(_class_folder(tmp_path))
    assert data.class_names == ["a", "b"] and len(data) == 10  # nested images count for their class
    train, held = holdout_split(data, PREP, fraction=0.3, seed=4)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(4)).tolist()
    assert held.indices == order[:3] and train.indices == order[3:]
    x, y = train.tensors()
    assert x.dtype == torch.uint8 and x.shape == (7, 3, 16, 16) and torch.equal(y, data.labels[order[3:]])
    image, label = train[0]
    expected = np.array(Image.open(tmp_path / data.ids[order[3]]).convert("RGB").resize((16, 16),
                                                                                       Image.Resampling.BILINEAR))
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1)) and label == y[0]
    loader = torch.utils.data.DataLoader(train, batch_size=7)
    xb, yb = next(iter(loader))
    assert torch.equal(xb, x) and torch.equal(yb, y)


def test_labelled_images_of_shapes_equal_the_generator():
    data = load_dataset("xvit-shapes:single:train:6", size=(32, 32))
    x, y = LabelledImages(data, Preprocessing(size=(32, 32))).tensors()
    ref = make_shapes("single", 6, size=32, split="train")
    assert torch.equal(x, ref.images) and torch.equal(y, ref.labels)


def test_training_data_needs_one_label_per_image_and_two_classes(tmp_path):
    with pytest.raises(DataSpecError, match="two labels per image"):
        LabelledImages(load_dataset("xvit-shapes:pair:test:4"), PREP)
    write_shapes("single", 2, tmp_path / "shapes", size=32)
    (tmp_path / "shapes" / "manifest.json").unlink()
    with pytest.raises(DataSpecError, match="no labels"):
        LabelledImages(load_dataset(tmp_path / "shapes"), PREP)
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one / "x.png")
    Image.new("RGB", (8, 8)).save(one / "y.png")
    with pytest.raises(DataSpecError, match="at least two classes"):
        holdout_split(load_dataset(tmp_path / "one"), PREP, fraction=0.5, seed=0)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        holdout_split(load_dataset(_class_folder(tmp_path / "two")), PREP, fraction=1.0, seed=0)


def test_training_images_take_the_models_crop(tmp_path):
    data = load_dataset(_class_folder(tmp_path))
    crop = Preprocessing(size=(16, 16), crop_pct=0.8)
    image, _ = LabelledImages(data, crop)[0]
    with Image.open(tmp_path / data.ids[0]) as src:  # 20 x 24 (H x W): resized to 20 x 24, centre 16 x 16 cut out
        expected = np.array(src.convert("RGB").crop((4, 2, 20, 18)))
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))
