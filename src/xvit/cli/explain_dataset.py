"""``xvit explain-dataset``: explanation maps for a whole data set, streamed to Parquet
(:mod:`xvit.evaluate.dataset_maps`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from xvit.cli._engines import add_engine_arguments, engine_from_args
from xvit.cli.common import (
    MAIN_METHODS,
    UsageError,
    add_model_argument,
    add_param_argument,
    check_method_params,
    check_methods,
    device,
    load_model,
    output_dir,
    parse_params,
    positive_int,
)
from xvit.data.sources import DataSpecError
from xvit.evaluate.dataset_maps import MAP_DTYPES, explain_dataset, import_pyarrow

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``xvit explain-dataset`` options to ``parser``."""
    parser.description = ("Explain every image of a data set with each method (its predicted class) and write one "
                          "Parquet row per image to --out/maps.parquet: prediction, top 5, each method's raw map "
                          "and its statistics; read it back with xvit.load_maps(DIR).")
    parser.add_argument("data", help="an image folder, a manifest, xvit-shapes:<variant>:<split>[:N] or mnist:<split> "
                                     "(see xvit.data.data_sources())")
    add_model_argument(parser)
    parser.add_argument("--methods", "--method", dest="methods", nargs="+", metavar="M", default=["rollout"],
                        help=f"methods (default: rollout; e.g. {' '.join(MAIN_METHODS)}; see 'xvit methods')")
    parser.add_argument("--out", type=Path, default=Path("out/maps"), help="output folder (default: out/maps)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="images per chunk: one explanation call and one Parquet row group (default: 16)")
    parser.add_argument("--max-images", type=positive_int, default=None, help="explain only the first N images")
    parser.add_argument("--overlays", action="store_true", help="also write an overlay PNG per image and method")
    parser.add_argument("--map-dtype", choices=list(MAP_DTYPES), default="float32",
                        help="precision of the stored maps (default: float32)")
    parser.add_argument("--seed", type=int, default=0, help="seed set before each chunk (default: 0)")
    add_param_argument(parser)
    parser.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``xvit explain-dataset``; returns the exit status."""
    dev = device(args.device)
    output_dir(args.out)
    methods = check_methods(args.methods)
    params = parse_params(args.param)
    check_method_params(params, methods)
    try:
        import_pyarrow()
    except ImportError as e:
        raise UsageError(str(e)) from None
    engine = engine_from_args(args)
    model = load_model(args.model).to(dev)
    try:
        path = explain_dataset(args.model, args.data, methods, args.out, method_params=params,
                               batch_size=args.batch_size, max_images=args.max_images, overlays=args.overlays,
                               map_dtype=args.map_dtype, seed=args.seed, engine=engine, opened_model=model,
                               progress=args.progress)
    except (DataSpecError, ValueError, TypeError) as e:
        raise UsageError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    overlays = f" and {args.out / 'overlays'}/" if args.overlays else ""
    print(f"Wrote {path}{overlays}; read it with xvit.load_maps({str(args.out)!r})")
    return 0
