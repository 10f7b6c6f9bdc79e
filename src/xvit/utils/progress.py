"""Progress of long work on stderr: a bar on a terminal, otherwise a one-line status (done/total, rate, ETA) at
most every ``interval`` seconds and at the end, so CI logs and notebooks see it too and no minute passes silently.

One :class:`Progress` per job, used as a context manager. A progress created with ``enabled=None`` ("auto") stays
quiet while another one is open in the same thread, so work nested in a job (e.g. the masked forwards of RISE
inside ``xvit evaluate``) does not interleave its own lines with the job's.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import weakref
from typing import Any, TextIO

__all__ = ["Progress", "format_duration"]

_open = threading.local()  # .depth: the number of shown Progress objects open in this thread


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``; ``?`` for an unknown (infinite or NaN) duration."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Progress of one job: ``update(n)`` after each piece of work, ``close()`` (or the ``with`` block) at the end.

    Args:
        total: the amount of work (None: unknown, no percentage or ETA).
        desc: what is running, the line's prefix.
        unit: the unit of ``total``.
        enabled: True shows it, False shows nothing, None shows it unless another progress is open in this thread.
        initial: work already done (e.g. resumed from saved state); not counted in the rate.
        file: where it goes (default: ``sys.stderr`` at creation).
        interval: seconds between status lines when ``file`` is not a terminal; also the heartbeat: a line (or a
            bar refresh) comes at least this often (at most once a second) even when no work finishes.
        delay: nothing is shown before this many seconds have passed, so short jobs stay silent.
        bar: a tqdm bar (True) or status lines (False); None: a bar exactly when ``file`` is a terminal.
        leave: keep the bar (and print the final status line) when done; False for steps of a job that reports
            its own end (e.g. training epochs, which ``ConsoleLog`` sums up).
    """

    def __init__(self, total: int | None, *, desc: str = "", unit: str = "it", enabled: bool | None = True,
                 initial: int = 0, file: TextIO | None = None, interval: float = 10.0, delay: float = 0.0,
                 bar: bool | None = None, leave: bool = True) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = self._initial = int(initial)
        self.postfix = ""
        self.file = sys.stderr if file is None else file
        self.interval, self.delay, self.leave = float(interval), float(delay), leave
        self._start = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._owner = threading.get_ident()
        depth = getattr(_open, "depth", 0)
        self.shown = bool(enabled) if enabled is not None else depth == 0
        self._bar: Any = None
        self._thread: threading.Thread | None = None
        if not self.shown:
            return
        _open.depth = depth + 1
        if bar if bar is not None else _is_terminal(self.file):
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.file, dynamic_ncols=True,
                             delay=delay, leave=leave)
        # the heartbeat holds only a weak reference, so a progress that is dropped without close() stops beating
        self._thread = threading.Thread(target=_heartbeat, args=(weakref.ref(self), self._stop, self.interval),
                                        name="xvit-progress", daemon=True)
        self._thread.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units of finished work."""
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            elif self.shown and time.monotonic() - self._last >= self.interval:
                self._print()

    def set_postfix(self, text: str) -> None:
        """A short note shown after the numbers (e.g. the method running)."""
        with self._lock:
            self.postfix = text
            if self._bar is not None:
                self._bar.set_postfix_str(text, refresh=False)

    def status(self, final: bool = False) -> str:
        """The one-line status: ``desc: done/total unit (pct) | rate | elapsed | ETA | postfix``."""
        elapsed = time.monotonic() - self._start
        rate = (self.done - self._initial) / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"
        if self.total:
            count += f" ({100 * self.done / self.total:.0f}%)"
        parts = [count, f"{rate:.3g} {self.unit}/s", f"elapsed {format_duration(elapsed)}"]
        if final:
            parts[0] = "done " + count
        elif self.total is not None:
            left = (self.total - self.done) / rate if rate > 0 else math.inf
            parts.append(f"ETA {format_duration(left)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc + ': ' if self.desc else ''}{' | '.join(parts)}"

    def _print(self, final: bool = False) -> None:  # the caller holds the lock
        now = time.monotonic()
        if now - self._start < self.delay:
            return
        print(self.status(final), file=self.file, flush=True)
        self._last = now

    def _beat(self) -> None:
        """A status line (or a bar refresh) if none came for ``interval`` seconds (at most one a second)."""
        with self._lock:
            if time.monotonic() - self._last < max(self.interval, 1.0):
                return
            if self._bar is not None:
                self._bar.refresh()
                self._last = time.monotonic()
            else:
                self._print()

    def close(self) -> None:
        """Stop the heartbeat and show the final status (once the ``delay`` has passed); safe to call twice."""
        if not self.shown or self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            if self._bar is not None:
                self._bar.close()
            elif self.leave:
                self._print(final=True)
        if threading.get_ident() == self._owner:  # another thread's count is not ours to change
            _open.depth = getattr(_open, "depth", 1) - 1

    def __del__(self) -> None:
        if getattr(self, "_stop", None) is not None:
            self._stop.set()


def _heartbeat(ref: weakref.ref[Progress], stop: threading.Event, interval: float) -> None:
    while not stop.wait(min(max(interval, 0.1), 1.0)):
        progress = ref()
        if progress is None:
            return
        progress._beat()
        del progress


def _is_terminal(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
