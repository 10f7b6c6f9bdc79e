"""``xvit train``: train a registered model variant on xvit-shapes or labelled data (see :mod:`xvit.training`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from xvit.cli.common import UsageError, config_from_namespace, output_dir, rerun_command
from xvit.data.sources import DataSpecError
from xvit.models import variants
from xvit.training import TrainConfig, TrainConfigError, train

# Boolean fields whose non-default value is written as a flag.
_FLAGS = {"fresh_data": "--repeat-data", "flip": "--no-flip", "bf16": "--no-bf16", "progress": "--no-progress",
          "resume": "--resume", "track_indicators": "--track-indicators"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``xvit train`` options, one per :class:`~xvit.training.TrainConfig` field."""
    d = TrainConfig()
    parser.description = ("Train a model variant (see --arch) on xvit-shapes or labelled data and write an xvit "
                          "checkpoint (model.safetensors, config.json with the command line, log.jsonl) to --out.")
    parser.add_argument("--data", default=d.data,
                        help="'xvit-shapes:single' or 'xvit-shapes:spurious' (an endless stream), or labelled data: "
                             "a folder with one sub-folder per class or a manifest.json, mnist:PATH[:SPLIT] "
                             "(default: %(default)s)")
    parser.add_argument("--out", default=d.out, help="checkpoint directory (default: %(default)s)")
    parser.add_argument("--arch", default=d.arch, choices=sorted(variants()),
                        help="model variant, see xvit.models.variants() (default: %(default)s)")
    presets = "; ".join(f"{name}: {', '.join(info['presets'])}" for name, info in variants().items())
    parser.add_argument("--preset", default=d.preset,
                        help=f"size preset of the variant ({presets}) (default: %(default)s)")
    parser.add_argument("--embed-dim", type=int, help="override the preset's embedding width (default: the preset's)")
    parser.add_argument("--depth", type=int, help="override the preset's number of blocks (default: the preset's)")
    parser.add_argument("--num-heads", type=int, help="override the preset's number of heads (default: the preset's)")
    parser.add_argument("--mlp-ratio", type=float, help="override the MLP width ratio (default: the preset's, 4)")
    parser.add_argument("--model-arg", dest="model_args", action="append", default=[], metavar="KEY=VALUE",
                        help="a further field of the variant's config, repeatable; VALUE is read as JSON when it "
                             "parses (numbers, true/false, lists), else as a string (default: none)")
    parser.add_argument("--patch-size", type=int, default=d.patch_size, help="patch size in pixels "
                                                                             "(default: %(default)s)")
    parser.add_argument("--img-size", type=int, default=d.img_size,
                        help="input size; a multiple of --patch-size (default: %(default)s)")
    parser.add_argument("--reg-tokens", type=int, default=d.reg_tokens,
                        help="number of register tokens (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument("--low-res-size", type=int, help="image size of the first --low-res-epochs epochs, a "
                                                         "multiple of --patch-size (cheap curriculum, e.g. 56; "
                                                         "default: none)")
    parser.add_argument("--low-res-epochs", type=int, default=d.low_res_epochs,
                        help="epochs at --low-res-size (default: %(default)s)")
    parser.add_argument("--train-size", type=int, default=d.train_size,
                        help="xvit-shapes images per epoch, fresh every epoch (default: %(default)s)")
    parser.add_argument("--repeat-data", dest="fresh_data", action="store_false",
                        help="xvit-shapes: reuse the same --train-size images every epoch (default: fresh images)")
    parser.add_argument("--val-size", type=int, default=d.val_size,
                        help="xvit-shapes validation images (default: %(default)s)")
    parser.add_argument("--test-size", type=int, default=d.test_size,
                        help="xvit-shapes test images measured after training (default: %(default)s)")
    parser.add_argument("--holdout-fraction", type=float, default=d.holdout_fraction,
                        help="labelled data: fraction held out for validation and testing (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--min-lr", type=float, default=d.min_lr,
                        help="learning rate at the end of the cosine (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help="AdamW weight decay on weight matrices (default: %(default)s)")
    parser.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                        help="epochs of linear warm-up (default: %(default)s)")
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                        help="label smoothing of the cross-entropy (default: %(default)s)")
    parser.add_argument("--token-loss", type=float, default=d.token_loss,
                        help="xvit-shapes: weight of the auxiliary per-patch loss from the masks (token labelling; "
                             "default: %(default)s, off)")
    parser.add_argument("--teacher", metavar="DIR",
                        help="distil from the CNN teacher in DIR (written by 'xvit train-teacher'; the same classes) "
                             "(default: none)")
    parser.add_argument("--distill", default=d.distill, choices=["hard", "soft"],
                        help="with --teacher: 'hard' trains on the teacher's top-1 label (DeiT), 'soft' on its "
                             "probabilities at --distill-temperature (Hinton et al.) (default: %(default)s)")
    parser.add_argument("--distill-weight", type=float, default=d.distill_weight,
                        help="with --teacher: weight w in [0, 1] of the distillation term, the true labels get 1 - w "
                             "(default: %(default)s)")
    parser.add_argument("--distill-temperature", type=float, default=d.distill_temperature,
                        help="with --distill soft: temperature of both softmaxes (default: %(default)s)")
    parser.add_argument("--init", default=d.init, choices=["default", "mimetic"],
                        help="'mimetic': mimetic attention and sin-cos position initialisation, a faster start "
                             "(default: %(default)s)")
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip,
                        help="max gradient norm; 0 disables (default: %(default)s)")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="no random horizontal flips (default: flips where they keep the label)")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="train in float32 (default: bfloat16 autocast)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of initialisation, shuffling and flips (default: %(default)s)")
    parser.add_argument("--data-seed", type=int,
                        help="base seed of the training images (default: the split's for xvit-shapes, --seed's "
                             "for the hold-out of labelled data)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (default: a bar per epoch on stderr)")
    parser.add_argument("--track-indicators", action="store_true",
                        help="record SVDA's six indicators at step 0 and after every epoch on a fixed probe batch "
                             "(indicators.csv and plots in --out; see docs/svda.md) (default: off)")
    parser.add_argument("--track-probe-size", type=int, default=d.track_probe_size,
                        help="validation images in the probe batch of --track-indicators (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --out from its last finished epoch (train_state.pt; "
                             "the options must be the same) (default: start afresh)")


def command_line(config: TrainConfig) -> str:
    """``xvit train`` with every option of ``config`` that differs from its default: the command that reruns it."""
    def model_args(value: dict[str, Any]) -> list[str]:
        return [w for key, arg in value.items()
                for w in ("--model-arg", f"{key}={arg if isinstance(arg, str) else json.dumps(arg)}")]
    return rerun_command(["xvit", "train"], config, _FLAGS, {"model_args": model_args})


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` words as a dict; a VALUE that parses as JSON is taken as JSON, otherwise as a string."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--model-arg takes KEY=VALUE; got {item!r}.")
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`~xvit.training.TrainConfig` of parsed ``xvit train`` options, with the command that reruns it."""
    return config_from_namespace(TrainConfig, args, command_line, model_args=parse_model_args(args.model_args))


def run(args: argparse.Namespace) -> int:
    output_dir(args.out)
    config = config_from_args(args)
    try:
        train(config)  # validates the config before reading any data
    except (TrainConfigError, DataSpecError) as e:
        raise UsageError(str(e)) from None
    return 0
