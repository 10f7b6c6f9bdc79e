"""Everyday use of the command line: what ``xvit explain`` prints, ``--json``, targets by name, per image and
top-k, one ``--param`` syntax, ``xvit models NAME`` and failing fast on ``timm:`` specs offline."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import xvit
from xvit.cli import main
from xvit.models import Preprocessing, create_vit, save_checkpoint

CLASSES = ["circle", "square", "tabby cat", "Persian cat", "cross", "ring"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("everyday")
    torch.manual_seed(0)
    model = create_vit("nano", img_size=32, patch_size=8, num_classes=len(CLASSES), depth=2)
    save_checkpoint(model, root / "ckpt", preprocessing=Preprocessing(size=(32, 32)), class_names=CLASSES)
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / f"{name}.png")
    return root


def _run(ws, out, *args, images=("a",)):
    return main(["explain", *(str(ws / f"{i}.png") for i in images), "--model", str(ws / "ckpt"), "--method",
                 "rollout", "--out", str(ws / out), *args])


def _error(capsys, command="explain"):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"xvit {command}: error: "), err
    return err


def _probs(ws, image):
    model = xvit.load_model(str(ws / "ckpt"))
    x, _ = xvit.load_images([ws / f"{image}.png"], model)
    with torch.no_grad():
        return model(x).softmax(-1)[0]


def test_one_image_prints_prediction_top5_and_the_files(ws, capsys):
    assert _run(ws, "one") == 0
    out = capsys.readouterr().out
    probs = _probs(ws, "a")
    top = probs.topk(5).indices.tolist()
    assert f"predicted {CLASSES[top[0]]} ({top[0]}) {100 * float(probs[top[0]]):.1f}%" in out
    top_line = next(line for line in out.splitlines() if "top-5:" in line)
    assert [part.split(" (")[0] for part in top_line.split("top-5: ")[1].split(", ")] == [CLASSES[i] for i in top]
    assert f"rollout  explained {CLASSES[top[0]]} ({top[0]})" in out
    assert f"-> {ws / 'one' / 'a_rollout.png'}" in out and (ws / "one" / "a_rollout.png").is_file()


def test_several_images_print_a_table_with_one_row_each(ws, capsys):
    assert _run(ws, "table", images=("a", "b", "c")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "prediction", "top-3", "explained", "overlays"]
    for image, line in zip("abc", lines[1:4], strict=True):
        assert line.startswith(str(ws / f"{image}.png")) and line.endswith(f"{image}_rollout.png")


def test_json_prints_the_results_and_only_them_on_stdout(ws, capsys):
    assert _run(ws, "json", "--json", "--target", "tabby", images=("a", "b")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads((ws / "json" / "results.json").read_text())
    assert data["out"] == str(ws / "json") and data["target"] == "tabby" and data["top_k"] is None
    for record in data["images"]:
        method = record["methods"]["rollout"]
        assert set(record) >= {"file", "prediction", "top5", "methods"}
        assert method["target"]["name"] == "tabby cat" and method["target"]["index"] == 2
        assert [e["target"]["index"] for e in method["explained"]] == [2]


def test_targets_per_image_by_index_name_and_pred(ws, capsys):
    assert _run(ws, "per_image", "--json", "--target", "3", "Square", "pred", images=("a", "b", "c")) == 0
    records = json.loads(capsys.readouterr().out)["images"]
    explained = [r["methods"]["rollout"]["target"]["index"] for r in records]
    assert explained == [3, 1, records[2]["prediction"]["index"]]


def test_top_k_explains_the_k_best_classes_into_one_file_each(ws, capsys):
    assert _run(ws, "topk", "--json", "--top-k", "3") == 0
    record = json.loads(capsys.readouterr().out)["images"][0]
    explained = record["methods"]["rollout"]["explained"]
    assert [e["target"]["index"] for e in explained] == [c["index"] for c in record["top5"][:3]]
    assert [e["overlay"] for e in explained] == ["a_rollout_1.png", "a_rollout_2.png", "a_rollout_3.png"]
    assert all((ws / "topk" / e["overlay"]).is_file() for e in explained)


@pytest.mark.parametrize("args, message", [
    (["--target", "tabby dog"], "--target: Unknown class name 'tabby dog'. Did you mean 'tabby cat'?"),
    (["--target", "cat"], "--target: Unknown class name 'cat'"),
    (["--target", "1", "2"], "--target got 2 values for 1 images"),
    (["--target", "9"], "Target class 9 is out of range"),
    (["--top-k", "2", "--target", "1"], "either --target or --top-k"),
    (["--top-k", "7"], "--top-k: top_k must be an int in 1..6"),
    (["--param", "rollout.head_fusion=median"], "--param: rollout:"),
    (["--param", "gradcam.layer=1"], "--param: parameters were given for method 'gradcam', which is not run"),
    (["--param", "rollout"], "--param expects NAME.KEY=VALUE"),
])
def test_bad_targets_and_params_are_one_line_and_write_nothing(ws, capsys, args, message):
    assert _run(ws, "bad", *args) == 2
    assert message in _error(capsys)
    assert not (ws / "bad").exists()


def test_param_reaches_the_method(ws, capsys):
    assert _run(ws, "p_mean", "--json", "--param", "rollout.head_fusion=mean") == 0
    mean = json.loads(capsys.readouterr().out)["images"][0]["methods"]["rollout"]["stats"]
    assert _run(ws, "p_max", "--json", "--param", "rollout.head_fusion=max") == 0
    high = json.loads(capsys.readouterr().out)["images"][0]["methods"]["rollout"]["stats"]
    assert mean != high


@pytest.mark.parametrize("command", ["explain", "evaluate", "explain-dataset", "analyse"])
def test_every_method_running_command_documents_the_one_param_option(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "--param" in text and "METHOD.KEY=VALUE" in text.replace("\n", " ").replace("  ", " ") or \
        command == "analyse" and "ANALYSIS.KEY=VALUE" in text
    assert "--method-param" not in text


def test_evaluate_keeps_method_param_as_a_deprecated_alias(ws, capsys):
    args = ["evaluate", "--model", str(ws / "ckpt"), "--data", "xvit-shapes:single:test:2", "--methods", "rollout",
            "--metrics", "pointing_game", "--out", str(ws / "eval_alias")]
    assert main([*args, "--method-param", "rollout.head_fusion=median"]) == 2
    assert "head_fusion" in _error(capsys, "evaluate")
    assert main([*args, "--param", "rollout.head_fusion=median"]) == 2
    assert "head_fusion" in _error(capsys, "evaluate")
    torch.manual_seed(0)
    save_checkpoint(create_vit("nano", img_size=32, patch_size=8, num_classes=10, depth=1), ws / "alias10",
                    preprocessing=Preprocessing(size=(32, 32)), class_names=[f"c{i}" for i in range(10)])
    args[2] = str(ws / "alias10")
    assert main([*args, "--method-param", "rollout.head_fusion=max", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "note: --method-param is deprecated; use --param METHOD.KEY=VALUE" in captured.err
    provenance = json.loads((ws / "eval_alias" / "provenance.json").read_text())
    assert "--param rollout.head_fusion=max" in provenance["command"]


def test_explain_dataset_checks_params_before_work(ws, capsys):
    assert main(["explain-dataset", "xvit-shapes:single:test:2", "--model", str(ws / "ckpt"), "--methods", "rollout",
                 "--param", "rollout.head_fusion=median", "--out", str(ws / "maps_bad")]) == 2
    assert "--param: rollout:" in _error(capsys, "explain-dataset")
    assert not (ws / "maps_bad").exists()


@pytest.mark.parametrize("spec", ["xvit-random:nano", "timm-random:vit_tiny_patch16_224", "hf-random:vit-tiny"])
def test_random_weight_specs_work_in_explain(ws, capsys, spec):
    pytest.importorskip({"timm": "timm", "hf": "transformers"}.get(spec.split("-")[0], "torch"))
    assert main(["explain", str(ws / "a.png"), "--model", spec, "--method", "rollout", "--json",
                 "--out", str(ws / spec.replace(":", "_"))]) == 0
    record = json.loads(capsys.readouterr().out)["images"][0]
    assert record["methods"]["rollout"]["target"]["index"] == record["prediction"]["index"]


def test_random_weight_specs_work_in_evaluate(ws, capsys):
    assert main(["evaluate", "--model", "xvit-random:nano", "--data", "xvit-shapes:single:test:1", "--methods",
                 "rollout", "--metrics", "pointing_game", "--no-progress", "--out", str(ws / "eval_random")]) == 0
    provenance = json.loads((ws / "eval_random" / "provenance.json").read_text())
    assert provenance["model"]["spec"] == "xvit-random:nano" and "rollout" in capsys.readouterr().out


def test_timm_offline_fails_at_once_with_the_offline_hint(ws, capsys, monkeypatch):
    timm = pytest.importorskip("timm")

    def download(*args, **kwargs):  # timm's download path retries the network for about a minute when offline
        raise AssertionError("timm.create_model was called: the offline error must come before any download")

    monkeypatch.setattr(timm, "create_model", download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["explain", str(ws / "a.png"), "--model", "timm:vit_tiny_patch16_224", "--out",
                 str(ws / "offline")]) == 2
    err = _error(capsys)
    assert "HF_HUB_OFFLINE is set (offline mode)" in err and "timm-random:vit_tiny_patch16_224" in err
    assert main(["explain", str(ws / "a.png"), "--model", "timm:vit_tiny_patch16_2240"]) == 2
    assert "timm has no model 'vit_tiny_patch16_2240'. Did you mean 'vit_tiny_patch16_224'" in _error(capsys)


def test_models_name_prints_the_card_and_checkpoint_path(capsys):
    bundled = xvit.models.bundled_models()
    assert "shapes-vit-tiny" in bundled  # the repository ships its bundled models
    name = "shapes-vit-tiny"
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    line = next(ln for ln in listing.splitlines() if ln.strip().startswith(name + " "))
    assert "% top-1" in line and "#" not in line
    assert main(["models", name]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {xvit.models.bundled_model_dir(name)}" in out
    assert xvit.models.model_card(name).strip().splitlines()[0] in out
    assert main(["models", name[:-1]]) == 2
    assert f"no bundled model {name[:-1]!r}. Did you mean {name!r}" in _error(capsys, "models")


def test_train_help_gives_every_option_a_default(capsys):
    from xvit.cli import build_parser

    parser = build_parser("train")
    train = parser._subparsers._group_actions[0].choices["train"]
    options = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 20
    for action in options:
        assert "default" in (action.help or ""), action.option_strings
    assert main(["train", "--help"]) == 0
    assert "(default: 10)" in " ".join(capsys.readouterr().out.split())


def test_evaluate_and_explain_dataset_report_progress_in_logs(ws, capsys):
    torch.manual_seed(0)
    save_checkpoint(create_vit("nano", img_size=32, patch_size=8, num_classes=10, depth=1), ws / "ckpt10",
                    preprocessing=Preprocessing(size=(32, 32)), class_names=[f"c{i}" for i in range(10)])
    assert main(["evaluate", "--model", str(ws / "ckpt10"), "--data", "xvit-shapes:single:test:3", "--methods",
                 "rollout", "--metrics", "pointing_game", "--batch-size", "2", "--out", str(ws / "eval_log")]) == 0
    done = re.search(r"evaluate: done (\d+)/(\d+) img \(100%\)", capsys.readouterr().err)
    assert done and done[1] == done[2] and int(done[1]) % 3 == 0  # 3 images x the methods run
    pytest.importorskip("pyarrow")
    assert main(["explain-dataset", "xvit-shapes:single:test:3", "--model", str(ws / "ckpt10"), "--methods",
                 "rollout", "--out", str(ws / "maps_log")]) == 0
    assert "explain-dataset: done 3/3 map (100%)" in capsys.readouterr().err
    assert main(["explain-dataset", "xvit-shapes:single:test:3", "--model", str(ws / "ckpt10"), "--methods",
                 "rollout", "--out", str(ws / "maps_quiet"), "--no-progress"]) == 0
    assert "explain-dataset:" not in capsys.readouterr().err


def test_hf_ids_offline_fail_at_once_with_the_offline_hint(ws, capsys, monkeypatch):
    transformers = pytest.importorskip("transformers")
    calls = []

    def from_pretrained(path, **kwargs):  # what the Hub client does with a model that is not cached
        calls.append(kwargs)
        raise OSError(f"{path} is not a local folder and local_files_only is {kwargs.get('local_files_only')}")

    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", from_pretrained)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["explain", str(ws / "a.png"), "--model", "hf:no-such-org/no-such-vit", "--out",
                 str(ws / "offline_hf")]) == 2
    err = _error(capsys)
    assert calls == [{"local_files_only": True}]  # only the cache is read: no download, no retries
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set (offline mode)" in err
    assert "hf-random:vit-tiny" in err


def test_without_a_network_the_hub_counts_as_offline(monkeypatch):
    import socket

    from xvit import models

    def refuse(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert "this machine looks offline (OSError: no route to host)" in models._hub_offline()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert models._hub_offline() is None  # behind a proxy the Hub client finds the way
