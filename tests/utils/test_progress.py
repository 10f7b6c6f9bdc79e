"""Progress: a bar on a terminal, periodic status lines elsewhere, a heartbeat, quiet nesting."""

import io
import threading
import time

import pytest

from xvit.utils.progress import Progress, format_duration


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_lines_are_rate_limited_and_the_last_one_reports_the_total():
    out = io.StringIO()
    with Progress(100, desc="job", unit="img", file=out, interval=3600) as bar:
        for _ in range(10):
            bar.update(10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("job: done 100/100 img (100%) | ")
    assert "img/s" in lines[0] and "elapsed" in lines[0]


def test_a_line_comes_at_least_every_interval_even_without_updates():
    out = io.StringIO()
    with Progress(10, desc="slow", file=out, interval=1.0) as bar:
        bar.update(2)
        bar.set_postfix("rollout")
        time.sleep(2.6)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3, lines  # heartbeats (about 1 s and 2 s) while nothing finished, then the final line
    assert lines[0].startswith("slow: 2/10 it (20%)") and "ETA" in lines[0] and lines[0].endswith("rollout")
    assert lines[-1].startswith("slow: done 2/10")
    time.sleep(1.2)
    assert len(out.getvalue().splitlines()) == len(lines)  # closed: the heartbeat has stopped


def test_a_terminal_gets_a_bar_and_disabled_progress_prints_nothing():
    tty = Tty()
    with Progress(4, desc="bar", file=tty, interval=3600) as bar:
        bar.update(4)
    assert "bar: 100%" in tty.getvalue() and "4/4" in tty.getvalue()
    quiet = io.StringIO()
    with Progress(4, file=quiet, enabled=False, interval=0.01) as bar:
        bar.update(4)
        time.sleep(0.05)
    assert quiet.getvalue() == ""


def test_delay_keeps_short_jobs_silent():
    out = io.StringIO()
    with Progress(4, file=out, delay=60, interval=0.01) as bar:
        bar.update(4)
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_auto_progress_is_quiet_inside_another_and_shows_again_after_it():
    outer_out, inner_out = io.StringIO(), io.StringIO()
    with Progress(1, file=outer_out, interval=3600):
        with Progress(1, file=inner_out, enabled=None) as inner:
            inner.update(1)
        assert not inner.shown and inner_out.getvalue() == ""
        other_thread = []
        t = threading.Thread(target=lambda: other_thread.append(Progress(1, file=io.StringIO(), enabled=None)))
        t.start()
        t.join()
        assert other_thread[0].shown  # nesting is per thread
        other_thread[0].close()
    with Progress(1, file=inner_out, enabled=None) as after:
        after.update(1)
    assert after.shown and "done 1/1" in inner_out.getvalue()


def test_unknown_total_and_resumed_work():
    out = io.StringIO()
    with Progress(None, desc="stream", file=out, interval=3600) as bar:
        bar.update(3)
    assert out.getvalue().startswith("stream: done 3 it | ")
    out = io.StringIO()
    with Progress(10, file=out, initial=5, interval=3600) as bar:
        bar.update(1)
    assert "done 6/10 it (60%)" in out.getvalue()


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (65, "1m05s"), (7500, "2h05m"), (float("inf"), "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
