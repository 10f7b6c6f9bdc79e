"""The bodies of the app's jobs: predict, explain (through :mod:`xvit.pipeline`) and analyse (through the
analysis registry), and what each returns to the page and for download."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image

from xvit.analysis import ANALYSES, AnalysisResult
from xvit.app.catalog import LoadedModel
from xvit.app.images import StoredImage
from xvit.app.jobs import Job, interruptible
from xvit.data.images import load_images
from xvit.methods import methods as method_registry
from xvit.models import class_names_for, preprocessing_for
from xvit.pipeline import ClassScore, ImageRecord, explain_batch
from xvit.result import Explanation
from xvit.utils.jsonable import jsonable
from xvit.utils.logits import unwrap_logits
from xvit.version import __version__
from xvit.viz import explanation_scale


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _batch(loaded: LoadedModel, images: Sequence[StoredImage]) -> tuple[torch.Tensor, list[Image.Image]]:
    """The model's normalised batch and display images, by the library's own loader."""
    x, display = load_images([im.open() for im in images], loaded.model)
    param = next(loaded.model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    return x, display


def predict(job: Job, loaded: LoadedModel, image: StoredImage) -> dict[str, Any]:
    """Top-5 classes with probabilities for one image."""
    with loaded.lock, interruptible(loaded.model, job):
        job.advance("predicting", 0, 1)
        x, _ = _batch(loaded, [image])
        with torch.no_grad():
            logits = unwrap_logits(loaded.model(x)).detach().float().cpu()
    probs = logits.softmax(-1)[0]
    names = class_names_for(loaded.model, probs.numel())
    top = probs.topk(min(5, probs.numel())).indices.tolist()
    return {"image": image.id, "model": loaded.id, "num_classes": probs.numel(),
            "input_size": list(preprocessing_for(loaded.model).size),
            "top5": [ClassScore(c, names[c], float(probs[c])).to_dict() for c in top]}


@dataclass
class ExplainOutput:
    """An explain job's result: the pipeline's records and explanations, the display images and the heat layers
    (the library's overlay at full opacity), one per image and method."""

    model_id: str
    target: int | None
    image_ids: list[str]
    display: list[Image.Image]
    records: list[ImageRecord]
    explanations: dict[str, Explanation]
    heat: dict[tuple[int, str], bytes] = field(default_factory=dict)
    drawn: dict[str, Any] | None = None

    def page(self, job_id: str) -> dict[str, Any]:
        """What the page draws: per image, the record, and per method the raw map (base64 float32, row-major,
        at the method's resolution, for the value under the cursor), its colour scale and the layers' URLs.
        Built once (by the job, so the server's event loop only serves it)."""
        if self.drawn is None:
            self.drawn = self._page(job_id)
        return self.drawn

    def _page(self, job_id: str) -> dict[str, Any]:
        base = f"/api/jobs/{job_id}"
        images = []
        for b, rec in enumerate(self.records):
            maps = {}
            for m, exp in self.explanations.items():
                raw = exp.raw[b, 0].detach().float().cpu()
                maps[m] = {"shape": list(raw.shape), "values": base64.b64encode(raw.numpy().astype("<f4").tobytes())
                           .decode(), "signed": exp.signed, "scale": colour_scale(exp, b, self.display[b].size[::-1]),
                           "heat": f"{base}/heat/{b}/{m}.png", "overlay": f"{base}/overlay/{b}/{m}.png"}
            images.append({"image_id": self.image_ids[b], "display": f"{base}/images/{b}.png", "record": rec.to_dict(),
                           "maps": maps})
        return {"kind": "explain", "model": self.model_id, "target": self.target,
                "methods": {m: {"params": dict(e.params), "signed": e.signed} for m, e in self.explanations.items()},
                "images": images, "download": f"{base}/result.json"}

    def download(self) -> dict[str, Any]:
        """The whole result as JSON: versions, model, methods with parameters, records and the raw maps."""
        registry = method_registry()
        return jsonable({
            "xvit_version": __version__, "model": self.model_id, "target": self.target,
            "methods": {m: {"citation": registry[m].get("citation", ""), "signed": e.signed, "params": dict(e.params)}
                        for m, e in self.explanations.items()},
            "images": [{**rec.to_dict(), "raw_maps": {m: e.raw[b, 0] for m, e in self.explanations.items()}}
                       for b, rec in enumerate(self.records)],
        })

    def overlay_png(self, b: int, method: str, alpha: float) -> bytes:
        """The library's overlay of one image and method at opacity ``alpha``."""
        return png_bytes(Image.fromarray(self.explanations[method].overlay(self.display, alpha=alpha)[b, 0]))


def colour_scale(exp: Explanation, b: int, size: tuple[int, int]) -> dict[str, float]:
    """The values at the ends of the colour bar of image ``b``'s overlay (:func:`xvit.viz.explanation_scale`):
    ``[-s, s]`` for signed maps (``s`` the 99th percentile of the magnitude of the map as drawn), the map's range
    otherwise."""
    low, high = explanation_scale(exp, b, 0, size)
    return {"low": low, "high": high}


def explain(job: Job, loaded: LoadedModel, images: Sequence[StoredImage],
            methods: Mapping[str, Mapping[str, Any]], target: int | None) -> ExplainOutput:
    """Run each method through :func:`xvit.pipeline.explain_batch` (one call per method, so progress and
    cancellation come between methods as well as between forward passes) and merge the records."""
    names = list(methods)
    result = None
    with loaded.lock, interruptible(loaded.model, job):
        job.advance("loading images", 0, len(names) + 1)
        x, display = _batch(loaded, images)
        for i, m in enumerate(names):
            job.advance(f"{m} ({i + 1} of {len(names)})", i, len(names) + 1)
            step = explain_batch(loaded.model, x, [m], target=target, method_params={m: methods[m]},
                                 display=display, names=[im.name for im in images])
            if result is None:
                result = step
            else:
                result.explanations.update(step.explanations)
                result.records = [replace(a, methods={**a.methods, **b.methods})
                                  for a, b in zip(result.records, step.records)]
    job.advance("drawing", len(names), len(names) + 1)
    out = ExplainOutput(loaded.id, target, [im.id for im in images], display, result.records, result.explanations)
    for m, exp in out.explanations.items():
        for b, per_class in enumerate(exp.overlay(display, alpha=1.0)):
            out.heat[(b, m)] = png_bytes(Image.fromarray(per_class[0]))
    out.page(job.id)
    return out


@dataclass
class AnalysisOutput:
    """An analysis job's result and its standard figure."""

    model_id: str
    result: AnalysisResult
    figure: bytes
    seconds: float

    def page(self, job_id: str) -> dict[str, Any]:
        tensors = {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                   for k, v in self.result.tensors.items()}
        return {"kind": "analysis", "model": self.model_id, "name": self.result.name,
                "params": jsonable(self.result.params), "meta": jsonable(self.result.meta), "tensors": tensors,
                "seconds": round(self.seconds, 4), "figure": f"/api/jobs/{job_id}/figure.png",
                "download": f"/api/jobs/{job_id}/result.json"}

    def download(self) -> dict[str, Any]:
        return {"xvit_version": __version__, "model": self.model_id, **self.result.to_dict()}


def analyse(job: Job, loaded: LoadedModel, images: Sequence[StoredImage], name: str, params: Mapping[str, Any],
            target: int | None) -> AnalysisOutput:
    """Run a registered analysis on the images and draw its figure."""
    analysis = ANALYSES.get(name)(**params)
    with loaded.lock, interruptible(loaded.model, job):
        job.advance("loading images", 0, 3)
        x, _ = _batch(loaded, images)
        job.advance(name, 1, 3)
        targets = None if target is None else torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
        start = time.perf_counter()
        result = analysis(loaded.model, x, targets)
        seconds = time.perf_counter() - start
    job.advance("drawing", 2, 3)
    buf = io.BytesIO()
    result.plot().savefig(buf, format="png", dpi=100)
    return AnalysisOutput(loaded.id, result, buf.getvalue(), seconds)

