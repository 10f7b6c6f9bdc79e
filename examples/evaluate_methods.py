"""Evaluate attribution methods with explanation-quality metrics, as ``xvit evaluate`` does, from Python.

The run explains synthetic test images (xvit-shapes ``single``, with object masks) with each method and scores the
maps with localisation metrics (segmentation against the object mask, pointing game) and a faithfulness metric
(deletion and insertion: the class probability as the most relevant pixels are removed or added). ``random`` is
the chance row. It writes per-image scores, a summary, curves and provenance to ``--out`` and prints the summary.
Run it again with the same settings and it resumes from the saved chunks.

    python examples/evaluate_methods.py --n 32 --out out/examples/evaluate
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xvit.evaluate import evaluate

METHODS = ("random", "rollout", "transformer_attribution", "attnlrp")
METRICS = ("segmentation", "pointing_game", "deletion_insertion")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="test images (default: 32)")
    parser.add_argument("--out", type=Path, default=Path("out/examples/evaluate"), help="output folder")
    args = parser.parse_args()

    result = evaluate("shapes-vit-tiny", f"xvit-shapes:single:test:{args.n}", methods=METHODS, metrics=METRICS,
                      out_dir=args.out, batch_size=min(args.n, 16), steps=16)
    print(result.to_markdown())
    print(f"per-image scores, summary, curves and provenance: {result.out_dir}")


if __name__ == "__main__":
    main()
