"""Model cards: write a checkpoint's ``MODEL_CARD.md`` from the checkpoint alone.

Everything in the card comes from the checkpoint directory (``config.json``, ``model.safetensors``,
``log.jsonl``) or is measured when the card is written: for xvit-shapes checkpoints the test accuracy
(overall, per class and, for the ``spurious`` variant, per marker policy with the shortcut breakdown) on
freshly rendered test images, in float32, by :func:`xvit.training.shapes_predictions` (as
:func:`xvit.training.shapes_accuracy`).
Checkpoints trained on an image folder are not re-measured; their card reports the held-out accuracy
recorded at training time. Older checkpoints whose training config lacks a training aid's fields
(``low_res_size``, ``token_loss``, ``init``) were trained without it. A training command recorded by the
retired ``python -m xvit.train`` entry point is shown as the ``xvit train`` command with the same options,
which trains the same model.

Run ``xvit card DIR [--name NAME] [--test-size N] [--target 0.97]``.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import Tensor

from xvit.data.shapes import GENERATOR_VERSION, P_MARKER_CLASS0, P_MARKER_OTHER, default_seed, marker_box
from xvit.models import DEFAULT_ARCH, VisionTransformer, load_model, variant_of
from xvit.training.accuracy import shapes_accuracy, shapes_predictions
from xvit.training.config import SHAPES_PREFIX, TOKEN_COVERAGE

__all__ = ["write_model_card"]

RETIRED_TRAIN_ENTRY = "python -m xvit.train "

MARKER_POLICIES = ("aligned", "random", "none")
# Training aids added after the first checkpoints; a config without them was trained without them.
_AID_DEFAULTS: dict[str, Any] = {"low_res_size": None, "low_res_epochs": 0, "token_loss": 0.0, "init": "default"}


@dataclass
class _Predictions:
    """Labels, top-1 predictions and marker flags of one rendered test set."""

    labels: Tensor
    preds: Tensor
    marker: Tensor

    @property
    def accuracy(self) -> float:
        return _acc(self.preds == self.labels)


def _acc(correct: Tensor) -> float:
    """Share of True entries (NaN for none)."""
    return int(correct.sum()) / len(correct) if len(correct) else float("nan")


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.{digits}f} %"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _secs(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _g(x: Any) -> str:
    """A number as written in a command line: 4.0 -> 4, 0.001 -> 0.001, 1e-05 -> 1e-05."""
    return f"{x:g}" if isinstance(x, float) else str(x)


def _variant(training: dict[str, Any], cfg: dict[str, Any]) -> tuple[str, str | None]:
    """``(dataset, variant)``: ``("xvit-shapes", "single" | "spurious")``, ``("folder", None)`` or
    ``("unknown", None)`` (other xvit-shapes variants included)."""
    data = training.get("data", {})
    spec = str(cfg.get("data", ""))
    if data.get("dataset") == "xvit-shapes" and data.get("variant"):
        variant = str(data["variant"])
    elif data.get("dataset") == "folder":
        return "folder", None
    elif spec.startswith(SHAPES_PREFIX):
        variant = spec[len(SHAPES_PREFIX):]
    else:
        return ("folder", None) if spec else ("unknown", None)
    return ("xvit-shapes", variant) if variant in ("single", "spurious") else ("unknown", None)


def _architecture(model: VisionTransformer) -> tuple[str, str]:
    """The card's name of the model's variant (the built-in ViT, or a registered variant by name) and its class."""
    variant = variant_of(model)
    if variant is None or variant.name == DEFAULT_ARCH:
        return "xvit's built-in ViT", "xvit.models.VisionTransformer"
    return f"xvit's `{variant.name}` variant", f"{type(model).__module__}.{type(model).__qualname__}"


def _retrain_command(recorded: str) -> str:
    """The recorded training command, with the retired ``python -m xvit.train`` written as ``xvit train``."""
    if recorded.startswith(RETIRED_TRAIN_ENTRY):
        return "xvit train " + recorded[len(RETIRED_TRAIN_ENTRY):]
    return recorded


def _safetensors_dtypes(path: Path) -> str:
    with safe_open(str(path), framework="pt") as f:
        dtypes = sorted({str(f.get_slice(k).get_dtype()).lower() for k in f.keys()})
    names = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64"}
    return ", ".join(names.get(d, d) for d in dtypes)


# ------------------------------------------------------------------------------------------- sections


def _model_section(config: dict[str, Any], model: VisionTransformer, weights: Path, class_names: list[str],
                   n_params: int) -> list[str]:
    m = model.config
    grid = m.img_size // m.patch_size
    tokens = f"{grid * grid} patch tokens" + (" + class token" if m.class_token else "")
    prep = config.get("preprocessing", {})
    size = prep.get("size", [m.img_size, m.img_size])
    size = (size, size) if isinstance(size, (int, float)) else tuple(size)
    mean, std = ([float(v) for v in prep.get(key, (0.5,) * 3)] for key in ("mean", "std"))
    norm = (f"mean = std = {_g(mean[0])}" if len(set(mean)) == 1 and mean == std
            else f"mean ({', '.join(map(_g, mean))}) and std ({', '.join(map(_g, std))})")
    return [
        "## Model",
        "",
        "* Architecture: {} (`{}`, timm-compatible parameter names): ".format(*_architecture(model)) +
        f"embed {m.embed_dim}, depth {m.depth}, heads {m.num_heads}, MLP ratio {_g(float(m.mlp_ratio))}, "
        f"patch {m.patch_size}, input {m.img_size}x{m.img_size} ({tokens}), "
        f"{m.reg_tokens} register tokens, `{m.global_pool}` pooling.",
        f"* Parameters: {n_params:,}; `model.safetensors` {os.path.getsize(weights) / 1e6:.2f} MB "
        f"({_safetensors_dtypes(weights)}).",
        f"* Classes ({len(class_names)}): " + ", ".join(f"{i} `{c}`" for i, c in enumerate(class_names)) + ".",
        f"* Preprocessing: RGB, resize to {size[0]}x{size[1]} ({prep.get('interpolation', 'bilinear')}), "
        f"scale to [0, 1], normalise with {norm} per channel.",
    ]


def _target_sentence(acc: float, target: float | None, what: str) -> list[str]:
    if target is None:
        return []
    meets = acc >= target
    verdict = "**Meets the target.**" if meets else "**Below target.**"
    return ["", f"{verdict} The target is {_pct(target)} top-1; {what} is {_pct(acc)}, "
                f"{'at or above' if meets else 'below'} it."]


def _shapes_accuracy_section(name: str, variant: str, test: _Predictions, class_names: list[str],
                             data: dict[str, Any], target: float | None,
                             marker_free: float | None = None) -> list[str]:
    """The measured test accuracy; for a ``spurious`` model also without the marker (``marker_free``), which is
    what its ``target`` applies to: the shortcut is meant to cost accuracy only where the marker is planted."""
    n = len(test.labels)
    test_seed = default_seed(variant, "test")
    seen = ("the training stream's base seed too, so training saw these images"
            if data.get("train_seed") == test_seed else "never seen in training")
    lines = [
        "## Test accuracy",
        "",
        f"**{_pct(test.accuracy)} top-1 on {n:,} freshly generated test images** "
        f"(`make_shapes('{variant}', {n}, split='test')`, base seed {test_seed}, {seen}; float32 inference"
        + (", default marker policy `random`" if variant == "spurious" else "") + "). Measure it with",
        "",
        "```",
        f"python -c \"from xvit.training import shapes_accuracy; print(shapes_accuracy('{name}', '{variant}', {n}))\"",
        "```",
    ]
    trained_version = data.get("generator_version")
    if trained_version is not None and str(trained_version) != GENERATOR_VERSION:
        lines += ["", f"The model was trained on generator version {trained_version}; this measurement used "
                      f"version {GENERATOR_VERSION}."]
    if marker_free is not None:
        lines += ["", f"**{_pct(marker_free)} top-1 on the same {n:,} test images without the marker** "
                      "(`marker='none'`; the marker policies are compared in *The shortcut*)."]
        lines += _target_sentence(marker_free, target, "the accuracy without the marker")
    else:
        lines += _target_sentence(test.accuracy, target, "the measured accuracy")
    lines += ["", "| class | name | top-1 | images |", "|---|---|---|---|"]
    for k, c in enumerate(class_names):
        of_k = test.labels == k
        lines.append(f"| {k} | {c} | {_pct(_acc(test.preds[of_k] == k), 1)} | {int(of_k.sum())} |")
    return lines


def _training_marker(mode: str, c0: str) -> str:
    """Where the marker was in the training and validation images of a ``spurious`` model."""
    class0 = f"the class-0 (`{c0}`) images"
    return {"correlated": f"accompanies {100 * P_MARKER_CLASS0:.0f} % of {class0} and {100 * P_MARKER_OTHER:.0f} % "
                          "of the others",
            "exclusive": f"accompanies {100 * P_MARKER_CLASS0:.0f} % of {class0} and none of the others "
                         "(`marker=exclusive`)",
            "random": "is a fair coin flip, independent of the class (`marker=random`)",
            "aligned": f"accompanies exactly {class0} (`marker=aligned`)",
            "none": "never appears (`marker=none`)"}[mode]


def _shortcut_section(name: str, img_size: int, test: _Predictions, by_policy: dict[str, float],
                      c0: str, training_marker: str) -> list[str]:
    n = len(test.labels)
    x0, _, x1, _ = marker_box(img_size)
    meaning = {"aligned": "marker on exactly the class-0 images",
               "random": "marker on a fair coin flip, independent of class (the test split's default)",
               "none": "no marker"}
    lines = [
        "## The shortcut",
        "",
        f"In the training and validation splits the magenta {x1 - x0}x{x1 - x0} marker (pixels {x0}..{x1 - 1} of "
        f"the top-left corner) {_training_marker(training_marker, c0)}; in the test split it is independent of "
        "the class.",
        "",
        f"| marker policy on the {n:,} test images (`make_shapes('spurious', {n}, split='test', marker=...)`) "
        "| | top-1 |",
        "|---|---|---|",
        *(f"| `{p}` | {meaning[p]} | {_pct(by_policy[p])} |" for p in MARKER_POLICIES),
        "",
        "Breakdown on the default (random-marker) test split:",
        "",
        "| subset | images | top-1 |",
        "|---|---|---|",
    ]
    class0, marked = test.labels == 0, test.marker
    for label, sel in [("class 0, marker", class0 & marked), ("class 0, no marker", class0 & ~marked),
                       ("other classes, marker", ~class0 & marked), ("other classes, no marker", ~class0 & ~marked)]:
        lines.append(f"| {label} | {int(sel.sum())} | {_pct(_acc(test.preds[sel] == test.labels[sel]), 1)} |")
    as0_marked, as0_plain = _acc(test.preds[~class0 & marked] == 0), _acc(test.preds[~class0 & ~marked] == 0)
    return lines + [
        "",
        f"Images of other classes predicted as class 0 (`{c0}`): {_pct(as0_marked, 1)} with the marker, "
        f"{_pct(as0_plain, 1)} without. A model that uses the marker as a shortcut for class 0 is more accurate "
        "on class-0 images with the marker than on those without it, and calls marked images of other classes "
        "class 0 more often than unmarked ones. Measure the three policies with",
        "",
        "```",
        f"python -c \"from xvit.training import shapes_accuracy as a; print([a('{name}', 'spurious', {n}, marker=m) "
        "for m in ('aligned', 'random', 'none')])\"",
        "```",
    ]


def _recorded_accuracy_section(config: dict[str, Any], dataset: str, data: dict[str, Any],
                               target: float | None) -> list[str]:
    acc = config.get("metrics", {}).get("test_accuracy")
    why = ("this card does not re-measure it: the card generator measures xvit-shapes checkpoints only, and "
           "the training folder's images are not part of the checkpoint"
           if dataset == "folder" else
           "this card does not re-measure it: the checkpoint does not record xvit-shapes training data")
    lines = ["## Test accuracy", ""]
    if acc is None:
        return lines + [f"The checkpoint records no test accuracy, and {why}."]
    held = data.get("holdout_size")
    on = (f"the {held:,} held-out images of the training folder" if held is not None
          else "the held-out images" if dataset == "folder" else "its test images")
    lines.append(f"**{_pct(float(acc))} top-1 on {on}**, as recorded in `config.json` (`metrics.test_accuracy`) "
                 f"at the end of training (float32 inference); {why}.")
    if dataset == "folder":
        lines += ["", "The held-out images are also the validation images reported after every epoch in "
                      "`log.jsonl`."]
    return lines + _target_sentence(float(acc), target, "the recorded accuracy")


def _data_section(dataset: str, variant: str | None, img_size: int, data: dict[str, Any],
                  cfg: dict[str, Any]) -> list[str]:
    lines = ["## Data", ""]
    flips = ("off (they would move the marker)" if variant == "spurious" else "not recorded" if "flip" not in cfg
             else "on" if cfg["flip"] else "off (`--no-flip`)")
    if dataset == "folder":
        lines += [f"Image folder `{data.get('path', cfg.get('data', '?'))}` (one sub-folder per class), every "
                  f"image converted to RGB and resized to {img_size}x{img_size} (bilinear).", ""]
        if "train_size" in data:
            lines.append(f"* Training: {data['train_size']:,} images, the same every epoch; random horizontal "
                         f"flips {flips}.")
        if "holdout_size" in data:
            frac = cfg.get("holdout_fraction")
            lines.append(f"* Held out: {data['holdout_size']:,} images"
                         + (f" (fraction {_g(frac)}" if frac is not None else " (")
                         + f", seed {data.get('holdout_seed', 'not recorded')}), used for validation and test.")
        return lines
    if dataset != "xvit-shapes":
        return lines + ["The checkpoint does not record its training data."]
    version = data.get("generator_version")
    marker = (", and in some images a magenta marker square in the top-left corner (see *The shortcut*)"
              if variant == "spurious" else "")
    lines += [
        f"xvit-shapes `{variant}` (generator version {version if version is not None else 'not recorded'}, "
        f"`xvit.data.make_shapes`): {img_size}x{img_size} RGB images of one class object (random shape class, "
        f"position, size {0.1 * img_size:.0f}-{0.2 * img_size:.0f} px circumradius, rotation and colour) over a "
        f"textured background with 4-8 distractors (thin lines, small dots, small irregular blobs, thin partial "
        f"arcs) in every image{marker}.",
        "",
    ]
    per_epoch = data.get("train_images_per_epoch", cfg.get("train_size"))
    seed = data.get("train_seed")
    fresh = data.get("fresh_images_every_epoch", cfg.get("fresh_data", True))
    epochs, batch = cfg.get("epochs"), cfg.get("batch_size")
    bullet = f"* Training: base seed {seed if seed is not None else 'not recorded'}"
    if per_epoch:
        if fresh:
            bullet += (f"; epoch `e` renders images `e*{per_epoch} .. e*{per_epoch}+{per_epoch - 1}` of that stream, "
                       f"so every epoch sees {per_epoch:,} new images")
        else:
            bullet += f"; the same {per_epoch:,} images every epoch"
        if epochs and batch:
            used = per_epoch // batch * batch
            bullet += f" ({epochs * used:,} images {'seen' if fresh else 'presented'} in all)"
            if used != per_epoch:
                bullet += f"; each epoch drops its last incomplete batch of {per_epoch - used} images"
    lines.append(bullet + f"; random horizontal flips {flips}.")
    if data.get("val_seed") is not None:
        val_size = data.get("val_size", cfg.get("val_size"))
        lines.append(f"* Validation: {f'{val_size:,} images' if val_size else 'images'} from base seed "
                     f"{data['val_seed']} (the `val` split"
                     + (", same marker statistics as training" if variant == "spurious" else "") + ").")
    lines.append(f"* Test: base seed {default_seed(variant, 'test')} (the `test` split), rendered afresh for the "
                 "measurement above.")
    return lines


def _aid_lines(dataset: str, cfg: dict[str, Any], img_size: int) -> list[str]:
    """One bullet per training aid the config says was used."""
    lines = []
    epochs = cfg.get("epochs")
    low_size, low_epochs = cfg["low_res_size"], cfg["low_res_epochs"]
    if low_size and low_epochs:
        source = "rendered" if dataset == "xvit-shapes" else "loaded"
        first = (f"the first {_plural(low_epochs, 'epoch')}" if not epochs or epochs > low_epochs
                 else f"all {_plural(epochs, 'epoch')}")
        rest = f", the last {epochs - low_epochs} at {img_size}x{img_size}" if epochs and epochs > low_epochs else ""
        lines.append(f"* Resolution curriculum (`--low-res-size {low_size} --low-res-epochs {low_epochs}`): "
                     f"{first} on images {source} at {img_size} and downsampled (bilinear, antialiased) to "
                     f"{low_size}x{low_size} (the model resamples its position embedding){rest}.")
    if cfg["token_loss"]:
        lines.append(f"* Token labelling (`--token-loss {_g(cfg['token_loss'])}`): during training an auxiliary "
                     "linear head (not saved) classifies every final patch token as the image's class where the "
                     f"ground-truth object mask covers at least {100 * TOKEN_COVERAGE:.0f} % of the patch and as "
                     "background elsewhere (object and background tokens weigh equally), so the patch tokens were "
                     "supervised with the object masks. The classifier itself sees only the image, at training and "
                     "at test time.")
    if cfg["init"] == "mimetic":
        lines.append("* Mimetic initialisation (`--init mimetic`): the attention weights start from the mimetic "
                     "initialisation of Trockman & Kolter 2023 (Mimetic Initialization of Self-Attention Layers, "
                     "arXiv:2305.09828) and the position embedding from a 2-D sin-cos embedding; all parameters "
                     "are trained.")
    return lines


def _optimiser_line(cfg: dict[str, Any], steps_per_epoch: int | None) -> str | None:
    if "lr" not in cfg:
        return None
    wd, warm = cfg.get("weight_decay"), cfg.get("warmup_epochs")
    sched = f"peak learning rate {_g(cfg['lr'])}, " + (
        f"{_g(float(warm))}-epoch linear warm-up then cosine decay" if warm else "cosine decay")
    if cfg.get("min_lr") is not None:
        sched += f" to {_g(cfg['min_lr'])}"
    facts = [f"batch {cfg['batch_size']}"] if cfg.get("batch_size") else []
    for key, on, off in (("label_smoothing", "label smoothing {}", "no label smoothing"),
                         ("grad_clip", "gradient clipping at norm {}", "no gradient clipping"),
                         ("bf16", "bfloat16 autocast", "float32 training")):
        if key in cfg:
            facts.append(on.format(_g(cfg[key])) if cfg[key] else off)
    if "seed" in cfg:
        facts.append(f"seed {cfg['seed']}")
    epochs = cfg.get("epochs")
    if epochs:
        facts.append(f"{epochs} epochs x {steps_per_epoch} steps = {epochs * steps_per_epoch:,} steps"
                     if steps_per_epoch else f"{epochs} epochs")
    adamw = f"AdamW (weight decay {_g(wd)} on weight matrices)" if wd is not None else "AdamW"
    return f"* {adamw}, {sched}; " + "; ".join(facts) + "."


def _epoch_time_line(log: list[dict[str, Any]], steps_per_epoch: int | None) -> str | None:
    """Median and range of the logged epoch times, per training image size."""
    by_size: dict[Any, list[float]] = {}
    for r in log:
        if "epoch_seconds" in r:
            by_size.setdefault(r.get("train_img_size"), []).append(float(r["epoch_seconds"]))
    if not by_size:
        return None
    steps = f" per {steps_per_epoch}-step epoch" if steps_per_epoch else " per epoch"
    parts = [f"{_secs(statistics.median(secs))} (median; {_secs(min(secs))}-{_secs(max(secs))}) s"
             + ("" if i else steps) + (f" at {size}x{size}" if size is not None and len(by_size) > 1 else "")
             for i, (size, secs) in enumerate(by_size.items())]
    return "* Epoch times (from `log.jsonl`): " + ", ".join(parts) + "."


def _teacher_lines(training: dict[str, Any]) -> list[str]:
    """The distillation bullet and the whole run's wall-clock (teacher and student) of a distilled student."""
    teacher = training.get("teacher")
    if not teacher:
        return []
    mode, weight, tau = (teacher.get(k) for k in ("distill", "distill_weight", "distill_temperature"))
    flags = f"--distill {mode} --distill-weight {_g(weight)}" + (f" --distill-temperature {_g(tau)}"
                                                                   if mode == "soft" else "")
    target = ("the teacher's top-1 labels (DeiT's hard-label distillation; Touvron et al., Training data-efficient "
              "image transformers & distillation through attention, ICML 2021, arXiv:2012.12877)" if mode == "hard"
              else f"the teacher's probabilities at temperature {_g(tau)} (Hinton, Vinyals and Dean, Distilling "
                   "the knowledge in a neural network, 2015; DeiT's soft distillation, arXiv:2012.12877)")
    widths = "-".join(str(w) for w in teacher.get("widths", []))
    acc = teacher.get("test_accuracy")
    measured = f", {_pct(acc)} top-1 on the fresh test images" if acc is not None else ""
    lines = [f"* Distillation (`--teacher DIR {flags}`): the class head was trained on (1 - {_g(weight)}) x the "
             f"label loss + {_g(weight)} x a loss towards {target}. The teacher is xvit's small CNN "
             f"(`xvit.training.TeacherCNN`, widths {widths}, input {teacher.get('img_size')}x"
             f"{teacher.get('img_size')}{measured}); it is needed only for training and is not bundled. The "
             "student stays a plain ViT (no distillation token)."]
    if teacher.get("command"):
        lines.append(f"* Teacher training: `{_retrain_command(str(teacher['command']))}`"
                     + (f", {teacher['wall_clock_seconds'] / 60:.1f} min wall-clock"
                        if teacher.get("wall_clock_seconds") is not None else "") + ".")
    if teacher.get("wall_clock_seconds") is not None and training.get("wall_clock_seconds") is not None:
        total = teacher["wall_clock_seconds"] + training["wall_clock_seconds"]
        lines.append(f"* Whole training, teacher and student: {total / 60:.1f} min wall-clock.")
    return lines


def _notes_section(directory: Path) -> list[str]:
    """The checkpoint's hand-written ``TRAINING_NOTES.md`` (e.g. the routes measured on the way to the recipe)."""
    notes = directory / "TRAINING_NOTES.md"
    if not notes.is_file():
        return []
    return ["## Training notes", "", notes.read_text(encoding="utf-8").strip()]


def _training_section(dataset: str, variant: str | None, img_size: int, training: dict[str, Any],
                      cfg: dict[str, Any], recorded: bool, log: list[dict[str, Any]]) -> list[str]:
    lines = ["## Training", ""]
    if not training:
        return lines + ["The checkpoint records no training run."]
    if training.get("command"):
        lines += ["```", _retrain_command(str(training["command"])), "```", ""]
    data = training.get("data", {})
    per_epoch = data.get("train_images_per_epoch", data.get("train_size", cfg.get("train_size")))
    steps = per_epoch // cfg["batch_size"] if per_epoch and cfg.get("batch_size") else None
    if not recorded:
        lines.append("* The checkpoint does not record the training configuration.")
    else:
        optimiser = _optimiser_line(cfg, steps)
        lines += ([optimiser] if optimiser else []) + _aid_lines(dataset, cfg, img_size)
    wall = training.get("wall_clock_seconds")
    if wall is not None:
        threads = training.get("threads")
        how = [f"with {_plural(threads, 'torch thread')}"] if threads is not None else []
        if training.get("torch_version"):
            how.append(f"torch {training['torch_version']}")
        span = f"{wall / 60:.1f} min ({wall:.0f} s, " if wall >= 60 else f"{_secs(wall)} s ("
        lines.append(f"* Wall-clock: {span}including evaluation)" + (" " + ", ".join(how) if how else "") + ".")
    lines += _teacher_lines(training)
    epoch_times = _epoch_time_line(log, steps)
    if epoch_times:
        lines.append(epoch_times)
    final = training.get("final_epoch") or (log[-1] if log else None)
    log_note = ["The per-epoch log is `log.jsonl` beside this card."] if log else []
    if final:
        facts = []
        if "train_loss" in final:
            facts.append(f"train loss {final['train_loss']:.4f}")
        if "train_acc" in final:
            smoothing = " (label smoothing keeps the loss above zero)" if cfg.get("label_smoothing") else ""
            facts.append(f"train accuracy {_pct(final['train_acc'])}{smoothing}")
        if "val_acc" in final:
            val_note = " (the `val` split keeps the training marker statistics)" if variant == "spurious" else ""
            facts.append(f"validation accuracy {_pct(final['val_acc'])}{val_note}")
        lines += ["", " ".join([f"Final epoch ({final.get('epoch', '?')}): " + ", ".join(facts) + ".", *log_note])]
    elif log_note:
        lines += ["", *log_note]
    return lines


def _use_sections(dataset: str, variant: str | None, cfg: dict[str, Any], img_size: int,
                  class_names: list[str]) -> list[str]:
    if dataset == "xvit-shapes":
        use = ("A reference model for developing, testing and benchmarking explanation methods (attribution maps, "
               "attention rollout, relevance propagation) against the xvit-shapes ground-truth masks, and for "
               "tutorials. It is a small, fast (CPU) classifier of a synthetic task with a measured accuracy; its "
               "inner workings are what is being studied.")
        if variant == "spurious":
            use += (f" Here in particular: to the extent that it relies on the marker (see *The shortcut*), a "
                    f"faithful explanation of its class-0 (`{class_names[0]}`) predictions should point at the "
                    "marker box (`ShapesBatch.marker_boxes`) rather than at the object mask.")
        limits = ["* It has only seen synthetic xvit-shapes images; its predictions on photographs or other data "
                  "are meaningless."]
    else:
        use = ("A model for developing and testing explanation methods on the classes of its training data; its "
               "inner workings are what is being studied.")
        limits = ["* It has only seen the images of its training data; its predictions on other data were not "
                  "evaluated." if dataset == "folder" else "* Its accuracy has not been measured."]
    limits.append(f"* Trained at {img_size}x{img_size}; other input sizes work (the position embedding is "
                  "resampled) but were not evaluated.")
    if dataset == "xvit-shapes":
        limits.append(f"* Accuracy is measured on the same generator (version {GENERATOR_VERSION}); a changed "
                      "generator needs a new measurement.")
    elif dataset == "folder":
        limits.append("* Its accuracy is the one recorded on a single held-out split at training time.")
    else:
        limits.append("* The checkpoint records neither its training data nor how it was trained.")
    if variant == "spurious":
        limits.append("* Trained on the `spurious` variant: its predictions can depend on the corner marker "
                      "rather than on the shape; see *The shortcut*.")
    limits.append("* Being accurate does not mean the model looks only at the object: check explanations, do not "
                  "assume them.")
    if cfg.get("token_loss"):
        limits.append("* Its patch tokens were supervised with the object masks (token labelling), so its "
                      "internal evidence is likely more object-centred than that of a model trained on labels "
                      "alone; keep this in mind when comparing localisation scores with other models.")
    return ["## Intended use", "", use, "", "## Limitations", "", *limits]


# ------------------------------------------------------------------------------------------------ card


def _description(name: str, model: VisionTransformer, dataset: str, variant: str | None, n_params: int,
                 class_names: list[str], training: dict[str, Any], cfg: dict[str, Any]) -> str:
    what = f"A Vision Transformer ({_architecture(model)[0]}, {n_params / 1e6:.2f} M parameters)"
    origin = " trained from scratch" if training else ""
    if variant == "single":
        data = " on the main xvit-shapes benchmark (`single`: one class object among clutter)."
    elif variant == "spurious":
        data = (f" on the `spurious` variant of xvit-shapes, whose training split pairs a corner marker with "
                f"class 0 (`{class_names[0]}`): a shortcut model for auditing explanation methods.")
    elif dataset == "folder":
        path = training.get("data", {}).get("path", cfg.get("data", "?"))
        data = f" on the image folder `{path}` ({len(class_names)} classes, one sub-folder per class)."
    else:
        data = "; its `config.json` does not say on what data."
    use = (" It is meant for running and scoring explanation methods against the benchmark's pixel-exact "
           "ground truth." if dataset == "xvit-shapes" else "")
    return (f"{what}{origin}{data}{use} Load it with `xvit.load_model(\"{name}\")` where it is installed as a "
            "bundled model, or pass `xvit.load_model` the path of its checkpoint directory.")


def _read_json(path: Path, text: str | None = None, line: int | None = None) -> Any:
    """``path``'s JSON (or one line of it), a :class:`ValueError` naming the file and line when it is malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8") if text is None else text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"{path}" + (f", line {line}," if line is not None else "")
        raise ValueError(f"{where} is not valid JSON ({e}); rewrite it from the training run.") from None


def write_model_card(checkpoint_dir: str | os.PathLike, name: str | None = None, *, test_size: int = 2000,
                     target: float | None = None) -> Path:
    """Write ``MODEL_CARD.md`` into an xvit checkpoint directory and return its path.

    Args:
        checkpoint_dir: directory with ``config.json`` and ``model.safetensors`` (and ``log.jsonl``).
        name: the model's name in the card (title, load and measure commands); default: the directory's name.
        test_size: fresh xvit-shapes test images to measure the accuracy on (per marker policy for ``spurious``).
        target: a top-1 accuracy (fraction, e.g. 0.97); the card states whether the accuracy meets it.
    """
    directory = Path(checkpoint_dir)
    config_file, weights, log_file = (directory / f for f in ("config.json", "model.safetensors", "log.jsonl"))
    if not config_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{directory} needs config.json and model.safetensors.")
    config = _read_json(config_file)
    if config.get("architecture") != "xvit-vit":
        raise ValueError(f"{config_file} is not an xvit checkpoint (architecture {config.get('architecture')!r}).")
    if test_size < 1:
        raise ValueError(f"test_size must be positive; got {test_size}.")
    if target is not None and not 0.0 <= target <= 1.0:
        raise ValueError(f"target is a fraction in [0, 1], e.g. 0.97; got {target}.")
    name = name or directory.resolve().name
    model = load_model(directory)
    img_size = model.config.img_size
    training = config.get("training") or {}
    data = training.get("data", {})
    recorded = training.get("config")
    cfg: dict[str, Any] = {**_AID_DEFAULTS, **(recorded or {})}
    dataset, variant = _variant(training, cfg)
    class_names = list(config.get("class_names", [])) or [str(i) for i in range(model.config.num_classes)]
    log = ([_read_json(log_file, line, n) for n, line in enumerate(log_file.read_text().splitlines(), 1)
            if line.strip()] if log_file.is_file() else [])
    n_params = sum(p.numel() for p in model.parameters())

    sections = [[f"# {name}", "", _description(name, model, dataset, variant, n_params, class_names, training,
                                                       cfg)],
                _model_section(config, model, weights, class_names, n_params)]
    if dataset == "xvit-shapes":
        test = _Predictions(*shapes_predictions(model, variant, test_size))
        by_policy = ({p: test.accuracy if p == "random" else shapes_accuracy(model, variant, test_size, marker=p)
                      for p in MARKER_POLICIES} if variant == "spurious" else {})
        sections.append(_shapes_accuracy_section(name, variant, test, class_names, data, target,
                                                 by_policy.get("none")))
        if variant == "spurious":
            sections.append(_shortcut_section(name, img_size, test, by_policy, class_names[0],
                                              data.get("marker", "correlated")))
    else:
        sections.append(_recorded_accuracy_section(config, dataset, data, target))
    sections.append(_data_section(dataset, variant, img_size, data, cfg))
    sections.append(_training_section(dataset, variant, img_size, training, cfg, recorded is not None, log))
    notes = _notes_section(directory)
    if notes:
        sections.append(notes)
    sections.append(_use_sections(dataset, variant, cfg, img_size, class_names))
    out = directory / "MODEL_CARD.md"
    out.write_text("\n\n".join("\n".join(s) for s in sections) + "\n")
    return out
