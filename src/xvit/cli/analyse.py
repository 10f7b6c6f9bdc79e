"""``xvit analyse NAME IMAGE... --model SPEC --out DIR``: run a registered model analysis, write its JSON and
figure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xvit.cli.common import (
    UsageError,
    add_model_argument,
    add_param_argument,
    check_image_files,
    device,
    load_model,
    output_dir,
    parse_params,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run a model analysis (see --list) on images; writes result.json (tensors, parameters, "
                          "meta with the definition version) and figure.png to --out.")
    parser.add_argument("name", nargs="?", metavar="NAME", help="analysis name (see --list)")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
    parser.add_argument("--list", action="store_true", help="list the registered analyses and exit")
    add_model_argument(parser)
    add_param_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("out/analyse"), help="output folder (default: out/analyse)")
    parser.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda (default: cpu)")


def run(args: argparse.Namespace) -> int:
    from xvit.analysis import ANALYSES, analyses
    from xvit.data.images import load_images
    from xvit.models import preprocessing_for
    from xvit.viz import save_grid

    if args.list or args.name is None:
        for name, info in analyses().items():
            print(f"{name}  [{info['cost']}]  {info['summary']}  ({info['citation']})")
        return 0
    if args.name not in ANALYSES:
        try:
            ANALYSES.get(args.name)
        except KeyError as e:
            raise UsageError(e.args[0]) from None
    if not args.images:
        raise UsageError(f"give at least one image to analyse, e.g. xvit analyse {args.name} cat.png")
    check_image_files(args.images)
    output_dir(args.out)
    params = parse_params(args.param, example=f"{args.name}.KEY=VALUE")
    unknown = [k for k in params if k != args.name]
    if unknown:
        raise UsageError(f"--param names {unknown[0]!r}, but the analysis run is {args.name!r}")
    try:
        analysis = ANALYSES.get(args.name)(**params.get(args.name, {}))
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    dev = device(args.device)
    model = load_model(args.model).to(dev)
    x, _ = load_images(args.images, preprocessing_for(model))
    param = next(model.parameters())
    result = analysis(model, x.to(device=param.device, dtype=param.dtype))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    save_grid(result.plot(), args.out / "figure.png")
    print(f"Wrote result.json and figure.png to {args.out}")
    return 0
