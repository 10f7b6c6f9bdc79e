"""The training progress: status lines with steps, loss and accuracy when stderr is not a terminal."""

from types import SimpleNamespace

from xvit.training.callbacks import ProgressBar


def _epochs(bar, epochs=2, steps=3):
    bar.on_train_start(None, SimpleNamespace(epochs=epochs), {"steps_per_epoch": steps})
    for epoch in range(1, epochs + 1):
        bar.on_epoch_start(epoch, None)
        for step in range(steps):
            bar.on_step_end(step, None, {"loss": 1.0 / (step + 1), "acc": 0.25 * step, "lr": 1e-3})
        bar.on_epoch_end(epoch, None, {})


def test_progress_bar_prints_steps_loss_and_accuracy_off_a_terminal(capsys):
    _epochs(ProgressBar(interval=0))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6  # one per step at interval 0; the epoch's end is ConsoleLog's line
    assert lines[0].startswith("epoch 1/2: 1/3 step (33%)") and lines[0].endswith("loss 1.0000 acc 0.000")
    assert lines[5].startswith("epoch 2/2: 3/3 step (100%)") and lines[5].endswith("loss 0.3333 acc 0.500")


def test_progress_bar_is_rate_limited(capsys):
    _epochs(ProgressBar(interval=3600))
    assert capsys.readouterr().err == ""
