"""Published experiments of issue 13 (Cui, Fan & Chen 2026): external attention guidance on xvit-shapes ``pair`` and
class rewriting on ``single``, on the bundled ``shapes-vit-tiny``. Resumable: finished chunks are saved under --out
and skipped on a rerun; each command writes a Markdown table and a figure.

    python tools/cui_experiments.py rewrite --n 200 --steps 10 --out runs/cui/rewrite
    python tools/cui_experiments.py guide --n 500 --out runs/cui/guide
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import xvit
from xvit.analysis.guide_eval import GuideArm, run_guide_eval, summarise_guide
from xvit.analysis.rewrite_eval import run_rewrite_eval, summarise_rewrite
from xvit.data.shapes import SHAPE_CLASSES
from xvit.data.sources.base import load_dataset
from xvit.models import preprocessing_for

ROOT = Path(__file__).resolve().parents[1]


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def _fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def rewrite_table(rows: list[dict]) -> str:
    """Markdown table of :func:`summarise_rewrite` rows."""
    head = ("| ε | q | arm | images | success | steps | p(target) | L∞ (/255) | L2 | PSNR (dB) | SSIM | patches | "
            "paired L2 (both succeed, n) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        paired = "" if r["paired_n"] is None else f"{_fmt(r['paired_l2'])} ({r['paired_n']})"
        linf = None if r["linf"] is None else r["linf"] * 255
        lines.append(f"| {r['epsilon'] * 255:g}/255 | {r['q']:g} | {r['arm']} | {r['n']} | {_fmt(r['success'])} | "
                     f"{_fmt(r['steps'], 1)} | {_fmt(r['target_prob'])} | {_fmt(linf, 2)} | {_fmt(r['l2'])} | "
                     f"{_fmt(r['psnr'], 1)} | {_fmt(r['ssim'], 4)} | {_fmt(r['patches'], 1)} | {paired} |")
    return head + "\n".join(lines) + "\n"


def rewrite_figure(model: torch.nn.Module, data, path: Path, *, epsilon: float, q: float, steps: int,
                   n_images: int = 3) -> None:
    """Original, rewritten, amplified difference and source/target maps before and after for a few images."""
    from matplotlib.figure import Figure

    from xvit.utils.maps import normalise_maps

    batch = data.load(range(n_images), preprocessing_for(model))
    result = xvit.analyse(model, batch.x, "rewrite_class", epsilon=epsilon, q=q, steps=steps)
    t = result.tensors
    names = data.class_names
    fig = Figure(figsize=(1.45 * 7, 1.6 * n_images), layout="constrained")
    axes = fig.subplots(n_images, 7, squeeze=False)
    for i in range(n_images):
        original = t["pixels"][i].clamp(0, 1)
        delta = t["delta"][i]
        scale = float(delta.abs().max())
        amplified = (0.5 + 0.5 * delta / scale).clamp(0, 1) if scale > 0 else torch.full_like(delta, 0.5)
        src, tgt = names[int(t["source"][i])], names[int(t["target"][i])]
        ok = "✓" if bool(t["success"][i, 0]) else "✗"
        panels = [(original, f"{src}"), ((original + delta).clamp(0, 1), f"→ {tgt} {ok}"),
                  (amplified, f"δ ×{0.5 / scale:.0f}" if scale > 0 else "δ = 0")]
        for ax, (img, title) in zip(axes[i][:3], panels):
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=7)
        maps = [(t["maps_before"][i, 0], f"{src} before"), (t["maps_before"][i, 1], f"{tgt} before"),
                (t["maps_after"][i, 0], f"{src} after"), (t["maps_after"][i, 1], f"{tgt} after")]
        for ax, (m, title) in zip(axes[i][3:], maps):
            ax.imshow(normalise_maps(m.float()).numpy(), cmap="inferno")
            ax.set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"Class rewriting on shapes-vit-tiny (ε = {epsilon * 255:g}/255, q = {q:g}, explanation arm)",
                 fontsize=8)
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    with Image.open(path) as image:  # a 256-colour palette keeps the committed PNGs small
        quantised = image.convert("RGB").quantize(colors=256)
    quantised.save(path, optimize=True)


def cmd_rewrite(args: argparse.Namespace) -> int:
    model = xvit.load_model(args.model)
    data = load_dataset(f"xvit-shapes:single:test:{args.n}", size=preprocessing_for(model).size)
    epsilons = [e / 255 for e in args.epsilons]
    records = run_rewrite_eval(model, data, args.out, epsilons=epsilons, qs=args.q, steps=args.steps,
                               chunk=args.chunk, reverse=args.reverse, log=_log)
    table = rewrite_table(summarise_rewrite(records))
    (args.out / "table.md").write_text(table)
    print(table)
    if not args.no_figure:
        rewrite_figure(model, data, args.figure, epsilon=2 / 255, q=0.25, steps=args.steps)
        _log(f"figure: {args.figure}")
    return 0


BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def guide_arms() -> list[GuideArm]:
    """All blocks guided: the spec's tight masks over the β sweep and with mask_renorm; every touched patch at 1
    (β = 1); the one-patch dilation and guidance away from the other object at β ∈ {0.25, 1} (β above ~0.5 only
    deepens the suppression of the outside of a 0/1 region); and the tight masks and the one-patch dilation with only
    the last three blocks or only the last block guided (β = 1)."""
    arms = [GuideArm("logit_bias", b, None, "mask") for b in BETAS] + [GuideArm("mask_renorm", 1.0, None, "mask")]
    arms.append(GuideArm("logit_bias", 1.0, None, "patch"))
    for region in ("patch+1", "not_other"):
        arms += [GuideArm("logit_bias", b, None, region) for b in (0.25, 1.0)]
    for blocks in ((3, 4, 5), (5,)):
        arms += [GuideArm("logit_bias", 1.0, blocks, region) for region in ("mask", "patch+1")]
    return arms


def guide_table(rows: list[dict]) -> str:
    """Markdown table of :func:`summarise_guide` rows."""
    head = ("| region | mode | β | guided blocks | images | region accuracy | both regions right | regions differ | "
            "mean top-1 p | most common top-1 (share) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        if r["arm"] == "unguided":
            lines.append(f"| (unguided top-1 for both; 'both' = top-2 are the two classes) | – | – | – | {r['n']} | "
                         f"{_fmt(r['region_acc'])} | {_fmt(r['both'])} | {_fmt(r['distinct'])} | {_fmt(r['prob'])} | "
                         f"{_common(r)} |")
            continue
        blocks = "all" if r["blocks"] is None else ",".join(map(str, r["blocks"]))
        lines.append(f"| {r['region']} | {r['mode']} | {_fmt(r['beta'], 2) if r['beta'] is not None else '–'} | "
                     f"{blocks} | {r['n']} | {_fmt(r['region_acc'])} | {_fmt(r['both'])} | {_fmt(r['distinct'])} | "
                     f"{_fmt(r['prob'])} | {_common(r)} |")
    return head + "\n".join(lines) + "\n"


def _common(row: dict) -> str:
    return f"{SHAPE_CLASSES[row['top_class']]} ({row['top_share']:.2f})"


def attention_table(model: torch.nn.Module, data, n_images: int = 100) -> str:
    """Per block, the unguided class token's attention (mean over heads and images) on itself and on the two
    objects' patches (any pixel of an object), next to the share of patches the objects touch."""
    from xvit.adapters import get_adapter
    from xvit.analysis.guide import region_coverage
    from xvit.capture import record
    from xvit.utils.context import eval_mode

    batch = data.load(range(min(n_images, len(data))), preprocessing_for(model))
    adapter = get_adapter(model)
    layout = adapter.layout(batch.x)
    objects = (region_coverage(batch.x, layout, masks=batch.masks.float()).sum(1) > 0).flatten(1).float()
    with eval_mode(model), adapter.eager_attention():
        attentions = record(adapter, batch.x, None, attention=True).attentions
    lines = ["| block | CLS → CLS | CLS → object patches | object patches (share of patches) |", "|---|---|---|---|"]
    for b, a in enumerate(attentions):
        row = a[:, :, 0].mean(1)  # (B, T): the class token's row, mean over heads
        lines.append(f"| {b} | {row[:, 0].mean():.3f} | {(row[:, layout.num_prefix:] * objects).sum(1).mean():.3f} | "
                     f"{objects.mean():.3f} |")
    return "\n".join(lines) + "\n"


def guide_figure(model: torch.nn.Module, data, path: Path, n_images: int = 3) -> None:
    """Per image and arm (the spec's tight masks, and guidance away from the other object): each region, its guided
    top-1 class and probability, and that class's map under the same guidance."""
    from matplotlib.figure import Figure

    from xvit.adapters import get_adapter
    from xvit.analysis.guide import region_coverage
    from xvit.analysis.guide_eval import shape_regions
    from xvit.utils.maps import normalise_maps

    batch = data.load(range(n_images), preprocessing_for(model))
    names = data.class_names
    display = (batch.x * 0.5 + 0.5).clamp(0, 1)  # shapes-vit-tiny normalises with mean = std = 0.5
    arms = (("mask", "tight mask"), ("not_other", "all but the other object"))
    fig = Figure(figsize=(1.35 * 5, 1.45 * n_images * len(arms)), layout="constrained")
    axes = fig.subplots(n_images * len(arms), 5, squeeze=False)
    layout = get_adapter(model).layout(batch.x)
    for a, (region, label) in enumerate(arms):
        # the analysis takes pixel masks: expand each guidance region to its patches' pixels
        cov = shape_regions(region_coverage(batch.x, layout, masks=batch.masks.float()), region)
        pixel = cov.repeat_interleave(layout.patch_size[0], -2).repeat_interleave(layout.patch_size[1], -1)
        result = xvit.analyse(model, batch.x, "guide", masks=pixel, top_k=1)
        t = result.tensors
        for i in range(n_images):
            row = axes[a * n_images + i]
            row[0].imshow(display[i].permute(1, 2, 0).numpy())
            truth = " + ".join(names[c] for c in batch.labels[i].tolist())
            row[0].set_title(f"{truth}\n({label})", fontsize=6)
            for r in range(2):
                row[1 + 2 * r].imshow(t["coverage"][i, r].numpy(), vmin=0, vmax=1, cmap="gray")
                row[1 + 2 * r].set_title(f"region: {names[int(batch.labels[i, r])]}", fontsize=6)
                c = int(t["classes"][i, r, 0])
                ok = "✓" if c == int(batch.labels[i, r]) else "✗"
                row[2 + 2 * r].imshow(normalise_maps(t["maps"][i, r, 0].float()).numpy(), cmap="inferno")
                row[2 + 2 * r].set_title(f"{names[c]} p={float(t['probs'][i, r, 0]):.2f} {ok}", fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("External attention guidance on shapes-vit-tiny (logit_bias, β = 1, all blocks)", fontsize=8)
    _save_png(fig, path)


def cmd_guide(args: argparse.Namespace) -> int:
    model = xvit.load_model(args.model)
    data = load_dataset(f"xvit-shapes:pair:test:{args.n}", size=preprocessing_for(model).size)
    arms = guide_arms()
    chunks = run_guide_eval(model, data, args.out, arms, chunk=args.chunk, reverse=args.reverse, log=_log)
    table = guide_table(summarise_guide(chunks, arms))
    (args.out / "table.md").write_text(table)
    print(table)
    attention = attention_table(model, data)
    (args.out / "attention.md").write_text(attention)
    print(attention)
    if not args.no_figure:
        guide_figure(model, data, args.figure)
        _log(f"figure: {args.figure}")
    return 0


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rw = sub.add_parser("rewrite", help="class rewriting sweep on xvit-shapes:single:test")
    rw.add_argument("--model", default="shapes-vit-tiny")
    rw.add_argument("--n", type=int, default=200, help="test images (default 200)")
    rw.add_argument("--epsilons", type=float, nargs="+", default=[1, 2, 4], help="budgets in units of 1/255")
    rw.add_argument("--q", type=float, nargs="+", default=[0.1, 0.25, 0.5], help="support fractions")
    rw.add_argument("--steps", type=int, default=50, help="PGD steps at most (default 50)")
    rw.add_argument("--chunk", type=int, default=16, help="images per saved chunk")
    rw.add_argument("--out", type=Path, default=ROOT / "runs" / "cui" / "rewrite")
    rw.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "cui_rewrite.png")
    rw.add_argument("--no-figure", action="store_true", help="write only the table")
    rw.add_argument("--reverse", action="store_true", help="work from the last chunk (a second run sharing --out)")
    rw.set_defaults(run=cmd_rewrite)
    gd = sub.add_parser("guide", help="external attention guidance on xvit-shapes:pair:test")
    gd.add_argument("--model", default="shapes-vit-tiny")
    gd.add_argument("--n", type=int, default=500, help="test images (default 500)")
    gd.add_argument("--chunk", type=int, default=50, help="images per saved chunk")
    gd.add_argument("--out", type=Path, default=ROOT / "runs" / "cui" / "guide")
    gd.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "cui_guide.png")
    gd.add_argument("--no-figure", action="store_true", help="write only the table")
    gd.add_argument("--reverse", action="store_true", help="work from the last chunk (a second run sharing --out)")
    gd.set_defaults(run=cmd_guide)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
