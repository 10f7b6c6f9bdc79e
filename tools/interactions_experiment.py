"""WinfT (hard and soft windows) against the same-size ViT baseline: the experiment of docs/interactions.md.

Per data set (MNIST from ../shared/data, xvit-shapes single) and arm (``vit``, ``winft-hard``, ``winft-soft``),
3 seeds with the same recipe and budget. The windows of both WinfT arms are estimated once per data set from the
baseline's seed-0 run on training images (``xvit analyse erf ... --param erf.method=jacobian``). Every run is an
``xvit train`` process (at most ``--parallel`` at a time, ``OMP_NUM_THREADS=1``); finished runs are skipped and an
interrupted one continues with ``--resume``, so the driver can be restarted at any time.

    nohup .venv/bin/python tools/interactions_experiment.py > runs/interactions/driver.log 2>&1 &
    .venv/bin/python tools/interactions_experiment.py --summary     # the tables of docs/interactions.md
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

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "interactions"
XVIT = [sys.executable, "-m", "xvit"]
MNIST = "/work/shared/data/mnist-test"
SEEDS = (0, 1, 2)
ARMS = ("vit", "winft-hard", "winft-soft")
MODEL = ["--preset", "nano", "--embed-dim", "64", "--depth", "4", "--num-heads", "4", "--no-bf16", "--no-progress",
         "--batch-size", "128", "--init", "mimetic", "--warmup-epochs", "0.5"]
DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {"train": ["--data", f"mnist:{MNIST}:train", "--img-size", "28", "--patch-size", "4", "--epochs", "20",
                        "--no-flip", "--data-seed", "0"],
              "window_data": f"mnist:{MNIST}:train:256", "test": f"mnist:{MNIST}:test"},
    "shapes": {"train": ["--data", "xvit-shapes:single", "--img-size", "64", "--patch-size", "8", "--epochs", "30",
                         "--train-size", "2500", "--val-size", "500", "--test-size", "1000",
                         "--token-loss", "1.0"],
               "window_data": "xvit-shapes:single:train:256", "test": None},
}
WINDOW_ARGS = ["--param", "erf.method=jacobian", "--param", "erf.probes=8", "--batch-size", "32"]


def run_dir(ds: str, arm: str, seed: int) -> Path:
    return OUT / ds / f"{arm}-s{seed}"


def window_file(ds: str) -> Path:
    return OUT / ds / "windows" / "window_mask.safetensors"


def finished(out: Path) -> bool:
    cfg = out / "config.json"
    return cfg.is_file() and "metrics" in json.loads(cfg.read_text())


def train_command(ds: str, arm: str, seed: int) -> list[str]:
    out = run_dir(ds, arm, seed)
    cmd = [*XVIT, "train", *DATASETS[ds]["train"], *MODEL, "--seed", str(seed), "--out", str(out)]
    if arm != "vit":
        cmd += ["--arch", "winft", "--model-arg", f"window_mask={window_file(ds)}",
                "--model-arg", f"mode={arm.split('-')[1]}"]
    if (out / "train_state.pt").is_file():
        cmd.append("--resume")
    return cmd


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "MPLBACKEND": "Agg"}


def window_command(ds: str) -> list[str]:
    return [*XVIT, "analyse", "erf", DATASETS[ds]["window_data"], "--model", str(run_dir(ds, "vit", 0)),
            "--out", str(window_file(ds).parent), *WINDOW_ARGS]


def done(job: tuple[str, str, int]) -> bool:
    ds, arm, seed = job
    return window_file(ds).is_file() if arm == "windows" else finished(run_dir(ds, arm, seed))


def ready(job: tuple[str, str, int]) -> bool:
    """Whether the job's inputs exist: the window estimate needs the baseline's seed-0 run, WinfT its windows."""
    ds, arm, _ = job
    if arm == "windows":
        return finished(run_dir(ds, "vit", 0))
    return arm == "vit" or window_file(ds).is_file()


def run_jobs(jobs: list[tuple[str, str, int]], parallel: int) -> None:
    """Run ``jobs`` (data set, arm or ``windows``, seed), ``parallel`` at a time, each as soon as its inputs exist;
    each writes its log beside its outputs."""
    pending = [j for j in jobs if not done(j)]
    running: list[tuple[tuple[str, str, int], subprocess.Popen, Any, float]] = []
    while pending or running:
        while len(running) < parallel:
            job = next((j for j in pending if ready(j)), None)
            if job is None:
                break
            pending.remove(job)
            ds, arm, seed = job
            out = window_file(ds).parent if arm == "windows" else run_dir(*job)
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / ("analyse.log" if arm == "windows" else "train.log"), "a")  # noqa: SIM115
            cmd = window_command(ds) if arm == "windows" else train_command(*job)
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            print(time.strftime("%H:%M:%S"), "start", *job, flush=True)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
            running.append((job, proc, log, time.perf_counter()))
        if not running:
            raise SystemExit(f"jobs {pending} wait for inputs that no job makes")
        time.sleep(5)
        for item in list(running):
            job, proc, log, t0 = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if job[1] == "windows" and proc.returncode == 0:
                    (window_file(job[0]).parent / "seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
                print(time.strftime("%H:%M:%S"), "done" if proc.returncode == 0 else f"FAILED ({proc.returncode})",
                      *job, flush=True)


def evaluate(ds: str, arm: str, seed: int) -> dict[str, Any]:
    """Top-1 on the data set's test split (MNIST: the fixed ``test`` partition; xvit-shapes: the trainer's test
    images), parameters and wall-clock per epoch of one finished run; cached in eval.json."""
    out = run_dir(ds, arm, seed)
    cached = out / "eval.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    import torch

    from xvit.data.sources import load_dataset
    from xvit.models import load_model, preprocessing_for

    cfg = json.loads((out / "config.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r["epoch_seconds"] for r in log if "epoch_seconds" in r]
    if DATASETS[ds]["test"] is None:
        top1, n = cfg["metrics"]["test_accuracy"], cfg["training"]["config"]["test_size"]
    else:
        torch.set_num_threads(1)
        model = load_model(str(out))
        prep = preprocessing_for(model)
        data = load_dataset(DATASETS[ds]["test"], size=tuple(prep.size))
        correct = 0
        with torch.no_grad():
            for start in range(0, len(data), 250):
                batch = data.load(range(start, min(start + 250, len(data))), prep)
                correct += int((model(batch.x).argmax(1) == batch.labels).sum())
        top1, n = correct / len(data), len(data)
    result = {"dataset": ds, "arm": arm, "seed": seed, "top1": top1, "test_images": n,
              "params": cfg["training"]["num_params"], "epochs": len(epochs),
              "epoch_seconds": statistics.mean(epochs), "wall_clock_seconds": cfg["training"]["wall_clock_seconds"]}
    if arm != "vit":
        from xvit.models import load_model

        result["mean_window"] = load_model(str(out)).mean_window_size()
    cached.write_text(json.dumps(result, indent=1) + "\n")
    return result


def summary() -> str:
    """The results as Markdown tables (finished runs only)."""
    lines = []
    for ds in DATASETS:
        lines += [f"\n**{ds}**\n", "| arm | runs | top-1 (mean ± std) | per seed | parameters | s / epoch | "
                  "wall-clock per run (s) | mean window (patches) |", "|---|---|---|---|---|---|---|---|"]
        for arm in ARMS:
            rows = [evaluate(ds, arm, s) for s in SEEDS if finished(run_dir(ds, arm, s))]
            if not rows:
                continue
            acc = [100 * r["top1"] for r in rows]
            std = statistics.stdev(acc) if len(acc) > 1 else float("nan")
            window = {"vit": "all", "winft-soft": "all (log-κ bias)"}.get(arm) or f"{rows[0]['mean_window']:.1f}"
            lines.append(f"| {arm} | {len(rows)} | {statistics.mean(acc):.2f} ± {std:.2f} | "
                         f"{', '.join(f'{a:.2f}' for a in acc)} | {rows[0]['params']:,} | "
                         f"{statistics.mean(r['epoch_seconds'] for r in rows):.1f} | "
                         f"{statistics.mean(r['wall_clock_seconds'] for r in rows):.0f} | {window} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (default: 2)")
    parser.add_argument("--summary", action="store_true", help="print the result tables and exit")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()
    if args.summary:
        print(summary())
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    jobs = [(ds, "vit", 0) for ds in args.datasets] + [(ds, "windows", 0) for ds in args.datasets]
    jobs += [(ds, arm, s) for s in SEEDS for arm in ARMS for ds in args.datasets if (arm, s) != ("vit", 0)]
    run_jobs(jobs, args.parallel)
    print(summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
