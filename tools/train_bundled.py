"""Retrain the bundled xvit-shapes models with their recipe (each card's "Training notes" say how it was chosen):
a resumable driver.

    OMP_NUM_THREADS=2 nohup .venv/bin/python tools/train_bundled.py shapes-vit-tiny > runs/bundled.log 2>&1 &

Each model is one ``xvit train`` run in ``runs/bundled/NAME``: the 128-wide, 6-block ViT with token labelling and
mimetic initialisation, 60 epochs at 80 px, then 80 at 112 px (140 x 100 steps of 64 fresh images, about 75 minutes
on 2 cores). Rerunning the command resumes an unfinished run (``--resume``) and skips a finished one. ``--install``
copies a finished run into ``src/xvit/assets/models/NAME`` and writes its card there (``xvit card``, accuracy
measured on 2,000 fresh test images; a hand-written ``TRAINING_NOTES.md`` in that folder is kept and becomes part of
the card). The SVDA model is installed by ``tools/svda_experiment.py bundle``, which also appends its indicators to
the card.

The control of the spurious-marker audit is ``shapes-vit-tiny`` itself: the same recipe on images that never
carry the marker.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "bundled"
ASSETS = ROOT / "src" / "xvit" / "assets" / "models"
MAX_BYTES = 10_000_000

RECIPE = ["--preset", "tiny", "--embed-dim", "128", "--depth", "6", "--num-heads", "4", "--init", "mimetic",
          "--epochs", "140", "--low-res-size", "80", "--low-res-epochs", "60", "--train-size", "6400",
          "--val-size", "500", "--batch-size", "64", "--lr", "1e-3", "--warmup-epochs", "2", "--token-loss", "1.0",
          "--seed", "0", "--no-progress"]
MODELS: dict[str, dict[str, object]] = {
    "shapes-vit-tiny": {"data": "xvit-shapes:single", "arch": [], "target": 0.97},
    # With the training split's default marker statistics (90 % of circles, 2 % of the others) the accurate model
    # learns to overrule the marker: after 98 of 140 epochs 87.2 % top-1 without markers, but only 6.0 % of 218
    # marked non-circles called circle (500 fresh test images each). Marking no other class leaves the marker
    # nothing to overrule it in training (issue 12: >= 80 % of marked non-circles called circle).
    # Its card checks the target against the accuracy without the marker (issue 12: >= 90 %).
    "shapes-vit-tiny-spurious": {"data": "xvit-shapes:spurious:marker=exclusive", "arch": [], "target": 0.90},
    "shapes-vit-tiny-svda": {"data": "xvit-shapes:single", "arch": ["--arch", "svda"], "target": None},
}


def _finished(run: Path) -> bool:
    return (run / "model.safetensors").is_file() and (run / "config.json").is_file()


def _run_or_resume(command: list[str], run: Path) -> None:
    """Run one training command unless ``run`` is finished; continue an interrupted one with ``--resume``."""
    if _finished(run):
        print(f"{run.relative_to(ROOT)}: finished, skipped", flush=True)
        return
    command = command + (["--resume"] if (run / "train_state.pt").is_file() else [])
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def train(name: str) -> Path:
    """Train ``name`` (skipped when finished, resumed when interrupted); its run folder."""
    spec = MODELS[name]
    run = RUNS / name
    _run_or_resume(["xvit", "train", "--data", str(spec["data"]), *RECIPE, *spec["arch"],  # type: ignore[misc]
           "--out", str(run.relative_to(ROOT))], run)
    return run


def copy_run(run: Path, dest: Path) -> int:
    """Copy a finished run's checkpoint and log into ``dest`` (other files there, e.g. ``TRAINING_NOTES.md``, stay);
    its weights' size in bytes, which must stay under the 10 MB limit of bundled models."""
    dest.mkdir(parents=True, exist_ok=True)
    for file in ("model.safetensors", "config.json", "log.jsonl"):
        shutil.copy2(run / file, dest / file)
    size = (dest / "model.safetensors").stat().st_size
    if size >= MAX_BYTES:
        raise SystemExit(f"{dest / 'model.safetensors'} is {size} bytes, over the 10 MB limit of bundled models.")
    return size


def install(name: str, run: Path) -> None:
    """Copy a finished run into the bundled models and write its card there."""
    if name == "shapes-vit-tiny-svda":
        subprocess.run([sys.executable, "tools/svda_experiment.py", "bundle", "--source", str(run)], cwd=ROOT,
                       check=True)
        return
    dest = ASSETS / name
    copy_run(run, dest)
    target = MODELS[name]["target"]
    subprocess.run(["xvit", "card", str(dest.relative_to(ROOT)), "--name", name,
                    *(["--target", str(target)] if target is not None else [])], cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=sorted(MODELS))
    parser.add_argument("--install", action="store_true",
                        help="copy finished runs into the bundled models and write their cards")
    args = parser.parse_args()
    for name in args.models:
        run = train(name)
        if args.install:
            install(name, run)


if __name__ == "__main__":
    main()
