"""Progress of long score() calls: shown when asked or for many masked forwards, quiet for short calls."""

import torch

from tests.tiny_models import make
from xvit.perturb import engine, score


def _inputs(masks=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=g)
    return x, torch.rand(masks, 32, 32, generator=g) > 0.5, torch.tensor([[0], [1]])


def test_progress_counts_every_masked_forward_when_asked(capsys):
    model = make("xvit")
    x, masks, targets = _inputs()
    shown = score(model, x, masks, targets, batch_size=5, progress=True)
    err = capsys.readouterr().err
    assert "masked forwards: done 12/12 input (100%)" in err
    torch.testing.assert_close(shown, score(model, x, masks, targets, batch_size=5, progress=False))
    assert capsys.readouterr().err == ""


def test_automatic_progress_needs_many_rows_and_a_long_call(capsys, monkeypatch):
    model = make("xvit")
    x, masks, targets = _inputs()
    score(model, x, masks, targets)  # 12 rows: below PROGRESS_ROWS
    monkeypatch.setattr(engine, "PROGRESS_ROWS", 10)
    score(model, x, masks, targets)  # enough rows, but done before PROGRESS_DELAY
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(engine, "PROGRESS_DELAY", 0.0)
    score(model, x, masks, targets, batch_size=4)
    assert "masked forwards: done 12/12 input" in capsys.readouterr().err
