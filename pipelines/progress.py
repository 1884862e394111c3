"""A periodic progress line on stderr: units, pages, pages/s, quarantined, ETA."""

from __future__ import annotations

import sys
import time


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total_units: int | None, interval_s: float = 10.0, stream=None):
        self.total_units = total_units
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._last = 0.0
        self.units = 0
        self._printed_units = -1
        self.pages = 0
        self.quarantined = 0

    def update(self, pages: int, quarantined: int) -> None:
        self.units += 1
        self.pages += pages
        self.quarantined += quarantined
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._printed_units = self.units
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.units and self._printed_units != self.units:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self.start)
        rate = self.pages / elapsed
        total = "?" if self.total_units is None else self.total_units
        if self.units and self.total_units is not None:
            eta = _fmt_s(elapsed / self.units * (self.total_units - self.units))
        else:
            eta = "? (listing)"
        return (f"[pagemill] units {self.units}/{total} · pages {self.pages} · {rate:.1f} pages/s · "
                f"quarantined {self.quarantined} · elapsed {_fmt_s(elapsed)} · ETA {eta}")
