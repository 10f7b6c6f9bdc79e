"""Checkpoint directories: each kind of broken directory gets one message naming the file and what is wrong;
config fields are validated before a model is built; pickles are never opened."""

import json
import os

import pytest
import torch

from xvit.models import CheckpointError, Preprocessing, create_vit, load_model, save_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    save_checkpoint(create_vit("nano", img_size=16, patch_size=8, num_classes=3, depth=1), root / "good",
                    preprocessing=Preprocessing(size=(16, 16)), class_names=["a", "b", "c"])
    return root / "good"


def _copy(good, tmp_path, config=None, weights=None):
    d = tmp_path / "ckpt"
    d.mkdir()
    cfg = json.loads((good / "config.json").read_text())
    text = json.dumps(cfg) if config is None else config if isinstance(config, str) else config(cfg)
    (d / "config.json").write_text(text)
    (d / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes() if weights is None else weights)
    return d


def _with(**changes):
    def edit(cfg):
        for path, value in changes.items():
            section, _, key = path.partition("__")
            if key:
                cfg[section][key] = value
            elif value is None:
                del cfg[section]
            else:
                cfg[section] = value
        return json.dumps(cfg)
    return edit


CASES = {
    "invalid JSON": ("{not json", "config.json is not valid JSON"),
    "a JSON list": ("[1, 2]", "config.json holds a JSON list"),
    "no model section": (_with(model=None), 'no "model" section'),
    "model of the wrong shape": (_with(model=[1]), '"model" is a JSON list'),
    "negative depth": (_with(model__depth=-1), "depth = -1 is invalid; it must be positive"),
    "depth as text": (_with(model__depth="2"), "depth = '2' is invalid; it must be an integer"),
    "bool for a width": (_with(model__embed_dim=True), "embed_dim = True is invalid"),
    "unregistered variant": (_with(arch="nope"), "variant 'nope', which is not registered"),
    "bad preprocessing": (_with(preprocessing={"size": "big"}), '"preprocessing" is invalid'),
    "weights of another shape": (_with(model__num_classes=7), "model.safetensors does not match"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_configs_name_the_file_and_the_problem(good, tmp_path, case):
    config, message = CASES[case]
    d = _copy(good, tmp_path, config=config)
    with pytest.raises(CheckpointError, match="ckpt") as info:
        load_model(d)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_corrupt_weights_name_the_weights_file(good, tmp_path):
    d = _copy(good, tmp_path, weights=b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        load_model(d)


def test_pickled_weights_are_never_unpickled(good, tmp_path):
    d = _copy(good, tmp_path)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not even a pickle")  # loading it would fail differently
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin holds pickled weights.*never unpickles.*save_file"):
        load_model(d)


def test_fifo_config_or_weights_are_not_opened(good, tmp_path):
    d = _copy(good, tmp_path)
    (d / "model.safetensors").unlink()
    os.mkfifo(d / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors is not a regular file"):
        load_model(d)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ValueError, match="not a regular file or directory"):
        load_model(tmp_path / "pipe")


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_spec_says_what_to_pass(spec):
    with pytest.raises(ValueError, match="model spec is empty.*xvit-random:tiny"):
        load_model(spec)


def test_a_weights_file_given_as_the_model_points_at_its_folder(good):
    with pytest.raises(ValueError, match="is a file; pass the checkpoint directory"):
        load_model(good / "model.safetensors")


def test_a_hugging_face_folder_with_only_pickled_weights_is_refused_before_transformers_opens_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_model(tmp_path)
