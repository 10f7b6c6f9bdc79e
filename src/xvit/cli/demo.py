"""``xvit demo``: the bundled sample images explained with the bundled model, as an HTML report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xvit.cli.common import (
    DEFAULT_MODEL,
    MAIN_METHODS,
    UsageError,
    add_run_arguments,
    check_methods,
    device,
    load_model,
    output_dir,
)
from xvit.cli.explain import explain_to_folder, write_results
from xvit.models import ASSETS

SAMPLES_DIR = ASSETS / "samples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Explain the bundled sample images with the bundled model and the main methods "
                          f"({', '.join(MAIN_METHODS)}); writes overlays, comparison grids, results.json and "
                          "index.html.")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default: {DEFAULT_MODEL})")
    parser.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M", default=MAIN_METHODS,
                        help="methods to run (default: the main methods)")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from xvit.report import write_html_report

    samples = discover_samples(SAMPLES_DIR)
    if not samples:
        raise UsageError(f"no sample images found under {SAMPLES_DIR}; this copy of xvit ships without them. "
                         "Use 'xvit explain IMAGE...' on your own images.")
    methods = check_methods(args.methods)
    output_dir(args.out)
    dev = device(args.device)
    model = load_model(args.model).to(dev)
    records, grids = [], []
    for variant, items in samples.items():
        recs, grds = explain_to_folder(model, [p for p, _ in items], methods, "pred", args.out, args.batch_size,
                                       labels=[label for _, label in items], prefix=f"{variant}/", group=variant)
        records += recs
        grids += grds
    write_results(args.out, args.model, model, methods, "pred", str(dev), records, grids)
    index = write_html_report(args.out, records, grids=grids, title="xvit demo",
                              summary={"model": args.model, "methods": ", ".join(methods),
                                       "images": len(records), "device": str(dev)})
    print(f"Report: {index.resolve()}")
    return 0


def discover_samples(root: Path) -> dict[str, list[tuple[Path, str | None]]]:
    """Sample images per variant folder (``*_mask*.png`` skipped), with labels from ``samples.json``; variants in
    the order of ``xvit.data.shapes.VARIANTS``, unknown ones after them."""
    from xvit.data.shapes import VARIANTS

    def order(folder: Path) -> tuple[int, str]:
        return (VARIANTS.index(folder.name) if folder.name in VARIANTS else len(VARIANTS), folder.name)

    samples = {}
    for folder in sorted((p for p in root.glob("*") if p.is_dir()), key=order):
        files = sorted(p for p in folder.glob("*.png") if "_mask" not in p.stem)
        if files:
            labels = _sample_labels(folder)
            samples[folder.name] = [(f, labels.get(f.name)) for f in files]
    return samples


def _sample_labels(folder: Path) -> dict[str, str]:
    """File name -> class label from ``samples.json`` (the variant's own, else the shared one)."""
    for path in (folder / "samples.json", folder.parent / "samples.json"):
        if path.is_file():
            data = json.loads(path.read_text())
            break
    else:
        return {}
    if isinstance(data, dict):
        data = data.get(folder.name, data)
        data = data.get("items", data) if isinstance(data, dict) else data
    labels = {}
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and "file" in item:
            names = item.get("class_names") or item.get("class_name") or item.get("label")
            if names is not None:
                labels[Path(item["file"]).name] = " + ".join(names) if isinstance(names, list) else str(names)
    return labels
