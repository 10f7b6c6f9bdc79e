"""``xvit explain``: overlays, a comparison grid and ``results.json`` for image files."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xvit
from xvit.adapters import UnsupportedModelError
from xvit.cli.common import (
    UsageError,
    add_model_argument,
    add_param_argument,
    add_run_arguments,
    check_image_files,
    check_method_params,
    check_methods,
    device,
    load_model,
    output_dir,
    parse_params,
)
from xvit.pipeline import ImageRecord, explain_images, output_files, unique_names, write_batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Explain each IMAGE with each method. Writes <image>.png, <image>_<method>.png overlays, "
                          "grid.png (grid_NNN.png per batch for several batches) and results.json (prediction, "
                          "top-5, explained class and map statistics per method) to --out.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_model_argument(parser)
    parser.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M",
                        default=["transformer_attribution"], help="methods to run (see 'xvit methods')")
    parser.add_argument("--target", type=target_argument, default="pred",
                        help="class to explain: 'pred' (the predicted class, default) or a class index")
    add_param_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("out/explain"), help="output folder (default: out/explain)")
    add_run_arguments(parser)


def target_argument(s: str) -> str | int:
    """argparse type: ``pred`` or a class index >= 0."""
    if s == "pred":
        return s
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'pred' or a class index, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"class indices are >= 0, got {v}")
    return v


def run(args: argparse.Namespace) -> int:
    images = check_image_files(args.images)
    methods = check_methods(args.methods)
    params = parse_params(args.param)
    check_method_params(params, methods)
    output_dir(args.out)
    check_overwrites(images, methods, args.out)
    dev = device(args.device)
    model = load_model(args.model).to(dev)
    records, grids = explain_to_folder(model, [Path(p) for p in args.images], methods, args.target, args.out,
                                       args.batch_size, params)
    write_results(args.out, args.model, model, methods, args.target, str(dev), records, grids)
    print(f"Wrote {len(records) * len(methods)} overlays, {len(grids)} grid(s) and results.json to {args.out}")
    return 0


def check_overwrites(images: Sequence[Path], methods: Sequence[str], out: Path) -> None:
    """No file written to ``out`` may be one of the input images."""
    inputs = {p.resolve(): p for p in images}
    for name in unique_names(images, methods):
        for file in output_files(name, methods):
            source = inputs.get((out / file).resolve())
            if source is not None:
                raise UsageError(f"writing {out / file} would overwrite the input image {source}; pass another --out")


def explain_to_folder(model: Any, images: Sequence[Path], methods: Sequence[str], target: str | int, out: Path,
                      batch_size: int, method_params: dict[str, dict[str, Any]] | None = None, *,
                      labels: Sequence[str | None] | None = None, prefix: str = "", group: str | None = None
                      ) -> tuple[list[ImageRecord], list[str]]:
    """Run the pipeline over ``images`` and write its files under ``out/prefix``; errors become usage errors."""
    n_batches = -(-len(images) // batch_size)
    records: list[ImageRecord] = []
    grids: list[str] = []
    batches = explain_images(model, images, methods, target=None if target == "pred" else target,
                             batch_size=batch_size, method_params=method_params, labels=labels, group=group)
    try:
        for i, batch in enumerate(batches):
            written = write_batch(batch, out, prefix=prefix,
                                  grid_name="grid.png" if n_batches == 1 else f"grid_{i:03d}.png")
            records += written.records
            grids.append(written.grid)
    except KeyError as e:
        raise UsageError(e.args[0] if e.args else str(e)) from None
    except (ValueError, TypeError, UnsupportedModelError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    return records, grids


def write_results(out: Path, spec: str, model: Any, methods: Sequence[str], target: str | int, device: str,
                  records: Sequence[ImageRecord], grids: Sequence[str]) -> Path:
    """``out/results.json``: versions, model, preprocessing, methods with citations, grids and the records."""
    from xvit.models import preprocessing_for

    registry = xvit.methods()
    results = {
        "xvit_version": xvit.__version__, "model": spec, "preprocessing": preprocessing_for(model).to_dict(),
        "device": device, "target": target,
        "methods": {m: {"citation": registry[m].get("citation", ""), "signed": bool(registry[m].get("signed"))}
                    for m in methods},
        "grids": list(grids), "images": [r.to_dict() for r in records],
    }
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
