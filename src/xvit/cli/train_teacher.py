"""``xvit train-teacher``: train the small CNN that ``xvit train --teacher DIR`` distils from
(see :mod:`xvit.training.teacher`)."""

from __future__ import annotations

import argparse

from xvit.cli.common import UsageError, config_from_namespace, output_dir, rerun_command
from xvit.data.sources import DataSpecError
from xvit.training import TeacherConfig, TrainConfigError, train_teacher

# Boolean fields whose non-default value is written as a flag.
_FLAGS = {"progress": "--no-progress", "resume": "--resume"}


def widths(text: str) -> tuple[int, ...]:
    """``"32,64,128,128"`` as a tuple of positive integers (argparse type of ``--widths``)."""
    try:
        values = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 32,64,128,128; got {text!r}"
                                         ) from None
    if not all(w > 0 for w in values):
        raise argparse.ArgumentTypeError(f"widths must be positive; got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``xvit train-teacher`` options, each a :class:`~xvit.training.TeacherConfig` field."""
    d = TeacherConfig()
    parser.description = ("Train a small CNN teacher on xvit-shapes or labelled data and write it (model.safetensors, "
                          "config.json with the command line, log.jsonl with the validation accuracy per epoch) to "
                          "--out, for 'xvit train --teacher DIR'.")
    parser.add_argument("--data", default=d.data,
                        help="the same data specs as 'xvit train --data' (default: %(default)s)")
    parser.add_argument("--out", default=d.out, help="teacher directory (default: %(default)s)")
    parser.add_argument("--widths", type=widths, default=d.widths, metavar="W1,W2,...",
                        help="channels of the stages, each two 3x3 convs, the first of stride 2 "
                             f"(default: {','.join(map(str, d.widths))})")
    parser.add_argument("--img-size", type=int, default=d.img_size, help="input size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (default: %(default)s)")
    parser.add_argument("--train-size", type=int, default=d.train_size,
                        help="xvit-shapes images per epoch, fresh every epoch (default: %(default)s)")
    parser.add_argument("--val-size", type=int, default=d.val_size,
                        help="xvit-shapes validation images (default: %(default)s)")
    parser.add_argument("--test-size", type=int, default=d.test_size,
                        help="xvit-shapes test images measured after training (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of initialisation, shuffling and flips (default: %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (default: a bar per epoch on stderr)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --out from its last finished epoch (train_state.pt; "
                             "the options must be the same) (default: start afresh)")


def command_line(config: TeacherConfig) -> str:
    """``xvit train-teacher`` with every option of ``config`` that differs from its default."""
    return rerun_command(["xvit", "train-teacher"], config, _FLAGS,
                         {"widths": lambda value: ["--widths", ",".join(map(str, value))]})


def config_from_args(args: argparse.Namespace) -> TeacherConfig:
    """The :class:`~xvit.training.TeacherConfig` of parsed options, with the command that reruns it."""
    return config_from_namespace(TeacherConfig, args, command_line)


def run(args: argparse.Namespace) -> int:
    output_dir(args.out)
    config = config_from_args(args)
    try:
        train_teacher(config)  # validates the config before reading any data
    except (TrainConfigError, DataSpecError) as e:
        raise UsageError(str(e)) from None
    return 0
