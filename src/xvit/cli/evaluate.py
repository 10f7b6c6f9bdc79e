"""``xvit evaluate``: methods × quality metrics over a data set, a thin layer over :mod:`xvit.evaluate`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from xvit.cli._engines import add_engine_arguments, engine_from_args
from xvit.cli.common import (
    UsageError,
    add_model_argument,
    add_param_argument,
    deprecation_note,
    device,
    load_model,
    method_params_of,
    output_dir,
    parse_params,
    positive_int,
)
from xvit.evaluate import DEFAULT_METHODS, RunSpec, execute, metrics, prepare

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``xvit evaluate`` options to ``parser``."""
    parser.description = ("Run explanation methods x quality metrics over a data set; write per-image scores, a "
                          "summary (Markdown, JSON), curve plots and provenance to --out. Rerunning the same "
                          "command resumes an interrupted run.")
    add_model_argument(parser)
    parser.add_argument("--data", required=True,
                        help="xvit-shapes:<variant>:<split>[:N][:marker=MODE] (e.g. xvit-shapes:single:test:200 or "
                             "xvit-shapes:spurious:test:200:marker=random), an image folder with masks/ and "
                             "manifest.json, or gtsegs_ijcv.mat (see xvit.data.data_sources())")
    parser.add_argument("--methods", "--method", dest="methods", nargs="+", metavar="M", default=list(DEFAULT_METHODS),
                        help=f"methods to evaluate (default: {' '.join(DEFAULT_METHODS)}; see 'xvit methods')")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="leave out the chance baseline row (method 'random', a seeded random map), which is "
                             "otherwise added to the methods")
    optional = [name for name, info in metrics().items() if not info["default"]]
    parser.add_argument("--metrics", "--metric", dest="metrics", nargs="+", metavar="NAME", default=None,
                        help=f"metrics (default: all but {', '.join(optional)}): {', '.join(metrics())}")
    parser.add_argument("--out", type=Path, default=Path("out/evaluate"), help="output folder (default: out/evaluate)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="images per explanation call and per saved chunk (default: 16)")
    parser.add_argument("--forward-batch-size", type=positive_int, default=None,
                        help="perturbed images per forward pass in perturbation metrics (default: 16 on a CPU, "
                             "where larger passes cost more per image, 128 on a GPU)")
    parser.add_argument("--class-explained", choices=["predicted", "target"], default="predicted",
                        help="explain the predicted class (default) or the ground-truth label")
    parser.add_argument("--seed", type=int, default=0, help="seed of explanations and randomisation (default: 0)")
    parser.add_argument("--steps", type=positive_int, default=56,
                        help="deletion/insertion steps (default: 56; 224 pixels per step at 112x112)")
    parser.add_argument("--randomization-images", type=positive_int, default=16,
                        help="images of the randomisation test, the first ones (default: 16)")
    parser.add_argument("--max-images", type=positive_int, default=None, help="evaluate only the first N images")
    add_param_argument(parser, deprecated=["--method-param"])
    parser.add_argument("--metric-param", action="append", default=[], metavar="METRIC.KEY=VALUE",
                        help="a metric parameter, e.g. pointing_game.tol=5 or deletion_insertion.preset=tis "
                             "(repeatable)")
    parser.add_argument("--restart", action="store_true", help="ignore saved state in --out and start over")
    parser.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_engine_arguments(parser)


def _spec(args: argparse.Namespace) -> RunSpec:
    """The run's spec from the options, checked before any model or data is opened."""
    method_params = method_params_of(args, "integrated_gradients.n_steps=16")
    metric_params = parse_params(args.metric_param, "--metric-param", "pointing_game.tol=5")
    try:
        return RunSpec(data=args.data, model=args.model,
                       methods=(*args.methods, "random") if args.baseline else tuple(args.methods),
                       metrics=None if args.metrics is None else tuple(args.metrics), method_params=method_params,
                       metric_params=metric_params, batch_size=args.batch_size, class_explained=args.class_explained,
                       seed=args.seed, steps=args.steps, forward_batch_size=args.forward_batch_size,
                       randomization_images=args.randomization_images, max_images=args.max_images)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _command(args: argparse.Namespace, spec: RunSpec) -> str:
    parts = ["xvit", "evaluate", "--model", args.model, "--data", args.data, "--methods", *spec.methods,
             "--metrics", *spec.metrics, "--out", str(args.out), "--batch-size", str(args.batch_size),
             "--class-explained", args.class_explained, "--seed", str(args.seed), "--steps", str(args.steps),
             "--randomization-images", str(args.randomization_images), "--device", args.device]
    if args.forward_batch_size is not None:
        parts += ["--forward-batch-size", str(args.forward_batch_size)]
    if args.max_images is not None:
        parts += ["--max-images", str(args.max_images)]
    if not args.baseline:
        parts += ["--no-baseline"]
    for p in [*args.param, *args.deprecated_param]:
        parts += ["--param", p]
    for p in args.metric_param:
        parts += ["--metric-param", p]
    if args.engine != "local":
        parts += ["--engine", args.engine]
    if args.address is not None:
        parts += ["--address", args.address]
    if args.workers is not None:
        parts += ["--workers", str(args.workers)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Run ``xvit evaluate``; returns the exit status."""
    dev = device(args.device)
    output_dir(args.out)
    spec = _spec(args)
    engine = engine_from_args(args)
    model = load_model(args.model).to(dev)
    try:
        plan = prepare(spec, model=model)
    except ImportError as e:
        raise UsageError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise UsageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    try:
        result = execute(plan, args.out, resume=not args.restart, progress=args.progress,
                         command=_command(args, spec), engine=engine)
    except KeyboardInterrupt:
        print(f"xvit evaluate: finished chunks are saved in {args.out / 'state'}; rerun the same command to "
              "resume.", file=sys.stderr)
        raise
    print(result.to_markdown().split("\n## ")[0].rstrip())
    for note in dict.fromkeys([*result.notes, deprecation_note(args)]):
        if note is not None:
            print(f"note: {note}", file=sys.stderr)
    print(f"Wrote per_image.csv, summary.md, summary.json, curves/ and provenance.json to {args.out}")
    return 0

