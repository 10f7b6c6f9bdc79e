"""The engine options that ``xvit evaluate`` and ``xvit explain-dataset`` share: ``--engine``, ``--address``,
``--workers``."""

from __future__ import annotations

import argparse

from xvit.cli.common import UsageError, positive_int
from xvit.evaluate.engines import ENGINES, Engine, make_engine

__all__ = ["add_engine_arguments", "engine_from_args"]


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--engine``, ``--address`` and ``--workers`` to ``parser``."""
    parser.add_argument("--engine", choices=list(ENGINES), default="local",
                        help="where chunks are computed: this process (local, default) or an actor pool on Ray "
                             "(ray; needs pip install 'xvit[ray]')")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join, e.g. auto or HEAD_IP:6379 (default: start a local Ray instance "
                             "with this machine's CPUs)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="Ray actors, each holding the model once (default: one per CPU of the cluster)")


def engine_from_args(args: argparse.Namespace) -> Engine:
    """The engine the options name; a missing Ray or a Ray-only option on the local engine is a usage error."""
    try:
        options = {"num_gpus": 1} if args.engine == "ray" and str(args.device).startswith("cuda") else {}
        return make_engine(args.engine, address=args.address, workers=args.workers, **options)
    except (ImportError, ValueError) as e:
        raise UsageError(str(e)) from None
