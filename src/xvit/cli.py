"""The ``xvit`` command line: ``explain``, ``demo``, ``methods``, ``models``, ``bench``, ``train`` and
``evaluate``.

Each subcommand is registered by an ``add_<name>_parser(subparsers)`` function that sets its handler;
``xvit.<name>`` modules contribute theirs through ``add_<name>_arguments(parser)`` and
``run_<name>(args)``, imported only when their command runs. A user error prints one line on stderr and
returns exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import xvit  # first: installs the torchvision import shim that timm and transformers need
from xvit.adapters import UnsupportedModelError
from xvit.data.images import ImageLoadError
from xvit.registry import did_you_mean

__all__ = ["MAIN_METHODS", "DEFAULT_MODEL", "UsageError", "build_parser", "main", "map_statistics"]

MAIN_METHODS = ["rollout", "grad_attention_rollout", "transformer_attribution", "attnlrp", "gradcam",
                "integrated_gradients"]
DEFAULT_MODEL = "shapes-vit-tiny"
SAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "samples"
_EXTERNAL = {"train": "train a built-in ViT", "evaluate": "evaluate explanation methods"}
_SPEC_FORMS = """\
Model specs accepted by --model:
  NAME                    a bundled model (listed above)
  DIR                     a checkpoint directory with config.json and model.safetensors
  timm:NAME               a timm model with pretrained weights (needs network access or a cache)
  hf:ID_OR_DIR            a Hugging Face image classifier
  xvit-random:PRESET      bench only: a randomly initialised built-in ViT (nano, tiny, small, base)
  timm-random:NAME        bench only: timm.create_model(NAME, pretrained=False)"""


class UsageError(Exception):
    """A mistake in the command line or its inputs; shown as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Reports argument errors in one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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
    except (UsageError, ImageLoadError) as e:
        print(f"xvit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xvit: interrupted", file=sys.stderr)
        return 130


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``command`` names the subcommand whose external module is imported."""
    parser = _Parser(prog="xvit", description="Explain Vision Transformer predictions.")
    parser.add_argument("--version", action="version", version=f"xvit {xvit.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (add_explain_parser, add_demo_parser, add_methods_parser, add_models_parser, add_bench_parser):
        add(subparsers)
    for name, help_text in _EXTERNAL.items():
        sub = subparsers.add_parser(name, help=help_text)
        if name == command:  # imported only when its command runs: training and evaluation load more
            module = importlib.import_module(f"xvit.{name}")
            getattr(module, f"add_{name}_arguments")(sub)
            sub.set_defaults(func=getattr(module, f"run_{name}"))
    return parser


# ----------------------------------------------------------------------------------------- explain


def add_explain_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain", help="explain images: overlays, a comparison grid and results.json",
        description="Explain each IMAGE with each method. Writes <image>_<method>.png overlays, grid.png "
                    "(grid_NNN.png per batch for several batches) and results.json (prediction, top-5, "
                    "explained class and map statistics per method) to --out.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _add_model_argument(p)
    p.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M",
                   default=["transformer_attribution"], help="methods to run (see 'xvit methods')")
    p.add_argument("--target", type=_target, default="pred",
                   help="class to explain: 'pred' (the predicted class, default) or a class index")
    p.add_argument("--out", type=Path, default=Path("out/explain"),
                   help="output folder (default: out/explain)")
    _add_run_arguments(p)
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise UsageError(f"image file {missing[0]!r} does not exist" + (f" (and {len(missing) - 1} more)"
                                                                        if len(missing) > 1 else ""))
    methods = _check_methods(args.methods)
    device = _device(args.device)
    model = _load_model(args.model).to(device)
    records, grids = _explain_to_folder(model, [Path(p) for p in args.images], methods, args.target, args.out,
                                        args.batch_size, device)
    _write_results(args.out, args.model, model, methods, args.target, str(device), records, grids)
    print(f"Wrote {len(records) * len(methods)} overlays, {len(grids)} grid(s) and results.json "
          f"to {args.out}")
    return 0


# -------------------------------------------------------------------------------------------- demo


def add_demo_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="explain the bundled sample images and write an HTML report",
        description="Explain the bundled sample images with the bundled model and the main methods "
                    f"({', '.join(MAIN_METHODS)}); writes overlays, comparison grids, results.json and "
                    "index.html.")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default: {DEFAULT_MODEL})")
    p.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M", default=MAIN_METHODS,
                   help="methods to run (default: the main methods)")
    _add_run_arguments(p)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from xvit.report import write_html_report

    samples = _discover_samples(SAMPLES_DIR)
    if not samples:
        raise UsageError(f"no sample images found under {SAMPLES_DIR}; this copy of xvit ships without them. "
                         "Use 'xvit explain IMAGE...' on your own images.")
    methods = _check_methods(args.methods)
    device = _device(args.device)
    model = _load_model(args.model).to(device)
    records, grids = [], []
    for variant, items in samples.items():
        recs, grds = _explain_to_folder(model, [p for p, _ in items], methods, "pred", args.out,
                                        args.batch_size, device, labels=[label for _, label in items],
                                        prefix=f"{variant}/")
        records += [{**r, "group": variant} for r in recs]
        grids += grds
    _write_results(args.out, args.model, model, methods, "pred", str(device), records, grids)
    index = write_html_report(args.out, records, grids=grids, title="xvit demo",
                              summary={"model": args.model, "methods": ", ".join(methods),
                                       "images": len(records), "device": str(device)})
    print(f"Report: {index.resolve()}")
    return 0


# ----------------------------------------------------------------------------------- methods, models


def add_methods_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("methods", help="list the explanation methods")
    p.set_defaults(func=run_methods)


def run_methods(args: argparse.Namespace) -> int:
    registry = xvit.methods()
    rows = [("name", "signed", "passes", "citation")] + [
        (name, "yes" if info.get("signed") else "no", str(info.get("passes", "")),
         str(info.get("citation", ""))) for name, info in registry.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3])
    return 0


def add_models_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("models", help="list the bundled models and the accepted model specs")
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    from xvit.models import bundled_models, model_card

    bundled = bundled_models()
    print("Bundled models:")
    if not bundled:
        print("  (none installed)")
    width = max((len(n) for n in bundled), default=0)
    for name in bundled:
        print(f"  {name.ljust(width)}  {_card_line(model_card(name))}")
    print()
    print(_SPEC_FORMS)
    return 0


# ------------------------------------------------------------------------------------------- bench


def add_bench_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench", help="time and peak memory of methods relative to forward and forward+backward passes",
        description="Time per image (median of --repeats after a warm-up) and peak memory of each method, "
                    "and their ratios to a plain forward and forward+backward pass of the same model "
                    "measured in the same run. CPU memory is the peak RSS increase sampled from "
                    "/proc/self/statm; CUDA memory is torch.cuda.max_memory_allocated.")
    p.add_argument("--model", default="xvit-random:tiny",
                   help="model spec, also xvit-random:PRESET or timm-random:NAME (default: xvit-random:tiny)")
    p.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M", default=MAIN_METHODS,
                   help="methods to time (default: the main methods)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="images per call (default: 8)")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="input side in pixels (default: the model's input size)")
    p.add_argument("--repeats", type=_positive_int, default=5, help="timed calls per method (default: 5)")
    p.add_argument("--device", default="cpu", help="device to run on (default: cpu)")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from xvit.bench import format_table, run_benchmark

    methods = _check_methods(args.methods)
    device = _device(args.device)
    model = _load_bench_model(args.model, args.image_size).to(device)
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus:
        print(f"note: load average {load:.1f} on {cpus} CPUs; other processes compete with the benchmark, "
              "so timings are noisy", file=sys.stderr)
    try:
        rows = run_benchmark(model, methods, batch_size=args.batch_size, image_size=args.image_size,
                             repeats=args.repeats)
    except (UnsupportedModelError, ValueError) as e:
        raise UsageError(str(e)) from None
    h, w = rows[0]["image_size"]
    print(f"model {args.model}, device {device}, batch {args.batch_size}, image {h}x{w}, median of "
          f"{args.repeats} after 1 warm-up, {torch.get_num_threads()} threads")
    print(format_table(rows))
    return 0


# ----------------------------------------------------------------------------------------- helpers


def _add_model_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"bundled model name, DIR, timm:NAME or hf:ID (default: {DEFAULT_MODEL})")


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=_positive_int, default=8, help="images per batch (default: 8)")
    p.add_argument("--device", default="cpu", help="device to run on, e.g. cpu or cuda (default: cpu)")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _target(s: str) -> str | int:
    if s == "pred":
        return s
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'pred' or a class index, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"class indices are >= 0, got {v}")
    return v


def _check_methods(names: Sequence[str]) -> list[str]:
    registry = xvit.methods()
    for name in names:
        if name not in registry:
            raise UsageError(f"unknown method {name!r}.{did_you_mean(name, registry)} Run 'xvit methods' for the list.")
    return list(dict.fromkeys(names))


def _device(name: str) -> Any:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was given but no CUDA device is available; use --device cpu")
    return device


def _load_model(spec: str) -> Any:
    from xvit.models import bundled_models, load_model

    if spec == DEFAULT_MODEL and spec not in bundled_models() and not Path(spec).is_dir():
        raise UsageError(f"the default model {spec!r} is not bundled with this copy of xvit. Pass --model "
                         "with a checkpoint directory, timm:NAME or hf:ID; 'xvit models' lists what is "
                         "available.")
    try:
        return load_model(spec)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        raise UsageError(str(e)) from None


def _load_bench_model(spec: str, image_size: int | None) -> Any:
    import torch

    size = {} if image_size is None else {"img_size": image_size}
    try:
        if spec.startswith("xvit-random:"):
            from xvit.models import create_vit

            torch.manual_seed(0)
            return create_vit(spec.split(":", 1)[1], **size).eval()
        if spec.startswith("timm-random:"):
            import timm

            torch.manual_seed(0)
            try:
                return timm.create_model(spec.split(":", 1)[1], pretrained=False, **size).eval()
            except TypeError:  # models without an img_size argument take any input size
                return timm.create_model(spec.split(":", 1)[1], pretrained=False).eval()
    except (ValueError, TypeError, RuntimeError) as e:
        raise UsageError(f"cannot build {spec!r}: {e}") from None
    return _load_model(spec)


def _explain(model: Any, x: Any, method: str, target: str | int) -> Any:
    try:
        return xvit.explain(model, x, method=method, target=None if target == "pred" else target)
    except KeyError as e:
        raise UsageError(f"{method}: {e.args[0] if e.args else e}") from None
    except (ValueError, UnsupportedModelError) as e:
        raise UsageError(f"{method}: {e}") from None


def _unique_names(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{i:03d}_{s}" for i, s in enumerate(stems)]


def _class_info(index: int, probs: Any, class_names: Sequence[str]) -> dict[str, Any]:
    return {"index": index, "name": class_names[index], "probability": round(float(probs[index]), 6)}


def map_statistics(raw: Any) -> dict[str, float | None]:
    """Statistics of one raw map: ``min``, ``max``, ``mean``, ``sum`` and ``top10_mass``, the share of
    the absolute mass held by the top 10 % of map cells (tokens or pixels); None for an all-zero map."""
    v = raw.detach().double().flatten()
    a = v.abs()
    total = float(a.sum())
    top = float(a.topk(max(1, math.ceil(0.1 * a.numel()))).values.sum())
    return {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "sum": float(v.sum()),
            "top10_mass": top / total if total > 0 else None}


def _explain_to_folder(model: Any, paths: Sequence[Path], methods: Sequence[str], target: str | int,
                       out: Path, batch_size: int, device: Any, labels: Sequence[str | None] | None = None,
                       prefix: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """Explain images batch by batch; write display images, overlays and one grid per batch under
    ``out/prefix``. Returns the per-image records and grid paths, relative to ``out``."""
    import torch
    from tqdm import tqdm

    from xvit.data.images import load_images
    from xvit.models import class_names_for, preprocessing_for
    from xvit.viz import comparison_grid, save_grid

    prep = preprocessing_for(model)
    names = _unique_names(paths)
    (out / prefix).mkdir(parents=True, exist_ok=True)
    records, grids = [], []
    starts = range(0, len(paths), batch_size)
    total = len(paths) * len(methods)
    with tqdm(total=total, unit="map", file=sys.stderr, disable=None if total >= 8 else True) as bar:
        for n_batch, start in enumerate(starts):
            stop = start + batch_size
            x, display = load_images(paths[start:stop], prep)
            x = x.to(device)
            if isinstance(target, int) and n_batch == 0:
                with torch.no_grad():
                    out1 = model(x[:1])
                num_classes = getattr(out1, "logits", out1).shape[-1]
                if target >= num_classes:
                    raise UsageError(f"--target {target} is out of range: the model has {num_classes} "
                                     f"classes (0 to {num_classes - 1})")
            exps = {}
            for method in methods:
                exps[method] = _explain(model, x, method, target)
                bar.update(len(display))
            logits = exps[methods[0]].logits.detach().float().cpu()
            probs = logits.softmax(-1)
            class_names = class_names_for(model, logits.shape[-1])
            overlays = {m: e.overlay(display) for m, e in exps.items()}
            batch_labels = None if labels is None else list(labels[start:stop])
            for b, (path, name) in enumerate(zip(paths[start:stop], names[start:stop], strict=True)):
                image = f"{prefix}{name}.png"
                display[b].save(out / image)
                top = probs[b].topk(min(5, probs.shape[-1])).indices.tolist()
                record = {"file": str(path), "name": name, "image": image,
                          "label": None if batch_labels is None else batch_labels[b],
                          "prediction": _class_info(top[0], probs[b], class_names),
                          "top5": [_class_info(c, probs[b], class_names) for c in top], "methods": {}}
                for method, exp in exps.items():
                    overlay = f"{prefix}{name}_{method}.png"
                    overlays[method][b][0].save(out / overlay)
                    record["methods"][method] = {
                        "target": _class_info(int(exp.targets[b, 0]), probs[b], class_names),
                        "overlay": overlay, "signed": exp.signed, "stats": map_statistics(exp.raw[b, 0])}
                records.append(record)
            grid = f"{prefix}grid.png" if len(starts) == 1 else f"{prefix}grid_{n_batch:03d}.png"
            known = batch_labels if batch_labels and None not in batch_labels else None
            fig = comparison_grid(display, exps, class_names, true_labels=known)
            save_grid(fig, out / grid)
            grids.append(grid)
    return records, grids


def _write_results(out: Path, spec: str, model: Any, methods: Sequence[str], target: str | int, device: str,
                   records: list[dict[str, Any]], grids: list[str]) -> Path:
    from xvit.models import preprocessing_for

    registry = xvit.methods()
    results = {
        "xvit_version": xvit.__version__, "model": spec, "preprocessing": preprocessing_for(model).to_dict(),
        "device": device, "target": target,
        "methods": {m: {"citation": registry[m].get("citation", ""),
                        "signed": bool(registry[m].get("signed"))} for m in methods},
        "grids": grids, "images": records,
    }
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def _discover_samples(root: Path) -> dict[str, list[tuple[Path, str | None]]]:
    """Sample images per variant folder (``*_mask*.png`` skipped), with labels from ``samples.json``;
    variants in the order of ``xvit.data.shapes.VARIANTS``, unknown ones after them."""
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


def _card_line(card: str) -> str:
    """The model card's accuracy line, else its first line of text."""
    lines = [ln.strip(" -*|#\t") for ln in card.splitlines() if ln.strip(" -*|#\t")]
    return next((ln for ln in lines if "accuracy" in ln.lower()), lines[0] if lines else "(no model card)")
