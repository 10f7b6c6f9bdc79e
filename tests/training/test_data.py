"""training_data: the xvit-shapes stream and validation split a training run sees."""

import torch

from xvit.data import make_shapes
from xvit.data.shapes import MARKER_COLOR, marker_box
from xvit.training import TrainConfig
from xvit.training.data import training_data


def test_the_training_marker_policy_reaches_training_and_validation_images():
    cfg = TrainConfig(data="xvit-shapes:spurious:marker=exclusive", train_size=200, val_size=300, img_size=48)
    cfg.validate()
    data = training_data(cfg)
    assert data.info["marker"] == "exclusive" and data.shapes_variant == "spurious"
    x0, y0, _, _ = marker_box(48)
    magenta = torch.tensor(MARKER_COLOR, dtype=torch.uint8)
    marked = (data.val_images[:, :, y0, x0] == magenta).all(1)
    assert torch.equal(marked, make_shapes("spurious", 300, split="val", size=48, marker="exclusive").marker)
    assert not marked[data.val_labels != 0].any() and marked[data.val_labels == 0].any()
    train_marked = torch.stack([(data.train_set[i][0][:, y0, x0] == magenta).all() for i in range(200)])
    train_labels = torch.stack([data.train_set[i][1] for i in range(200)])
    assert not train_marked[train_labels != 0].any() and train_marked[train_labels == 0].any()
    default = training_data(TrainConfig(data="xvit-shapes:spurious", train_size=8, val_size=8, img_size=48))
    assert default.info["marker"] == "correlated"
