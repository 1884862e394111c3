"""The heartbeat of a run: pages rendered, embedded and committed, rate and ETA, on a clock.

A line comes every ``interval_s`` whether or not a unit committed (a run of one big unit is not
silent for minutes): the workers' live counters (``live()``: the executor's, summed over its
workers) for what is in flight, the commits for what is done. On a terminal the line replaces
itself every second; in a log it is one line per interval. ``on_beat`` runs after each line (the
run's metrics: pipelines/ingest/metrics.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total_units: int | None, interval_s: float = 10.0, stream=None,
                 live: Callable[[], dict] | None = None, on_beat: Callable[[], None] | None = None):
        import sys

        self.total_units = total_units
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.live = live  # () -> {"render": pages, "embed": pages, ...}: the workers' counters
        self.on_beat = on_beat
        self.start = time.monotonic()
        self.units = 0
        self.pages = 0
        self.copied = 0  # duplicates' pages among them
        self.quarantined = 0
        self._first_commit: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.lines = 0

    # -- the clock ------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start the heartbeat (a daemon thread); ``finish`` stops it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="pagemill-progress", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        tty = getattr(self.stream, "tty", False)
        tick = 1.0 if tty else self.interval_s
        while not self._stop.wait(tick):
            self._emit(live=tty)
            if self.on_beat is not None:
                try:
                    self.on_beat()
                except Exception:  # metrics that fail must not stop the heartbeat
                    pass

    def _emit(self, live: bool = False) -> None:
        try:
            counters = self.live() if self.live else {}
        except Exception:  # a counter service that is gone must not stop the run
            counters = {}
        line = self.line(counters=counters)
        with self._lock:
            if live and hasattr(self.stream, "live"):
                self.stream.live(line)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()
            self.lines += 1

    def update(self, pages: int, quarantined: int, copied: int = 0) -> None:
        """A unit committed (``copied``: its duplicates' pages, neither rendered nor embedded)."""
        with self._lock:
            self.units += 1
            self.pages += pages
            self.copied += copied
            self.quarantined += quarantined
            if self._first_commit is None:
                self._first_commit = time.monotonic()

    def finish(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.units:
            self._emit()

    def rate(self, now: float | None = None) -> float:
        """Pages committed per second since the start."""
        return self.pages / max(1e-9, (now or time.monotonic()) - self.start)

    # -- the line -------------------------------------------------------------------------------

    def line(self, now: float | None = None, counters: dict | None = None) -> str:
        now = now or time.monotonic()
        elapsed = max(1e-9, now - self.start)
        total = "?" if self.total_units is None else self.total_units
        flow = ""
        if counters:
            # The workers report every second and the commits come later still, so a counter can
            # lag the one after it: a page committed was embedded, a page embedded was rendered.
            embedded = max(counters.get("embed", 0), self.pages - self.copied)
            shown = {"render": max(counters.get("render", 0), embedded), "embed": embedded}
            flow = "".join(f" · {label} {shown[stage]}" for stage, label in
                           (("render", "rendered"), ("embed", "embedded")) if stage in counters)
        rate = self.rate(now)
        if self.units and self.total_units is not None and self._first_commit is not None:
            per_unit = (now - self.start) / self.units
            eta = _fmt_s(per_unit * max(0, self.total_units - self.units))
        else:
            eta = "?"
        return (f"[pagemill] {_fmt_s(elapsed)}{flow} · committed {self.pages} pages (units {self.units}/{total}) · "
                f"{rate:.1f} pages/s · quarantined {self.quarantined} · ETA {eta}")
