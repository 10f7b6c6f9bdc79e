"""``xvit card``: write a checkpoint's ``MODEL_CARD.md``, measuring what it reports (see
:func:`xvit.training.write_model_card`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xvit.cli.common import UsageError, load_model, positive_int
from xvit.training import write_model_card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write DIR/MODEL_CARD.md for an xvit checkpoint directory from the checkpoint alone, "
                          "measuring the accuracy it reports, and print its path.")
    parser.add_argument("directory", metavar="DIR", help="checkpoint directory (config.json, model.safetensors, "
                                                         "log.jsonl)")
    parser.add_argument("--name", help="model name used in the card (default: the directory's name)")
    parser.add_argument("--test-size", type=positive_int, default=2000,
                        help="fresh xvit-shapes test images to measure on (default: %(default)s)")
    parser.add_argument("--target", type=float,
                        help="top-1 accuracy target as a fraction, e.g. 0.97 (default: none)")


def run(args: argparse.Namespace) -> int:
    if (Path(args.directory) / "config.json").exists():
        load_model(args.directory)  # the checkpoint checks of xvit.models: a broken file is named before measuring
    try:
        path = write_model_card(args.directory, args.name, test_size=args.test_size, target=args.target)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    print(path)
    return 0
