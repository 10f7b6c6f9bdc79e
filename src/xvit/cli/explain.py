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
    positive_int,
)
from xvit.pipeline import ClassScore, ImageRecord, explain_images, output_files, unique_names, write_batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Explain each IMAGE with each method. Prints each image's prediction, its top classes and "
                          "the explained class(es) with the files written (a table for several images; --json for "
                          "machines), and writes <image>.png, <image>_<method>.png overlays (<image>_<method>_<k>.png "
                          "for several classes), grid.png (grid_NNN.png per batch for several batches) and "
                          "results.json to --out.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_model_argument(parser)
    parser.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M",
                        default=["transformer_attribution"],
                        help="methods to run (default: transformer_attribution; see 'xvit methods')")
    parser.add_argument("--target", "--targets", dest="target", nargs="+", metavar="T", default=None,
                        help="class to explain: 'pred' (the predicted class, default), a class index or a class name "
                             "(e.g. 'tabby cat' or tabby); one for all images or one per image, e.g. --target 3 7 pred")
    parser.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                        help="explain each image's K most probable classes instead of --target")
    add_param_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("out/explain"), help="output folder (default: out/explain)")
    parser.add_argument("--json", action="store_true",
                        help="print the results (as in results.json) as JSON on stdout instead of the summary")
    add_run_arguments(parser)


def target_values(values: Sequence[str] | None, n_images: int) -> str | int | list[str | int]:
    """``--target`` values as the pipeline's target: ``"pred"``, one index or name for all images, or one per
    image; names are resolved once the model is loaded."""
    if not values:
        return "pred"
    parsed: list[str | int] = [int(v) if v.strip().lstrip("+-").isdigit() else v for v in values]
    if len(parsed) == 1:
        return parsed[0]
    if len(parsed) != n_images:
        raise UsageError(f"--target got {len(parsed)} values for {n_images} images; give one for all images or one "
                         "per image (e.g. --target 3 7 pred)")
    return parsed


def run(args: argparse.Namespace) -> int:
    images = check_image_files(args.images)
    methods = check_methods(args.methods)
    params = parse_params(args.param)
    check_method_params(params, methods)
    target = target_values(args.target, len(images))
    if args.top_k is not None and args.target:
        raise UsageError("give either --target or --top-k, not both")
    output_dir(args.out)
    check_overwrites(images, methods, args.out, args.top_k or 1)
    dev = device(args.device)
    model = load_model(args.model).to(dev)
    check_targets(model, target, len(images), args.top_k)
    records, grids = explain_to_folder(model, images, methods, target, args.out, args.batch_size, params,
                                       top_k=args.top_k)
    path = write_results(args.out, args.model, model, methods, target, str(dev), records, grids, top_k=args.top_k)
    if args.json:
        print(path.read_text(), end="")
        return 0
    print(summary(records, args.out))
    print(f"Wrote {sum(len(m.explained) for r in records for m in r.methods.values())} overlays, {len(grids)} "
          f"grid(s) and results.json to {args.out}")
    return 0


def check_targets(model: Any, target: Any, n_images: int, top_k: int | None) -> None:
    """The targets resolve for this model (class names known, indices in range) before any work starts."""
    from xvit.adapters import get_adapter
    from xvit.models import class_names_for
    from xvit.targets import resolve_targets

    try:
        classes = get_adapter(model).num_classes
        resolve_targets(None if top_k else target, n_images, classes, top_k=top_k,
                        class_names=lambda: class_names_for(model, classes))
    except (ValueError, TypeError, UnsupportedModelError) as e:
        flag = "--top-k" if top_k is not None else "--target"
        raise UsageError(f"{flag}: {str(e).splitlines()[0]}") from None


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def _name(c: ClassScore) -> str:
    """``tabby cat (281)``, or ``281`` for a model without class names."""
    return f"{c.name} ({c.index})" if c.name != str(c.index) else str(c.index)


def _class(c: ClassScore) -> str:
    return f"{_name(c)} {_percent(c.probability)}"


def summary(records: Sequence[ImageRecord], out: Path) -> str:
    """What ``xvit explain`` prints: for one image its prediction, top 5 and each method's explained class(es)
    with the overlay written; for several a table with one row per image (top 3)."""
    if len(records) == 1:
        r = records[0]
        lines = [f"{r.file or r.name}: predicted {_class(r.prediction)}",
                 f"  top-{len(r.top5)}: " + ", ".join(_class(c) for c in r.top5)]
        width = max(len(m) for m in r.methods)
        for m, mrec in r.methods.items():
            for t in mrec.explained:
                lines.append(f"  {m.ljust(width)}  explained {_class(t.target)} -> {out / (t.overlay or '')}")
        lines.append(f"  image -> {out / (r.image or '')}")
        return "\n".join(lines)
    rows = [["image", "prediction", "top-3", "explained", "overlays"]]
    for r in records:
        first = next(iter(r.methods.values()))
        overlays = [t.overlay for m in r.methods.values() for t in m.explained if t.overlay]
        rows.append([r.file or r.name, _class(r.prediction),
                     ", ".join(f"{c.name} {_percent(c.probability)}" for c in r.top5[:3]),
                     ", ".join(_name(t.target) for t in first.explained),
                     ", ".join(overlays)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in rows) + \
        f"\n(overlays and display images are in {out})"


def check_overwrites(images: Sequence[Path], methods: Sequence[str], out: Path, targets: int = 1) -> None:
    """No file written to ``out`` may be one of the input images."""
    inputs = {p.resolve(): p for p in images}
    for name in unique_names(images, methods):
        for file in output_files(name, methods, targets):
            source = inputs.get((out / file).resolve())
            if source is not None:
                raise UsageError(f"writing {out / file} would overwrite the input image {source}; pass another --out")


def explain_to_folder(model: Any, images: Sequence[Path], methods: Sequence[str], target: Any, out: Path,
                      batch_size: int, method_params: dict[str, dict[str, Any]] | None = None, *,
                      labels: Sequence[str | None] | None = None, prefix: str = "", group: str | None = None,
                      top_k: int | None = None) -> tuple[list[ImageRecord], list[str]]:
    """Run the pipeline over ``images`` (``target``: ``"pred"``, an index or class name, or one per image; or
    ``top_k``) and write its files under ``out/prefix``; errors become usage errors."""
    n_batches = -(-len(images) // batch_size)
    records: list[ImageRecord] = []
    grids: list[str] = []
    batches = explain_images(model, images, methods, target=None if target == "pred" or top_k else target,
                             top_k=top_k, batch_size=batch_size, method_params=method_params, labels=labels,
                             group=group)
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


def write_results(out: Path, spec: str, model: Any, methods: Sequence[str], target: Any, device: str,
                  records: Sequence[ImageRecord], grids: Sequence[str], *, top_k: int | None = None) -> Path:
    """``out/results.json``: versions, model, preprocessing, target (or top_k), methods with citations, grids and
    the records (each method's ``explained`` classes with their overlays)."""
    from xvit.models import preprocessing_for

    registry = xvit.methods()
    results = {
        "xvit_version": xvit.__version__, "model": spec, "preprocessing": preprocessing_for(model).to_dict(),
        "out": str(out), "device": device, "target": target, "top_k": top_k,
        "methods": {m: {"citation": registry[m].get("citation", ""), "signed": bool(registry[m].get("signed"))}
                    for m in methods},
        "grids": list(grids), "images": [r.to_dict() for r in records],
    }
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
