"""What every stage is: a name, whether it runs on an accelerator, and its worker's counters.

A stage is a plain class: construction stores configuration (cheap, picklable), ``setup()`` loads
what a worker needs once (a model, a client, a child process), ``__call__(batch)`` turns one
``pyarrow.Table`` into another, ``close()`` lets go. Its counters are cumulative per worker and
travel back to the driver on the batches (``schema.stamp``)."""

from __future__ import annotations

import os
import time


class StageCounters:
    """Cumulative counters of one worker of a stage; stamped on unit markers for the driver."""

    def __init__(self, stage: str):
        self.stage = stage
        self.stats: dict = {"pages": 0, "batches": 0, "busy_s": 0.0, "cpu_s": 0.0}
        self.started: float | None = None
        self.started_at: float | None = None  # the same moment on the wall clock (the driver's window ends at its own)
        self.labels: dict = {}  # set by the executor (e.g. the Ray node id)

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            self.started_at = time.time()

    def cpu_time(self) -> float:
        """CPU seconds this worker has used: its process, every thread (a stage is a process of its
        own on Ray; in the local loop the stages take turns). Stages with a child add its time."""
        return time.process_time()

    def mark(self) -> tuple[float, float]:
        """The wall and CPU clocks now, for ``busy``."""
        return time.perf_counter(), self.cpu_time()

    def busy(self, since: tuple[float, float]) -> None:
        """Work since ``mark()``: wall seconds (``busy_s``, waiting on a store included) and CPU
        seconds (``cpu_s``, what planning counts cores by)."""
        self.stats["busy_s"] += time.perf_counter() - since[0]
        self.stats["cpu_s"] += self.cpu_time() - since[1]

    def snapshot(self) -> dict:
        wall = time.perf_counter() - self.started if self.started else 0.0
        return {"worker": f"{os.uname().nodename}:{os.getpid()}", **self.labels, **self.stats, "wall_s": round(wall, 4),
                "started_at": self.started_at}


class Stage:
    name = "stage"
    accelerator = False  # runs a model: the executor gives it the GPUs (or a share)
    extra_counters: dict = {}  # counters of this stage beyond pages, batches and busy time

    def __init__(self):
        self.counters = StageCounters(self.name)
        # (a counter may be a dict, by layout: each worker its own)
        self.counters.stats.update({k: dict(v) if isinstance(v, dict) else v for k, v in self.extra_counters.items()})

    @property
    def stats(self) -> dict:
        return self.counters.stats

    def setup(self) -> None:
        pass

    def close(self) -> None:
        pass
