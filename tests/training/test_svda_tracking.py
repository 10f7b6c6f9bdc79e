"""Tracking the SVDA indicators during training (analysis-methods.md §2.3): log format, resume, plots, CLI flag."""

import csv
import json

import pytest

from xvit.cli.train import command_line
from xvit.training import Callback, TrainConfig, TrainConfigError, train
from xvit.training.svda_tracking import COLUMNS, LOG_FILE, read_tracking


def _config(tmp_path, **kw):
    base = dict(data="xvit-shapes:single", out=str(tmp_path / "run"), arch="svda", preset="nano", embed_dim=32,
                depth=2, num_heads=2, img_size=32, patch_size=8, epochs=2, train_size=64, val_size=40,
                test_size=16, batch_size=32, warmup_epochs=0.5, progress=False, track_indicators=True,
                track_probe_size=24)
    return TrainConfig(**{**base, **kw})


class _Stop(Callback):
    """Interrupts the run at the end of epoch ``at`` (before that epoch's state is saved)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_epoch_end(self, epoch, model, logs):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_log_is_long_format_per_epoch_layer_head_and_indicator(tmp_path):
    train(_config(tmp_path))
    run = tmp_path / "run"
    with (run / LOG_FILE).open(newline="") as f:
        reader = csv.reader(f)
        assert tuple(next(reader)) == COLUMNS
        rows = list(reader)
    indicators = {"spectral_entropy", "effective_rank", "spectral_sparsity", "angular_alignment", "selectivity",
                  "robustness_input", "robustness_spectrum"}
    assert len(rows) == 3 * 2 * 2 * len(indicators)  # epochs 0 (step 0), 1, 2 x layers x heads x indicators
    assert {r[3] for r in rows} == indicators and {r[5] for r in rows} == {"svda-ind-p1"}
    parsed = read_tracking(run / LOG_FILE)
    assert sorted({r["epoch"] for r in parsed}) == [0, 1, 2]
    assert {(r["layer"], r["head"]) for r in parsed} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert all(0 <= r["value"] <= 1 for r in parsed if r["indicator"] in ("spectral_entropy", "selectivity"))
    assert (run / "indicators_curves.png").stat().st_size > 0 and (run / "indicators_heatmaps.png").stat().st_size
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert set(log[-1]["indicators"]) == indicators
    assert log[-1]["train_reg_loss"] > 0  # SVDA's orthonormality penalty joined the loss


def test_resumed_run_keeps_the_earlier_rows_once(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(_config(tmp_path, epochs=3), callbacks=[_Stop(2)])
    log = tmp_path / "run" / LOG_FILE
    assert sorted({r["epoch"] for r in read_tracking(log)}) == [0, 1]  # epoch 2 was interrupted
    with log.open("a", newline="") as f:  # a row of the epoch that will be redone must not survive
        csv.writer(f).writerow((2, 0, 0, "selectivity", 0.5, "svda-ind-p1"))
    train(_config(tmp_path, epochs=3, resume=True))
    rows = read_tracking(tmp_path / "run" / LOG_FILE)
    counts = {e: sum(r["epoch"] == e for r in rows) for e in (0, 1, 2, 3)}
    assert counts == {e: 2 * 2 * 7 for e in (0, 1, 2, 3)}


def test_plain_vit_is_tracked_without_the_spectrum_robustness(tmp_path):
    train(_config(tmp_path, arch="vit", epochs=1))
    names = {r["indicator"] for r in read_tracking(tmp_path / "run" / LOG_FILE)}
    assert "robustness_input" in names and "robustness_spectrum" not in names


def test_option_is_validated_and_written_in_the_command(tmp_path):
    with pytest.raises(TrainConfigError, match="track_probe_size"):
        _config(tmp_path, track_probe_size=0).validate()
    cmd = command_line(_config(tmp_path, track_probe_size=64))
    assert "--track-indicators" in cmd and "--track-probe-size 64" in cmd
