"""SVDA ViT against the same-size standard ViT (docs/svda.md): a resumable driver.

    OMP_NUM_THREADS=1 nohup .venv/bin/python tools/svda_experiment.py all > runs/svda-exp.log 2>&1 &

Phases (each skips the work already done, so rerunning the command resumes): ``train`` — 2 datasets x 2 arms x 3
seeds with identical recipes (``xvit train`` with ``--track-indicators``), at most ``--parallel`` at a time, the
two arms of a seed side by side so they share the machine's load; ``prune`` — spectral energy retention of the SVDA
runs at rho in {0.8, 0.9, 0.95}, paired with the unpruned model on the same test images; ``evaluate`` — ``xvit
evaluate`` localisation and faithfulness columns on the xvit-shapes runs; ``report`` — tables (Markdown) and
figures from what was measured. Everything goes to ``runs/svda-exp/``; figures to ``docs/figures/svda_*.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "svda-exp"
FIGURES = ROOT / "docs" / "figures"
MNIST = "/work/shared/data/mnist-test"
SEEDS = (0, 1, 2)
ARMS = ("vit", "svda")
RHOS = (0.8, 0.9, 0.95)
COMMON = ["--embed-dim", "64", "--depth", "4", "--num-heads", "4", "--preset", "tiny", "--init", "mimetic",
          "--track-indicators", "--no-progress"]
DATASETS: dict[str, list[str]] = {
    "mnist": ["--data", f"mnist:{MNIST}", "--img-size", "28", "--patch-size", "4", "--epochs", "15",
              "--batch-size", "128", "--lr", "1e-3", "--warmup-epochs", "0.5", "--no-flip",
              "--track-probe-size", "128"],
    "shapes": ["--data", "xvit-shapes:single", "--img-size", "64", "--patch-size", "8", "--epochs", "20",
               "--train-size", "4800", "--val-size", "250", "--test-size", "500", "--batch-size", "32",
               "--lr", "2e-3", "--warmup-epochs", "0.5", "--token-loss", "1.0", "--track-probe-size", "64"],
}
EVAL_METHODS = ["rollout", "transformer_attribution", "attnlrp"]
EVAL_METRICS = ["segmentation", "pointing_game", "energy_pointing_game", "deletion_insertion"]
EVAL_IMAGES = 100


def run_dir(dataset: str, arch: str, seed: int) -> Path:
    return OUT / f"{dataset}-{arch}-s{seed}"


ABLATIONS = {"svda-temp": ["--arch", "svda", "--model-arg", "spectrum_init=temperature"]}
"""Further arms (MNIST only, phase ``ablation``): SVDA with σ = 1 and a per-head temperature c·√r (§2.1's
alternative initialisation)."""


def train_command(dataset: str, arch: str, seed: int) -> list[str]:
    out = run_dir(dataset, arch, seed)
    cmd = ["xvit", "train", *ABLATIONS.get(arch, ["--arch", arch]), *DATASETS[dataset], *COMMON, "--seed",
           str(seed), "--out", str(out.relative_to(ROOT))]
    return cmd + (["--resume"] if (out / "train_state.pt").exists() else [])


def _done(path: Path) -> bool:
    return (path / "config.json").is_file()


def phase_train(parallel: int, arms: tuple[str, ...] = ARMS, datasets: tuple[str, ...] = tuple(DATASETS)) -> None:
    """All runs, ``parallel`` at a time; each run's CPU seconds (user + system, from wait4) go to ``cpu.json``."""
    queue = [(d, a, s) for d in datasets for s in SEEDS for a in arms if not _done(run_dir(d, a, s))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    running: dict[int, tuple[Path, subprocess.Popen, float]] = {}
    while queue or running:
        while queue and len(running) < parallel:
            d, a, s = queue.pop(0)
            out = run_dir(d, a, s)
            out.mkdir(parents=True, exist_ok=True)
            cmd = train_command(d, a, s)
            log = (out / "train.log").open("a")
            print(time.strftime("%H:%M:%S"), "start", " ".join(cmd), flush=True)
            proc = subprocess.Popen([sys.executable, "-m", "xvit", *cmd[1:]], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            running[proc.pid] = (out, proc, time.time())
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        out, proc, started = running.pop(pid)
        cpu_file = out / "cpu.json"
        prev = json.loads(cpu_file.read_text()) if cpu_file.exists() else {"cpu_seconds": 0.0, "wall_seconds": 0.0}
        cpu_file.write_text(json.dumps({"cpu_seconds": prev["cpu_seconds"] + usage.ru_utime + usage.ru_stime,
                                        "wall_seconds": prev["wall_seconds"] + time.time() - started}))
        print(time.strftime("%H:%M:%S"), "end", out.name, "status", os.waitstatus_to_exitcode(status), flush=True)


def _accuracy(model: Any, cfg: dict[str, Any]) -> float:
    """Top-1 on the run's own test images: the xvit-shapes test split, or MNIST's seeded held-out fraction."""
    from xvit.training import TrainConfig, shapes_accuracy
    from xvit.training.accuracy import loss_and_accuracy
    from xvit.training.data import training_data

    config = TrainConfig(**cfg)
    if cfg["data"].startswith("xvit-shapes:"):
        return shapes_accuracy(model, "single", config.test_size, split="test")
    data = training_data(config)
    return loss_and_accuracy(model, data.val_images, data.val_labels, config.preprocessing, bf16=False)[1]


def phase_prune() -> None:
    import torch

    from xvit.models import load_model
    from xvit.models.svda import spectral_prune

    torch.set_num_threads(1)
    for d, arm, s in [(d, a, s) for d in DATASETS for a in ("svda", *ABLATIONS) for s in SEEDS]:
        run = run_dir(d, arm, s)
        target = run / "pruning.json"
        if target.exists() or not _done(run):
            continue
        cfg = json.loads((run / "config.json").read_text())["training"]["config"]
        model = load_model(str(run))
        rows = [{"rho": 1.0, "accuracy": _accuracy(model, cfg)}]
        for rho in RHOS:
            pruned, report = spectral_prune(model, rho)
            rows.append({"rho": rho, "accuracy": _accuracy(pruned, cfg),
                         **{k: v for k, v in report.items() if k != "kept"},
                         "kept": report["kept"].tolist()})
        target.write_text(json.dumps(rows, indent=1))
        print(time.strftime("%H:%M:%S"), "pruned", run.name, flush=True)


def phase_evaluate() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for s in SEEDS:
        for a in ARMS:
            run = run_dir("shapes", a, s)
            if not _done(run) or (run / "eval" / "summary.json").exists():
                continue
            cmd = [sys.executable, "-m", "xvit", "evaluate", "--model", str(run.relative_to(ROOT)),
                   "--data", f"xvit-shapes:single:test:{EVAL_IMAGES}", "--methods", *EVAL_METHODS,
                   "--metrics", *EVAL_METRICS, "--steps", "16", "--batch-size", "25", "--no-progress",
                   "--out", str((run / "eval").relative_to(ROOT))]
            print(time.strftime("%H:%M:%S"), "evaluate", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, cwd=ROOT, env=env, check=False, stdout=(run / "eval.log").open("a"),
                           stderr=subprocess.STDOUT)


SPEED_SHAPES = {"mnist": dict(img_size=28, patch_size=4, batch=128), "shapes": dict(img_size=64, patch_size=8,
                                                                                   batch=32)}


def _train_step(model: Any, opt: Any, x: Any, y: Any) -> None:
    """One step as ``xvit train`` takes it: bfloat16 autocast, cross-entropy plus the model's own loss term."""
    import torch
    import torch.nn.functional as F

    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    reg = getattr(model, "regularization_loss", None)
    loss = F.cross_entropy(logits.float(), y) + (reg() if reg is not None else 0.0)
    opt.zero_grad()
    loss.backward()
    opt.step()


def phase_speed(reps: int = 3, steps: int = 10) -> None:
    """CPU seconds (``time.process_time``, one thread: insensitive to other processes' load) per training step
    (bfloat16 autocast, explicit attention, AdamW, the penalty for SVDA: as ``xvit train``) and per float32
    inference forward, both arms interleaved ``reps`` times, at each dataset's model size and batch."""
    import torch

    from xvit.models import create_model

    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    for d, size in SPEED_SHAPES.items():
        x = torch.randn(size["batch"], 3, size["img_size"], size["img_size"])
        y = torch.randint(0, 10, (size["batch"],))
        times: dict[str, dict[str, list[float]]] = {a: {"train": [], "infer": []} for a in ARMS}
        for _ in range(reps):
            for a in ARMS:
                torch.manual_seed(0)
                model = create_model(a, "tiny", img_size=size["img_size"], patch_size=size["patch_size"],
                                     embed_dim=64, depth=4, num_heads=4, num_classes=10)
                for block in model.blocks:
                    block.attn.fused_attn = False
                opt = torch.optim.AdamW(model.parameters(), 1e-3)
                _train_step(model, opt, x, y)
                t = time.process_time()
                for _ in range(steps):
                    _train_step(model, opt, x, y)
                times[a]["train"].append((time.process_time() - t) / steps)
                model.eval()
                with torch.no_grad():
                    model(x)
                    t = time.process_time()
                    for _ in range(steps):
                        model(x)
                times[a]["infer"].append((time.process_time() - t) / steps)
        out[d] = {**size, "reps": reps, "steps": steps, "seconds": times}
        print(time.strftime("%H:%M:%S"), "speed", d, {a: {k: statistics.median(v) for k, v in t.items()}
                                                      for a, t in times.items()}, flush=True)
    (OUT / "speed.json").write_text(json.dumps(out, indent=1))


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4g} ± {sd:.2g}"


def _pct(values: list[float]) -> str:
    return _mean_std([100 * v for v in values])


def phase_report() -> None:
    """Markdown tables to runs/svda-exp/summary.md and figures to docs/figures/svda_*.png."""
    import matplotlib

    matplotlib.use("Agg")
    from xvit.training.svda_tracking import read_tracking

    lines: list[str] = []
    lines += ["## Accuracy and cost", "",
              "| data | arm | runs | test top-1 (%) | median s / epoch | wall-clock s / run | CPU s / run |",
              "|---|---|---|---|---|---|---|"]
    cost: dict[tuple[str, str], dict[str, list[float]]] = {}
    for d in DATASETS:
        for a in (*ARMS, *ABLATIONS):
            acc, epoch_s, wall, cpu = [], [], [], []
            for s in SEEDS:
                run = run_dir(d, a, s)
                if not _done(run):
                    continue
                config = json.loads((run / "config.json").read_text())
                acc.append(config["metrics"]["test_accuracy"])
                log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
                epoch_s.append(statistics.median(r["epoch_seconds"] for r in log))
                wall.append(config["training"]["wall_clock_seconds"])
                if (run / "cpu.json").exists():
                    cpu.append(json.loads((run / "cpu.json").read_text())["cpu_seconds"])
            if not acc:
                continue
            cost[(d, a)] = {"epoch": epoch_s, "wall": wall, "cpu": cpu}
            lines.append(f"| {d} | {a} | {len(acc)} | {_pct(acc)} | {_mean_std(epoch_s)} | {_mean_std(wall)} | "
                         f"{_mean_std(cpu)} |")
    lines += ["", "SVDA / ViT ratio of the means:", ""]
    for d in DATASETS:
        v, s = cost.get((d, "vit")), cost.get((d, "svda"))
        if v and s and v["epoch"] and s["epoch"]:
            ratio = {k: (statistics.mean(s[k]) / statistics.mean(v[k]) if v[k] and s[k] else float("nan"))
                     for k in ("epoch", "wall", "cpu")}
            lines.append(f"* {d}: s/epoch x{ratio['epoch']:.2f}, wall-clock x{ratio['wall']:.2f}, "
                         f"CPU x{ratio['cpu']:.2f}")

    speed = OUT / "speed.json"
    if speed.exists():
        lines += ["", "CPU milliseconds per step (`python tools/svda_experiment.py speed`; one thread, median of the "
                  "repetitions):", "", "| data | batch | ViT train step | SVDA train step | ratio | ViT forward | "
                  "SVDA forward | ratio |", "|---|---|---|---|---|---|---|---|"]
        for d, r in json.loads(speed.read_text()).items():
            med = {a: {k: 1000 * statistics.median(v) for k, v in r["seconds"][a].items()} for a in ARMS}
            lines.append(f"| {d} | {r['batch']} | {med['vit']['train']:.1f} | {med['svda']['train']:.1f} | "
                         f"x{med['svda']['train'] / med['vit']['train']:.2f} | {med['vit']['infer']:.1f} | "
                         f"{med['svda']['infer']:.1f} | x{med['svda']['infer'] / med['vit']['infer']:.2f} |")
    lines += ["", "## Spectral pruning of the SVDA runs (paired with the unpruned model)", "",
              "| data (arm) | rho | directions removed (%) | params removed (%) | MACs removed (%) | "
              "accuracy change (points) |", "|---|---|---|---|---|---|"]
    for d, arm in [(d, a) for d in DATASETS for a in ("svda", *ABLATIONS)]:
        results = [json.loads((run_dir(d, arm, s) / "pruning.json").read_text()) for s in SEEDS
                   if (run_dir(d, arm, s) / "pruning.json").exists()]
        for i, rho in enumerate(RHOS, start=1):
            rows = [r[i] for r in results]
            if not rows:
                continue
            change = [100 * (r[i]["accuracy"] - r[0]["accuracy"]) for r in results]
            lines.append(f"| {d} ({arm}) | {rho} | {_pct([r['removed_fraction'] for r in rows])} | "
                         f"{_pct([r['params_removed_fraction'] for r in rows])} | "
                         f"{_pct([r['macs_removed_fraction'] for r in rows])} | {_mean_std(change)} |")

    lines += ["", f"## Attribution maps on xvit-shapes single (test, first {EVAL_IMAGES} images)", ""]
    table: dict[tuple[str, str, str], list[float]] = {}
    columns: list[str] = []
    for a in ARMS:
        for s in SEEDS:
            summary = run_dir("shapes", a, s) / "eval" / "summary.json"
            if not summary.exists():
                continue
            for row in json.loads(summary.read_text())["rows"]:
                if row.get("status") == "skipped" or row.get("mean") is None:
                    continue
                if row["column"] not in columns:
                    columns.append(row["column"])
                table.setdefault((row["method"], a, row["column"]), []).append(row["mean"])
    if table:
        methods = list(dict.fromkeys(m for m, _, _ in table))
        heads = {"segmentation": "segmentation mAP (%) ↑", "pointing_game": "pointing game hit rate ↑",
                 "energy_pointing_game": "energy pointing game ↑", "deletion": "deletion AUC ↓",
                 "insertion": "insertion AUC ↑"}
        lines += ["Per-image means of each run, then mean ± std over the 3 seeds; `random` is the chance map.", "",
                  "| method | arm | " + " | ".join(heads.get(c, c) for c in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for m in methods:
            for a in ARMS:
                lines.append(f"| {m} | {a} | " + " | ".join(_mean_std(table.get((m, a, c), [])) for c in columns)
                             + " |")
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _figures(read_tracking)


def _figures(read_tracking: Any) -> None:
    from matplotlib.figure import Figure

    FIGURES.mkdir(parents=True, exist_ok=True)
    names = ["spectral_entropy", "effective_rank", "spectral_sparsity", "angular_alignment", "selectivity",
             "robustness_input"]
    for d in DATASETS:
        fig = Figure(figsize=(11, 5.6), layout="constrained")
        axes = fig.subplots(2, 3).flatten()
        drew = False
        for a, color in zip((*ARMS, *ABLATIONS), ("tab:blue", "tab:orange", "tab:green")):
            curves: dict[str, list[dict[int, float]]] = {n: [] for n in names}
            for s in SEEDS:
                rows = read_tracking(run_dir(d, a, s) / "indicators.csv")
                for n in names:
                    by_epoch: dict[int, list[float]] = {}
                    for r in rows:
                        if r["indicator"] == n:
                            by_epoch.setdefault(r["epoch"], []).append(r["value"])
                    if by_epoch:
                        curves[n].append({e: statistics.mean(v) for e, v in by_epoch.items()})
            for ax, n in zip(axes, names):
                if not curves[n]:
                    continue
                drew = True
                epochs = sorted(set.intersection(*(set(c) for c in curves[n])))
                mean = [statistics.mean(c[e] for c in curves[n]) for e in epochs]
                sd = [statistics.pstdev([c[e] for c in curves[n]]) for e in epochs]
                ax.plot(epochs, mean, color=color, marker="o", ms=3, label=f"{a} ({len(curves[n])} seeds)")
                ax.fill_between(epochs, [m - v for m, v in zip(mean, sd)], [m + v for m, v in zip(mean, sd)],
                                color=color, alpha=0.2)
                ax.set_title(n.replace("_", " "), fontsize=9)
                ax.set_xlabel("epoch (0 = step 0)", fontsize=8)
        if drew:
            axes[0].legend(fontsize=7, frameon=False)
            fig.suptitle(f"{d}: indicators over training (mean over blocks and heads; band: std over seeds)",
                         fontsize=10)
            fig.savefig(FIGURES / f"svda_indicators_{d}.png", dpi=100)


BUNDLED_RUN = ROOT / "runs" / "bundled" / "shapes-vit-tiny-svda"  # where tools/train_bundled.py trains it
BUNDLED_DIR = ROOT / "src" / "xvit" / "assets" / "models" / "shapes-vit-tiny-svda"


def phase_bundle(source: Path, dest: Path) -> None:
    """Copy a finished run into the bundled models, write its card and append its SVDA indicators (512 validation
    images of the xvit-shapes ``val`` split, seed 0) with the command that computes them."""
    import torch
    from train_bundled import copy_run

    from xvit.analysis import analyse
    from xvit.analysis.svda import layer_summary
    from xvit.data import make_shapes, normalise
    from xvit.models import load_model, preprocessing_for
    from xvit.training import write_model_card

    if not _done(source):
        log = source / "log.jsonl"
        last = json.loads(log.read_text().splitlines()[-1])["epoch"] if log.exists() else 0
        print(f"{source} is not finished: last finished epoch {last}; resume it with its command plus --resume.")
        return
    size = copy_run(source, dest)
    card = write_model_card(dest, dest.name)
    model = load_model(str(dest))
    x = normalise(make_shapes("single", 512, size=model.config.img_size, split="val").images,
                  preprocessing_for(model))
    torch.manual_seed(0)
    with torch.no_grad():
        result = analyse(model, x, "svda")
    lines = ["", "## SVDA indicators", "",
             f"Measured by `xvit.analyse(model, x, \"svda\")` (definition `{result.meta['definition_version']}`, "
             "docs/svda.md) on 512 images of the xvit-shapes `val` split; per block the mean ± std over heads "
             "(data indicators: mean over the images). Command: `python tools/svda_experiment.py bundle`.", "",
             "| block | " + " | ".join(n.replace("_", " ") for n in result.meta["indicators"]) + " |",
             "|---|" + "---|" * len(result.meta["indicators"])]
    summary = layer_summary(result)
    for block in range(len(model.blocks)):
        lines.append(f"| {block} | " + " | ".join(f"{float(m[block]):.3f} ± {float(s[block]):.3f}"
                                                 for m, s in summary.values()) + " |")
    with card.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"bundled {dest} ({size / 1e6:.2f} MB) with {card}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["train", "prune", "evaluate", "report", "all", "bundle", "ablation",
                                          "speed"])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--source", type=Path, default=BUNDLED_RUN, help="bundle: the finished run")
    parser.add_argument("--dest", type=Path, default=BUNDLED_DIR, help="bundle: the bundled model's folder")
    args = parser.parse_args()
    if args.phase == "bundle":
        phase_bundle(args.source, args.dest)
        return
    if args.phase == "speed":
        phase_speed()
        return
    if args.phase == "ablation":
        phase_train(args.parallel, tuple(ABLATIONS), ("mnist",))
        phase_prune()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if args.phase in ("train", "all"):
        phase_train(args.parallel)
    if args.phase in ("prune", "all"):
        phase_prune()
    if args.phase in ("evaluate", "all"):
        phase_evaluate()
    if args.phase in ("report", "all"):
        phase_report()


if __name__ == "__main__":
    main()
