"""The ``xvit`` command line. One module per sub-command, each with ``add_arguments(parser)`` and ``run(args)``;
a sub-command's module is imported only when it runs. Every error prints one line on stderr, prefixed with the
sub-command, and exits with status 2; ``xvit --debug COMMAND ...`` prints the traceback instead (docs/errors.md)."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import xvit  # first: installs the torchvision import shim that timm and transformers need
from xvit.cli.common import UsageError
from xvit.errors import DOCUMENTED_ERRORS

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]

# name -> one-line help; the module is xvit.cli.<name with - as _>.
COMMANDS = {
    "explain": "explain images: overlays, a comparison grid and results.json",
    "demo": "explain the bundled sample images and write an HTML report",
    "methods": "list the explanation methods",
    "models": "list the bundled models and the accepted model specs",
    "analyse": "run a model analysis (see 'xvit analyse --list')",
    "evaluate": "evaluate explanation methods with quality metrics over a data set",
    "explain-dataset": "explanation maps for a whole data set, written as Parquet (local or on Ray)",
    "train": "train a registered model variant (--arch) on xvit-shapes, an image folder or MNIST",
    "train-teacher": "train a small CNN teacher for distillation ('xvit train --teacher DIR')",
    "card": "write a checkpoint's model card, measuring the accuracy it reports",
    "bench": "time and peak memory of methods relative to a forward, forward+input-gradient and forward+backward pass",
    "serve": "start the local web app (explain, compare and analyse in the browser)",
}


class _Parser(argparse.ArgumentParser):
    """Reports argument errors in one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported and adds its arguments."""
    parser = _Parser(prog="xvit", description="Explain, evaluate and analyse Vision Transformer predictions.")
    parser.add_argument("--version", action="version", version=f"xvit {xvit.__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name == command:
            module = importlib.import_module(f"xvit.cli.{name.replace('-', '_')}")
            module.add_arguments(sub)
            sub.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command).parse_args(argv)
    except SystemExit as e:  # argparse has printed usage or help
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"xvit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every error is one line; --debug shows where it came from
        if args.debug:
            traceback.print_exc()
        print(f"xvit {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2


def error_line(e: BaseException) -> str:
    """The first line of an error's message; unexpected error types are named and point at ``--debug``."""
    text = e.args[0] if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) else str(e)
    line = next((part.strip() for part in text.splitlines() if part.strip()), "") or type(e).__name__
    if isinstance(e, (UsageError, *DOCUMENTED_ERRORS)):
        return line
    return f"{type(e).__name__}: {line} (unexpected; rerun with --debug for the traceback)"
