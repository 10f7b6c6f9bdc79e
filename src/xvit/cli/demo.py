"""``xvit demo``: the bundled xvit-shapes samples explained by the main methods, as an HTML page that tells a story:
``single`` (which methods find the object), ``pair`` (which are class-sensitive) and ``spurious`` (which reveal the
corner marker a shortcut model relies on), each with a score per method against the samples' ground truth."""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from xvit.cli.common import (
    DEFAULT_MODEL,
    MAIN_METHODS,
    UsageError,
    add_param_argument,
    add_run_arguments,
    check_method_params,
    check_methods,
    device,
    load_model,
    output_dir,
    parse_params,
    positive_int,
)
from xvit.cli.explain import write_results
from xvit.models import ASSETS

SAMPLES_DIR = ASSETS / "samples"
SPURIOUS_MODEL = "shapes-vit-tiny-spurious"
SHORTCUT_CLASS = 0  # circle: the class the spurious model's training data paired with the corner marker

_TEXT = {
    "single": ("single: which methods find the object",
               "Each image shows one object on a textured background with distractors, and the model names its "
               "class. A map that explains the decision should be brightest on the object: look for maps that light "
               "up the background or only the object's outline."),
    "pair": ("pair: which methods are class-sensitive",
             "Each image shows two objects of different classes; each cell shows the map for the first object's "
             "class and the map for the second's, side by side. A class-sensitive method moves to the object of the "
             "class it explains; a class-agnostic one draws the same map twice."),
    "spurious": ("spurious: which methods reveal the corner marker",
                 f"{SPURIOUS_MODEL} learned a shortcut: in its training data a small magenta square in the top-left "
                 "corner nearly always came with the class circle, and it calls marked images 'circle' whatever they "
                 "show. A method that shows how the model decides should light up the corner on these marked "
                 "images, not only the object."),
}

_SCORES = {
    "single": ("share on the object", "energy_pointing_game"),
    "pair": ("class sensitivity", "class_sensitivity"),
    "spurious": ("share on the marker", "marker_share"),
}

_GRADCAM_NOTE = (
    "Grad-CAM's halo", "On this model Grad-CAM's maps are a broad field over the whole background with a halo around "
    "the object, brighter or darker than the rest depending on the image, and the object itself bright on some images "
    "and at zero on others. That follows from the method: it scores each patch token by its features entering the "
    "last block projected on one gradient direction averaged over all tokens (Selvaraju et al. 2017, Eq. 1-2), and "
    "after the earlier blocks have mixed the tokens every background token carries some information about the "
    "object; the ReLU sets the tokens that point the other way to zero. So the halo is the class content of the "
    "tokens, not a drawing artefact, and part of it is evidence the model uses: on 64 xvit-shapes test images, "
    "filling the patches within two patches of the object with the mean colour lowers the probability of the "
    "predicted class from 0.84 to 0.53, filling as many distant background patches only to 0.76 (filling the "
    "object's own patches: to 0.13). It is not where the class token reads, though: Grad-CAM puts the least of its "
    "map on the object here, and its deletion and segmentation scores in docs/benchmarks.md are among the lowest.")


@dataclass(frozen=True)
class Sample:
    """One bundled sample image with its ground truth from ``samples.json``."""

    path: Path
    label: str | None = None
    labels: tuple[int, ...] = ()
    masks: tuple[Path, ...] = ()
    marker_box: tuple[int, int, int, int] | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Explain a few bundled xvit-shapes samples with the bundled models and the main methods "
                          f"({', '.join(MAIN_METHODS)}) and write an HTML page (index.html) with three sections: "
                          "single (which methods find the object), pair (which are class-sensitive) and spurious "
                          f"({SPURIOUS_MODEL}: which reveal the corner marker), plus overlays, comparison grids and "
                          "results.json.")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model of the single and pair sections (default: {DEFAULT_MODEL})")
    parser.add_argument("--spurious-model", default=SPURIOUS_MODEL,
                        help=f"model of the spurious section (default: {SPURIOUS_MODEL})")
    parser.add_argument("--method", "--methods", dest="methods", nargs="+", metavar="M", default=MAIN_METHODS,
                        help="methods to run (default: the main methods)")
    parser.add_argument("--images", type=positive_int, default=4,
                        help="images per section (default: 4; the marked images first in spurious)")
    add_param_argument(parser)
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from xvit.report import ReportSection, write_html_report
    from xvit.viz import colour_bar_figure, save_grid

    samples = discover_samples(SAMPLES_DIR)
    if not samples:
        raise UsageError(f"no sample images found under {SAMPLES_DIR}; this copy of xvit ships without them. "
                         "Use 'xvit explain IMAGE...' on your own images.")
    methods = check_methods(args.methods)
    params = parse_params(args.param)
    check_method_params(params, methods)
    output_dir(args.out)
    dev = device(args.device)
    start = time.perf_counter()
    model = load_model(args.model).to(dev)
    sections, records, grids = [], [], []
    for variant, items in samples.items():
        spec, section_model = args.model, model
        if variant == "spurious":
            items = [s for s in items if s.marker_box] + [s for s in items if not s.marker_box]
            spec = args.spurious_model
            section_model = load_model(spec).to(dev)
        items = items[:args.images]
        pairs = variant == "pair" and all(len(s.labels) == 2 for s in items)
        target = [list(s.labels) for s in items] if pairs else None
        recs, grds, maps = _explain(section_model, items, methods, target, args.out, variant, args.batch_size,
                                    params)
        scores, finding = _scores(variant, maps, items, recs, pairs)
        title, look = _TEXT.get(variant, (variant, "Maps of the predicted class."))
        label, metric = _SCORES.get(variant, ("", ""))
        notes = ["Grad-CAM's halo is explained in the Notes below."] if variant == "single" and "gradcam" in methods \
            else []
        sections.append(ReportSection(key=variant, title=title, look_for=look, records=recs, model=spec,
                                      scores=scores, score_label=label if scores else "", finding=finding,
                                      grids=grds, notes=notes))
        records += recs
        grids += grds
    write_results(args.out, args.model, model, methods, "pred", str(dev), records, grids)
    bars = {}
    for signed, name in ((False, "unsigned maps: min to max of each map"),
                         (True, "signed maps: red for the class, blue against it")):
        if any(m.signed == signed for r in records for m in r.methods.values()):
            path = f"colourbar_{'signed' if signed else 'unsigned'}.png"
            save_grid(colour_bar_figure(signed), args.out / path)
            bars[name] = path
    index = write_html_report(
        args.out, sections, title="xvit demo", intro=_intro(methods), colour_bars=bars,
        citations=_citations(methods, sections),
        notes=dict([_GRADCAM_NOTE]) if "gradcam" in methods and "single" in samples else None,
        summary={"models": ", ".join(dict.fromkeys(s.model for s in sections)), "methods": ", ".join(methods),
                 "images": len(records), "device": str(dev), "time": f"{time.perf_counter() - start:.1f} s",
                 "files": "overlays and grids per section folder, results.json"})
    print(f"Report: {index.resolve()}")
    return 0


def _intro(methods: list[str]) -> list[str]:
    return [
        f"xvit explains what a vision transformer looks at. This page runs {len(methods)} attribution methods on a "
        "few images of xvit-shapes, a synthetic data set where the truth is known: where each object is, which "
        "object has which class, and where a spurious marker was drawn. Each section asks one question.",
        "Read a section as a matrix: one row per image, one column per method; down a column is one method across "
        "images, along a row the methods on one image. Each map is scaled on its own (colour bars below). The bold "
        "line says what the scores under the columns show; the scores come from a handful of images, so they "
        "illustrate rather than measure (docs/benchmarks.md has the measurements on hundreds of images).",
    ]


def _citations(methods: list[str], sections: list[Any]) -> dict[str, str]:
    import xvit

    info, metric_info = xvit.methods(), xvit.evaluate.metrics()
    out = {m: info[m]["citation"] for m in methods}
    for s in sections:
        metric = _SCORES.get(s.key, ("", ""))[1]
        if s.scores and metric in metric_info:
            out[s.score_label] = metric_info[metric]["citation"]
    return out


def _explain(model: Any, items: list[Sample], methods: list[str], target: Any, out: Path, variant: str,
             batch_size: int, params: dict[str, dict[str, Any]]) -> tuple[list[Any], list[str], dict[str, Tensor]]:
    """Explain ``items`` and write their files under ``out/variant``; the records, the grids and per method the
    ``(N, K, H, W)`` maps for the scores (``|raw|``; the positive part with two classes per image)."""
    from xvit.adapters import UnsupportedModelError
    from xvit.evaluate.inputs import energy_maps
    from xvit.pipeline import explain_images, write_batch

    records, grids, maps = [], [], {m: [] for m in methods}
    n_batches = -(-len(items) // batch_size)
    try:
        batches = explain_images(model, [s.path for s in items], methods, target=target, batch_size=batch_size,
                                 method_params=params, labels=[s.label for s in items], group=variant)
        for i, batch in enumerate(batches):
            written = write_batch(batch, out, prefix=f"{variant}/",
                                  grid_name="grid.png" if n_batches == 1 else f"grid_{i:03d}.png")
            records += written.records
            grids.append(written.grid)
            for m, e in batch.explanations.items():
                maps[m].append(energy_maps(e, "positive" if target is not None else "abs").cpu())
    except KeyError as e:
        raise UsageError(e.args[0] if e.args else str(e)) from None
    except (ValueError, TypeError, UnsupportedModelError) as e:
        raise UsageError(str(e).splitlines()[0]) from None
    return records, grids, {m: torch.cat(v) for m, v in maps.items()}


def _mask(path: Path, size: tuple[int, int]) -> Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("L").resize(size[::-1], Image.NEAREST)) > 127)


def _box(box: tuple[int, int, int, int], image: Path, size: tuple[int, int]) -> Tensor:
    """The marker box ``(x0, y0, x1, y1)`` in the sample's pixels as a mask at ``size``."""
    with Image.open(image) as im:
        w, h = im.size
    canvas = Image.new("L", (w, h))
    canvas.paste(255, box)
    return torch.from_numpy(np.asarray(canvas.resize(size[::-1], Image.NEAREST)) > 127)


def _names(scores: dict[str, float], keep: Any) -> str:
    chosen = sorted((m for m, v in scores.items() if math.isfinite(v) and keep(v)), key=lambda m: -scores[m])
    return ", ".join(f"{m} ({scores[m]:.2f})" for m in chosen) or "none"


def _scores(variant: str, maps: dict[str, Tensor], items: list[Sample], records: list[Any], pairs: bool
            ) -> tuple[dict[str, float], str]:
    """Per method the section's score over its images, and the sentence that says what they show."""
    import xvit
    from xvit.evaluate import class_sensitivity, energy_pointing_game, marker_share

    if not maps:
        return {}, ""
    size = tuple(next(iter(maps.values())).shape[-2:])
    if variant == "single" and all(len(s.masks) == 1 for s in items):
        masks = torch.stack([_mask(s.masks[0], size) for s in items])
        scores = {m: energy_pointing_game(v[:, 0], masks, max_overlap=None).value for m, v in maps.items()}
        area = float(masks.float().mean())
        return scores, (f"Most of the map on the object (the object covers {area:.0%} of the image): "
                        f"{_names(scores, lambda v: v >= 0.5)}; less than half: {_names(scores, lambda v: v < 0.5)}.")
    if variant == "pair" and pairs and all(len(s.masks) == 2 for s in items):
        a = torch.stack([_mask(s.masks[0], size) for s in items])
        b = torch.stack([_mask(s.masks[1], size) for s in items])
        scores = {m: class_sensitivity(v[:, 0], v[:, 1], a, b).value for m, v in maps.items()}
        info = xvit.methods()
        agnostic = [m for m in scores if not info[m]["class_specific"]]
        specific = {m: v for m, v in scores.items() if m not in agnostic}
        return scores, (f"From most to least class-sensitive (0.5: the same map for both classes, 1: each map only on "
                        f"its own object): {_names(specific, lambda v: True)}. Class-agnostic by design: "
                        f"{', '.join(agnostic) or 'none'}.")
    if variant == "spurious" and any(s.marker_box for s in items):
        markers = torch.stack([_box(s.marker_box, s.path, size) if s.marker_box else torch.zeros(size, dtype=bool)
                               for s in items])
        targets = torch.tensor([r.methods[next(iter(r.methods))].target.index for r in records])
        results = {m: marker_share(v[:, 0], markers, targets, shortcut_class=SHORTCUT_CLASS) for m, v in maps.items()}
        scores = {m: r.value for m, r in results.items()}
        chance = next(iter(results.values())).summary["chance"]
        marked = [r for s, r in zip(items, records, strict=True) if s.marker_box]
        shortcut = sum(r.prediction.index == SHORTCUT_CLASS for r in marked)
        return scores, (f"The model calls {shortcut} of the {len(marked)} marked images 'circle'. At least 5 times "
                        f"the chance share ({chance:.3f}, the marker's area) on the marker: "
                        f"{_names(scores, lambda v: v >= 5 * chance)}; the others: "
                        f"{_names(scores, lambda v: v < 5 * chance)}.")
    return {}, ""


def discover_samples(root: Path) -> dict[str, list[Sample]]:
    """Sample images per variant folder (``*_mask*.png`` skipped) with their ground truth from ``samples.json``;
    variants in the order of ``xvit.data.shapes.VARIANTS``, unknown ones after them."""
    from xvit.data.shapes import VARIANTS

    def order(folder: Path) -> tuple[int, str]:
        return (VARIANTS.index(folder.name) if folder.name in VARIANTS else len(VARIANTS), folder.name)

    samples = {}
    for folder in sorted((p for p in root.glob("*") if p.is_dir()), key=order):
        files = sorted(p for p in folder.glob("*.png") if "_mask" not in p.stem)
        if files:
            items = _sample_items(folder)
            samples[folder.name] = [_sample(f, items.get(f.name, {})) for f in files]
    return samples


def _sample(path: Path, item: dict[str, Any]) -> Sample:
    names = item.get("class_names") or item.get("class_name") or item.get("label")
    label = None if names is None else " + ".join(names) if isinstance(names, list) else str(names)
    labels = item.get("labels")
    masks = tuple(path.parent / m for m in item.get("masks", []) if (path.parent / m).is_file())
    box = item.get("marker_box") if item.get("marker") else None
    return Sample(path, label, tuple(int(v) for v in labels) if isinstance(labels, list) else (), masks,
                  tuple(int(v) for v in box) if box else None)


def _sample_items(folder: Path) -> dict[str, dict[str, Any]]:
    """File name -> item of ``samples.json`` (the variant's own, else the shared one)."""
    for path in (folder / "samples.json", folder.parent / "samples.json"):
        if path.is_file():
            data = json.loads(path.read_text())
            break
    else:
        return {}
    if isinstance(data, dict):
        data = data.get(folder.name, data)
        data = data.get("items", data) if isinstance(data, dict) else data
    return {Path(item["file"]).name: item for item in (data if isinstance(data, list) else [])
            if isinstance(item, dict) and "file" in item}
