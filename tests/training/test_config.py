"""TrainConfig.validate: every run that cannot work is refused before data is loaded."""

import pytest

from xvit.data.sources import DataNotFoundError, DataSpecError
from xvit.training import TrainConfig, TrainConfigError


@pytest.mark.parametrize("fields,message", [
    ({"epochs": 0}, "epochs must be positive"),
    ({"batch_size": 0}, "batch_size must be positive"),
    ({"lr": -1e-3}, "lr must be positive"),
    ({"min_lr": 0.0}, "min_lr must be positive"),
    ({"depth": 0}, "depth must be positive"),
    ({"reg_tokens": -1}, "reg_tokens must not be negative"),
    ({"warmup_epochs": -1.0}, "warmup_epochs must not be negative"),
    ({"holdout_fraction": 0.0}, "holdout_fraction must lie strictly between 0 and 1"),
    ({"label_smoothing": 1.0}, "label_smoothing must lie in"),
    ({"arch": "vti"}, "Unknown model variant 'vti'. Did you mean 'vit'"),
    ({"preset": "huge"}, "Unknown vit preset 'huge'"),
    ({"img_size": 50}, "img_size 50 is not a multiple of patch_size 8"),
    ({"embed_dim": 100}, "embed_dim 100 must be divisible by num_heads 3"),
    ({"num_heads": 5}, "embed_dim 192 must be divisible by num_heads 5"),
    ({"init": "xavier"}, "init must be 'default' or 'mimetic'"),
    ({"init": "mimetic", "embed_dim": 102, "num_heads": 3}, "divisible by 4"),
    ({"low_res_epochs": 1, "low_res_size": 20}, "low_res_size must be a multiple of patch_size 8"),
    ({"low_res_epochs": 1}, "low_res_size must be a multiple"),
    ({"data": "xvit-shapes:pair"}, "two labels per image"),
    ({"data": "xvit-shapes:double"}, "Unknown xvit-shapes variant 'double'"),
    ({"data": "xvit-shapes:single:marker=exclusive"}, "marker= applies only to the 'spurious' variant"),
    ({"data": "xvit-shapes:spurious:marker=sometimes"}, "marker must be one of correlated, exclusive"),
    ({"data": "xvit-shapes:spurious:colour=red"}, "Unknown option 'colour=red'"),
    ({"batch_size": 256, "train_size": 100}, "batch_size 256 exceeds the 100 training images"),
    ({"model_args": {"qkv_bais": True}}, "'vit' has no config field 'qkv_bais'. Did you mean 'qkv_bias'"),
    ({"model_args": {"depth": 3}}, "use its own option \\(--depth\\)"),
])
def test_invalid_configs_are_refused(fields, message):
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig(**fields).validate()


def test_other_data_is_a_data_source_spec(tmp_path):
    with pytest.raises(DataNotFoundError, match="neither an existing folder or file nor a spec"):
        TrainConfig(data=str(tmp_path / "missing")).validate()
    with pytest.raises(DataSpecError, match="mnist"):
        TrainConfig(data="mnist:").validate()
    TrainConfig(data=str(tmp_path)).validate()  # a folder: its contents are read when training starts
    with pytest.raises(TrainConfigError, match="token_loss needs the ground-truth masks"):
        TrainConfig(data=str(tmp_path), token_loss=1.0).validate()


def test_the_defaults_are_valid():
    TrainConfig().validate()

