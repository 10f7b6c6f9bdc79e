"""``xvit analyse NAME IMAGE... --model SPEC --out DIR``: run a registered model analysis, write its JSON and
figure."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from xvit.cli.common import (
    UsageError,
    add_model_argument,
    add_param_argument,
    check_image_files,
    device,
    load_model,
    output_dir,
    parse_params,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run a model analysis (see --list) on images; writes result.json (tensors, parameters, "
                          "meta with the definition version) and figure.png to --out.")
    parser.add_argument("name", nargs="?", metavar="NAME", help="analysis name (see --list)")
    parser.add_argument("images", nargs="*", metavar="IMAGE_OR_DATA",
                        help="image files, or one data spec (e.g. xvit-shapes:single:test:64, mnist:PATH:test:200): "
                        "analyses that pool over a data set (those with a merge) run on it batch by batch, with "
                        "its labels as targets")
    parser.add_argument("--list", action="store_true", help="list the registered analyses and exit")
    add_model_argument(parser)
    add_param_argument(parser, owner="analysis")
    parser.add_argument("--out", type=Path, default=Path("out/analyse"), help="output folder (default: out/analyse)")
    parser.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="images per batch for a data-spec input (default: 16)")


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
    data = _data_spec(args.images)
    if data is None:
        check_image_files(args.images)
    elif not hasattr(ANALYSES.get(args.name), "merge"):
        raise UsageError(f"{args.name} analyses images one batch at a time; pass image files, not the data spec "
                         f"{args.images[0]!r}")
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
    param = next(model.parameters())
    if data is None:
        x, _ = load_images(args.images, preprocessing_for(model))
        result = analysis(model, x.to(device=param.device, dtype=param.dtype))
    else:
        result = _analyse_dataset(analysis, model, data, args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.name == "erf":
        from xvit.analysis.erf import ResponsiveField

        mask = ResponsiveField.write_window_mask(result, args.out, model=args.model, data=args.images[0])
        print(f"Wrote the WinfT window file {mask} (xvit train --arch winft --model-arg window_mask={mask})")
    (args.out / "result.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    save_grid(result.plot(), args.out / "figure.png")
    print(f"Wrote result.json and figure.png to {args.out}")
    return 0


def _data_spec(inputs: list[str]) -> str | None:
    """The one data spec among the inputs (a registered source's ``NAME:...`` text that is not an existing file), or
    None for image files."""
    from xvit.data.sources import DATA_SOURCES

    if len(inputs) != 1 or Path(inputs[0]).is_file():
        return None
    text = inputs[0]
    if any(text == name or text.startswith(name + ":") for name in DATA_SOURCES):
        return text
    return None


def _analyse_dataset(analysis: Any, model: Any, spec: str, batch_size: int) -> Any:
    """Run ``analysis`` over a data set in batches (labels as targets where the data has them) and merge."""
    from xvit.data.sources import DataSpecError, load_dataset
    from xvit.models import preprocessing_for

    prep = preprocessing_for(model)
    try:
        data = load_dataset(spec, size=tuple(prep.size))
    except (DataSpecError, ImportError) as e:
        raise UsageError(str(e)) from None
    if data.pair:
        raise UsageError(f"{spec} holds two labelled objects per image; analyses take single-label data")
    param = next(model.parameters())
    results = []
    for start in range(0, len(data), batch_size):
        batch = data.load(range(start, min(start + batch_size, len(data))), prep)
        targets = None if batch.labels is None else batch.labels.to(param.device)
        results.append(analysis(model, batch.x.to(device=param.device, dtype=param.dtype), targets))
    return type(analysis).merge(results)
