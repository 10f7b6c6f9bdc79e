"""Time and peak memory of explanation methods, relative to plain passes of the same model.

Every method, three baselines and, optionally, a peer library's equivalent call run on the same random batch in
the same process, interleaved: each round calls every entry once, and each ratio is the median over rounds of the
entry's time divided by the baseline's time in the same round, so slow drifts of the machine's load cancel. The
baselines run the model as it is (its fused attention where it has one): a forward pass under
``torch.no_grad()``; a forward+input-gradient pass (the gradient of the summed logits with respect to the input
only, what Captum's Saliency computes); and a plain forward+backward pass (the gradient with respect to the input
and every parameter that requires one, what ``loss.backward()`` computes; taken with ``torch.autograd.grad``, so
the model's ``.grad`` stay untouched). Times are per image, the median of ``repeats`` rounds after ``warmup``
rounds.

Methods that record their passes in ``meta`` (``n_forwards``, ``n_forward_backward``, and for TIS
``n_short_forwards`` of ``short_tokens`` tokens) are also timed against those nominal passes: ``x_nominal`` is the
method's time divided by that many plain batched passes of the same batch in the same round (a forward, a
forward+backward, and a forward of the shortened sequence, timed as extra baselines), so 1.0 means no overhead
beyond its passes. Time in clustering and eigen-solves (``meta["solver_seconds"]``) is reported separately and
left out of ``x_nominal``.

Peak memory is measured in one extra call per entry with :class:`xvit.utils.memory.PeakMemory`: on CUDA
``torch.cuda.max_memory_allocated`` above the allocation before the call; on the CPU the largest increase of the
process's resident set size sampled every millisecond after ``malloc_trim`` (all memory of the process, not only
tensors; peaks shorter than a millisecond can be missed; None where ``/proc`` does not exist).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from xvit.adapters import get_adapter
from xvit.data.preprocess import channels, normalise
from xvit.explainer import Explainer
from xvit.models import preprocessing_for
from xvit.utils.context import eval_mode
from xvit.utils.logits import unwrap_logits
from xvit.utils.memory import PeakMemory

__all__ = ["BASELINES", "PEERS", "run_benchmark", "format_table", "run_analysis_benchmark", "format_analysis_table"]

BASELINES = ("forward", "forward+input_grad", "forward+backward")
PEERS = ("captum", "gradcam")  # peer libraries whose equivalent calls ``compare`` can time


def run_benchmark(model: nn.Module, methods: Sequence[str], batch_size: int = 8,
                  image_size: int | tuple[int, int] | None = None, repeats: int = 5, warmup: int = 1,
                  compare: str | None = None, params: dict[str, dict[str, Any]] | None = None
                  ) -> list[dict[str, Any]]:
    """Benchmark ``methods`` on ``model`` with random pixels, normalised as the model expects, on its device.

    Args:
        model: the model; it stays on its device.
        methods: registered method names (see :func:`xvit.methods`).
        batch_size: images per call.
        image_size: input side (or ``(H, W)``); the model's preprocessing size when omitted.
        repeats: interleaved rounds; medians over rounds are reported.
        warmup: untimed rounds first.
        compare: ``"captum"`` or ``"gradcam"``: also time the peer's equivalent of each method it has (Captum:
            input_x_gradient, integrated_gradients, smoothgrad; pytorch-grad-cam: gradcam) and report the Pearson
            correlation of its maps with xvit's in ``agreement``.
        params: method parameters, ``{method: {name: value}}`` (e.g. ``{"rise": {"n_masks": 1000}}``).

    Returns:
        One row per baseline, method and peer call (``method`` is ``"captum:input_x_gradient"`` for a peer), with
        ``seconds_per_image``, time ratios ``x_forward``, ``x_input_grad``, ``x_forward_backward`` (medians of
        per-round ratios), ``peak_mib`` (None where unmeasurable) and memory ratios ``mem_x_forward``,
        ``mem_x_input_grad``, ``mem_x_forward_backward``; peer rows also ``agreement``; rows of methods that
        count their passes also ``nominal_passes`` (per image, e.g. ``"1 F + 20 F+B"``), ``x_nominal`` and
        ``solver_seconds_per_image``.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError("batch_size and repeats must be >= 1 and warmup >= 0.")
    if compare is not None and compare not in PEERS:
        raise ValueError(f"compare must be one of {PEERS}; got {compare!r}.")
    param = next(model.parameters())
    device = param.device
    prep = preprocessing_for(model)
    h, w = prep.size if image_size is None else (
        (image_size, image_size) if isinstance(image_size, int) else tuple(image_size))
    pixels = torch.rand(batch_size, channels(prep), h, w, generator=torch.Generator().manual_seed(0))
    x = normalise(pixels, prep)
    x = x.to(device, param.dtype)

    entries: dict[str, Callable[[], Any]] = dict(zip(BASELINES, _baselines(model, x)))
    explainers = {m: Explainer(model, method=m, **(params or {}).get(m, {})) for m in methods}
    passes = {m: _nominal_passes(e(x).meta) for m, e in explainers.items()}  # also a warm-up call
    short_lengths = sorted({p["short_tokens"] for p in passes.values() if p and p["short"]})
    entries.update({_short_name(k): _short_forward(model, x, k) for k in short_lengths})
    entries.update({m: (lambda e=e: e(x)) for m, e in explainers.items()})
    agreement: dict[str, float | None] = {}
    if compare is not None:
        with torch.no_grad():
            targets = unwrap_logits(model(x)).argmax(1)
        for method in methods:
            peer = _peer_call(compare, model, method, x, targets)
            if peer is not None:
                name = f"{compare}:{method}"
                entries[name] = peer
                agreement[name] = _agreement(compare, method, explainers[method](x, targets.tolist()).raw[:, 0],
                                             peer(), x)
    times = _interleaved(entries, repeats, warmup, device)
    peaks = {name: _peak(fn, device) for name, fn in entries.items()}
    rows = []
    for name in entries:
        row: dict[str, Any] = {"method": name, "seconds_per_image": statistics.median(times[name]) / batch_size,
                               "peak_mib": None if peaks[name] is None else peaks[name] / 2**20}
        for base, key in zip(BASELINES, ("forward", "input_grad", "forward_backward")):
            row[f"x_{key}"] = statistics.median(t / b for t, b in zip(times[name], times[base]))
            base_peak = peaks[base]
            row[f"mem_x_{key}"] = peaks[name] / base_peak if peaks[name] is not None and base_peak else None
        if name in agreement:
            row["agreement"] = agreement[name]
        if passes.get(name):
            row.update(_nominal_ratio(passes[name], times, name, batch_size))
        row.update(batch_size=batch_size, image_size=[h, w], repeats=repeats, device=str(device))
        rows.append(row)
    return rows


def _nominal_passes(meta: dict[str, Any]) -> dict[str, Any] | None:
    """Mean passes per image that a method recorded in ``meta``, or None when it records none."""
    def mean(key: str) -> float:
        value = meta.get(key)
        return 0.0 if value is None else float(torch.as_tensor(value, dtype=torch.float64).mean())

    if "n_forwards" not in meta and "n_forward_backward" not in meta:
        return None
    short = mean("n_short_forwards")
    return {"forward": mean("n_forwards"), "forward_backward": mean("n_forward_backward"), "short": short,
            "short_tokens": round(mean("short_tokens")) if short else 0, "solver": mean("solver_seconds")}


def _short_name(tokens: int) -> str:
    return f"forward({tokens} tokens)"


def _short_forward(model: nn.Module, x: torch.Tensor, tokens: int) -> Callable[[], Any]:
    """A plain forward of ``x`` with the sequence shortened to ``tokens`` tokens (prefix plus the first patches)."""
    adapter = get_adapter(model)
    keep = torch.arange(tokens - adapter.layout(x).num_prefix, device=x.device).expand(x.shape[0], -1)

    def forward() -> None:
        with torch.no_grad():
            adapter.forward_tokens(x, keep)
    return forward


def _nominal_ratio(passes: dict[str, Any], times: dict[str, list[float]], name: str,
                   batch_size: int) -> dict[str, Any]:
    """The method's time without its solver time over the time of its nominal passes, per round (median)."""
    short = _short_name(passes["short_tokens"])
    ratios = []
    for r, total in enumerate(times[name]):
        t = total - passes["solver"] * batch_size
        nominal = (passes["forward"] * times["forward"][r] + passes["forward_backward"] * times["forward+backward"][r]
                   + (passes["short"] * times[short][r] if passes["short"] else 0.0))
        ratios.append(t / nominal if nominal else float("nan"))
    words = [f"{passes['forward']:g} F" if passes["forward"] else "",
             f"{passes['forward_backward']:g} F+B" if passes["forward_backward"] else "",
             f"{passes['short']:g} F({passes['short_tokens']} tokens)" if passes["short"] else ""]
    return {"nominal_passes": " + ".join(w for w in words if w), "x_nominal": statistics.median(ratios),
            "solver_seconds_per_image": passes["solver"]}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`run_benchmark` as a Markdown table."""
    def num(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    agreement = any("agreement" in r for r in rows)
    nominal = any("x_nominal" in r for r in rows)
    lines = ["| method | ms / image | × fwd | × fwd+bwd | × fwd+input-grad | peak MiB | mem × fwd | mem × fwd+bwd | "
             "mem × fwd+input-grad |" + (" agreement |" if agreement else "")
             + (" nominal passes / image | × nominal | solver ms / image |" if nominal else ""),
             "|---|" + "---:|" * (8 + agreement) + ("---|---:|---:|" if nominal else "")]
    for r in rows:
        line = (f"| {r['method']} | {r['seconds_per_image'] * 1e3:.2f} | {r['x_forward']:.2f} | "
                f"{r['x_forward_backward']:.2f} | {r['x_input_grad']:.2f} | {num(r['peak_mib'], '.1f')} | "
                f"{num(r['mem_x_forward'], '.2f')} | {num(r['mem_x_forward_backward'], '.2f')} | "
                f"{num(r['mem_x_input_grad'], '.2f')} |")
        line += f" {num(r.get('agreement'), '.8f')} |" if agreement else ""
        if nominal:
            solver = r.get("solver_seconds_per_image")
            line += (f" {r.get('nominal_passes', '')} | {num(r.get('x_nominal'), '.2f')} | "
                     f"{num(None if solver is None else solver * 1e3, '.2f')} |")
        lines.append(line)
    return "\n".join(lines)


def _baselines(model: nn.Module, x: torch.Tensor) -> tuple[Callable[[], Any], ...]:
    params = [p for p in model.parameters() if p.requires_grad]

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_input_grad() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(unwrap_logits(model(xg)).sum(), [xg])

    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(unwrap_logits(model(xg)).sum(), [xg, *params])

    return forward, forward_input_grad, forward_backward


def _peer_call(peer: str, model: nn.Module, method: str, x: torch.Tensor,
               targets: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    """The peer library's equivalent of ``method`` with xvit's default parameters, as a call returning ``(B, h, w)``
    maps; None where the peer has none."""
    if peer == "captum":
        from captum import attr

        t = targets.tolist()
        calls = {
            "input_x_gradient": lambda: attr.InputXGradient(model).attribute(x, target=t),
            "integrated_gradients": lambda: attr.IntegratedGradients(model).attribute(
                x, target=t, n_steps=50, method="gausslegendre", internal_batch_size=64),
            "smoothgrad": lambda: attr.NoiseTunnel(attr.Saliency(model)).attribute(
                x, target=t, nt_type="smoothgrad", nt_samples=50, stdevs=1.0,
                nt_samples_batch_size=max(1, 64 // x.shape[0])),
        }
        call = calls.get(method)
        return None if call is None else (lambda: call().detach().sum(1))
    if method != "gradcam":
        return None
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    adapter = get_adapter(model)
    layout = adapter.layout(x)

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return layout.tokens_to_grid(t.transpose(1, 2))

    cam_targets = [ClassifierOutputTarget(int(c)) for c in targets]

    def call() -> torch.Tensor:
        with pytorch_grad_cam.GradCAM(model=model, target_layers=[adapter.norm1(len(adapter.blocks()) - 1)],
                                      reshape_transform=reshape) as cam:
            return torch.as_tensor(cam(input_tensor=x, targets=cam_targets))
    return call


def _agreement(peer: str, method: str, ours: torch.Tensor, theirs: torch.Tensor, x: torch.Tensor) -> float | None:
    """Pearson correlation of xvit's and the peer's maps over the batch (None where the noise differs)."""
    if method == "smoothgrad":  # Captum draws noise from the global generator, xvit per image
        return None
    if peer == "gradcam":  # grad-cam min-max scales, resizes and scales again; apply the same to xvit's map
        from pytorch_grad_cam.utils.image import scale_cam_image

        size = (x.shape[-1], x.shape[-2])
        ours = torch.as_tensor(scale_cam_image(scale_cam_image(ours.cpu().numpy(), target_size=size)))
    a, b = ours.detach().double().flatten().cpu(), theirs.detach().double().flatten().cpu()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(entries: dict[str, Callable[[], Any]], repeats: int, warmup: int,
                 device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of every entry, ``repeats`` rounds that call each entry once, after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in entries}
    for r in range(warmup + repeats):
        for name, fn in entries.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def _peak(fn: Callable[[], Any], device: torch.device) -> int | None:
    gc.collect()
    with PeakMemory(device, trim=True) as probe:
        fn()
    return probe.peak


ANALYSIS_ENTRIES = ("interactions:grad_attention", "interactions:jacobian", "coverage", "erf", "patch_removal")


def run_analysis_benchmark(model: nn.Module, batch_size: int = 8, image_size: int | tuple[int, int] | None = None,
                           repeats: int = 5, warmup: int = 1, probes: int = 8, chunk: int = 1024,
                           keep: Sequence[float] = (1.0, 0.5)) -> list[dict[str, Any]]:
    """Time the patch-interaction analyses (:mod:`xvit.analysis.interactions`) against the plain passes they need,
    measured in the same interleaved rounds on the explicit attention path:

    * ``grad_attention`` (and ``coverage``, ``erf``, which add only bookkeeping): one forward + one backward
      pass of the explained logits to the input (``F+B``);
    * ``jacobian`` with ``probes`` = R: ``R·N`` forward-mode products, timed as one plain batched forward-mode pass
      of the same tangents (``chunk`` rows per pass, as the analysis runs them) through the model (``R·N JVP``);
    * ``patch_removal`` with ``keep`` ratios K: its indicator (``F+B``) plus ``3·K`` forwards of the full sequence
      (an upper bound: shortened sequences are cheaper).

    Returns one row per entry with ``seconds_per_image``, ``nominal_passes`` and ``x_nominal`` (median over rounds
    of the entry's time over its nominal passes' time in the same round).
    """
    import torch.autograd.forward_ad as fwAD

    from xvit.analysis import ANALYSES

    if batch_size < 1 or repeats < 1 or warmup < 0 or probes < 1:
        raise ValueError("batch_size, repeats and probes must be >= 1 and warmup >= 0.")
    param = next(model.parameters())
    prep = preprocessing_for(model)
    h, w = prep.size if image_size is None else (
        (image_size, image_size) if isinstance(image_size, int) else tuple(image_size))
    pixels = torch.rand(batch_size, channels(prep), h, w, generator=torch.Generator().manual_seed(0))
    x = normalise(pixels, prep).to(param.device, param.dtype)
    adapter = get_adapter(model)
    layout = adapter.layout(x)
    n, k = layout.num_patches, len(keep)
    analyses = {
        "interactions:grad_attention": ANALYSES.get("interactions")(),
        "interactions:jacobian": ANALYSES.get("interactions")(method="jacobian", probes=probes, chunk=chunk),
        "coverage": ANALYSES.get("coverage")(),
        "erf": ANALYSES.get("erf")(),
        "patch_removal": ANALYSES.get("patch_removal")(keep=list(keep)),
    }

    def forward_backward() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(unwrap_logits(adapter.forward(xg)).max(1).values.sum(), [xg])

    def forward() -> None:
        with torch.no_grad():
            adapter.forward(x)

    def jvps() -> None:
        with torch.no_grad():
            e = adapter.block_input(x, 0)
            rows = probes * n
            step = max(1, chunk // batch_size)
            for start in range(0, rows, step):
                s = min(step, rows - start)
                tangent = torch.randn(batch_size * s, *e.shape[1:], device=e.device, dtype=e.dtype)
                with fwAD.dual_level():
                    out = adapter.forward_from(fwAD.make_dual(e.repeat_interleave(s, 0), tangent), 0)
                    fwAD.unpack_dual(out)

    entries: dict[str, Callable[[], Any]] = {"F+B": forward_backward, "F": forward, "R·N JVP": jvps}
    entries.update({name: (lambda a=a: a(model, x)) for name, a in analyses.items()})
    with eval_mode(model), adapter.eager_attention():
        times = _interleaved(entries, repeats, warmup, param.device)
    nominal = {"interactions:grad_attention": ("1 F+B", lambda r: times["F+B"][r]),
               "interactions:jacobian": (f"{probes}·{n} JVP", lambda r: times["R·N JVP"][r]),
               "coverage": ("1 F+B", lambda r: times["F+B"][r]), "erf": ("1 F+B", lambda r: times["F+B"][r]),
               "patch_removal": (f"1 F+B + {3 * k} F", lambda r: times["F+B"][r] + 3 * k * times["F"][r])}
    rows = []
    for name in entries:
        row: dict[str, Any] = {"entry": name, "seconds_per_image": statistics.median(times[name]) / batch_size}
        if name in nominal:
            words, fn = nominal[name]
            row.update(nominal_passes=words, x_nominal=statistics.median(
                t / fn(r) for r, t in enumerate(times[name])))
        row.update(batch_size=batch_size, image_size=[h, w], repeats=repeats, device=str(param.device),
                   probes=probes, patches=n)
        rows.append(row)
    return rows


def format_analysis_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of :func:`run_analysis_benchmark` as a Markdown table."""
    lines = ["| entry | ms / image | nominal passes | × nominal |", "|---|---:|---|---:|"]
    for r in rows:
        ratio = f"{r['x_nominal']:.2f}" if "x_nominal" in r else "(baseline)"
        lines.append(f"| {r['entry']} | {r['seconds_per_image'] * 1e3:.2f} | {r.get('nominal_passes', '')} | "
                     f"{ratio} |")
    return "\n".join(lines)
