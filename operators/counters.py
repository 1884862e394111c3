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
        self.stats: dict = {"pages": 0, "batches": 0, "busy_s": 0.0}
        self.started: float | None = None
        self.started_at: float | None = None  # the same moment on the wall clock (the driver's window ends at its own)
        self.labels: dict = {}  # set by the executor (e.g. the Ray node id)

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            self.started_at = time.time()

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
        self.counters.stats.update(self.extra_counters)

    @property
    def stats(self) -> dict:
        return self.counters.stats

    def setup(self) -> None:
        pass

    def close(self) -> None:
        pass
