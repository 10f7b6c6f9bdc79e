"""Every script in examples/ runs, on a few images, and prints what it promises (so the examples never rot)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
N = "2"  # images per script: the whole set runs in well under a minute on two cores


def run(script: str, tmp_path: Path, *args: str) -> str:
    """Run ``examples/<script>`` with ``--n N --out tmp_path`` in a fresh interpreter; its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--n", N, "--out", str(tmp_path), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def number_after(text: str, label: str) -> float:
    match = re.search(re.escape(label) + r"\s*([-+0-9.e]+)", text)
    assert match, f"{label!r} not in the output:\n{text}"
    return float(match.group(1))


SCRIPTS = ("explain_timm_model.py", "explain_hf_model.py", "compare_methods.py", "evaluate_methods.py",
           "audit_spurious_cue.py")


def test_every_example_is_run_by_these_tests():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SCRIPTS)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs timm")
def test_timm_example_loads_the_bundled_weights_into_timm(tmp_path):
    out = run("explain_timm_model.py", tmp_path)
    assert "timm.models.vision_transformer.VisionTransformer with the bundled shapes-vit-tiny weights" in out
    assert number_after(out, "largest logit difference to xvit's own ViT:") < 1e-4
    assert 0 <= number_after(out, f"accuracy on {N} test images:") <= 1
    assert len(re.findall(r"^image \d+: true \w+ +predicted \w+", out, flags=re.M)) == int(N)
    assert (tmp_path / "timm_grid.png").stat().st_size > 0


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
def test_hf_example_explains_a_copy_of_the_bundled_model_like_the_original(tmp_path):
    out = run("explain_hf_model.py", tmp_path)
    assert "transformers.ViTForImageClassification with the bundled shapes-vit-tiny weights" in out
    assert number_after(out, "largest logit difference to xvit's own ViT:") < 1e-4
    for method in ("rollout", "grad_attention_rollout", "attnlrp"):
        assert float(re.search(rf"^{method} +largest map difference to xvit's own ViT: (\S+)$", out,
                               flags=re.M).group(1)) < 1e-4
    assert (tmp_path / "hf_grid.png").stat().st_size > 0


def test_compare_example_prints_a_row_per_method(tmp_path):
    out = run("compare_methods.py", tmp_path, "--methods", "random", "rollout", "attnlrp")
    for method in ("random", "rollout", "attnlrp"):
        row = re.search(rf"^{method} +([0-9.]+) +([0-9.]+) +([0-9.]+)$", out, flags=re.M)
        assert row, f"no row for {method}:\n{out}"
        ms, hit, energy = map(float, row.groups())
        assert ms > 0 and 0 <= hit <= 1 and 0 <= energy <= 1
    assert (tmp_path / "compare_grid.png").stat().st_size > 0


def test_evaluate_example_writes_a_summary_with_every_method(tmp_path):
    out = run("evaluate_methods.py", tmp_path)
    for method in ("rollout", "transformer_attribution", "attnlrp", "random"):
        assert re.search(rf"^\| {method}( \(chance\))? \|", out, flags=re.M), f"no summary row for {method}:\n{out}"
    for name in ("per_image.csv", "summary.md", "provenance.json"):
        assert (tmp_path / name).is_file(), name


def test_spurious_audit_example_shows_the_shortcut_and_the_audit(tmp_path):
    out = run("audit_spurious_cue.py", tmp_path)
    assert "other-class images with the marker" in out and "other-class images without the marker" in out
    for method in ("random", "rollout", "transformer_attribution", "attnlrp", "gradcam"):
        row = re.search(rf"^{method} +(\S+) +(\S+) +(\S+) +(\S+) +(\S+)$", out, flags=re.M)
        assert row, f"no audit row for {method}:\n{out}"
        share, chance = float(row.group(1)), float(row.group(2))
        assert 0 <= share <= 1 and 0 < chance < 1
    assert (tmp_path / "summary.md").is_file()
