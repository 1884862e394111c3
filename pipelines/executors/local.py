"""The plain loop: the same stages and writer, one unit after another, in this process."""

from __future__ import annotations

import time
from collections.abc import Iterable

from operators.faults import checkpoint
from operators.render import units_table
from pipelines.executors.base import Executor, Pipeline, UnitTracker
from pipelines.out.units import WorkUnit

CHECKPOINT_AFTER = {"render": "rendered", "embed": "embedded"}


class LocalExecutor(Executor):
    name = "local"

    _ops: list = []

    def live_counters(self) -> dict:
        return {op.name: op.stats.get("pages", 0) for op in self._ops}

    def run(self, units: Iterable[WorkUnit], pipeline: Pipeline, tracker: UnitTracker, plan=None) -> dict:
        started = False
        ops = self._ops = [*pipeline.stages, pipeline.writer]
        try:
            for unit in units:
                if not started:  # load the models only when there is work
                    for op in ops:
                        op.setup()
                    started = True
                    # One process runs every stage in turn: each stage's wall time is the loop's
                    # (from the end of set-up), so its utilisation is its share of the loop, as an
                    # actor's is its share of its own time on Ray.
                    loop_start, loop_start_at = time.perf_counter(), time.time()
                    for op in ops:
                        op.counters.started, op.counters.started_at = loop_start, loop_start_at
                table = units_table([(unit.unit_id, unit.docs)], unit.may_hold_fn())
                for op in pipeline.stages:
                    table = op(table)
                    if op.name in CHECKPOINT_AFTER:
                        checkpoint(CHECKPOINT_AFTER[op.name])
                tracker.add(pipeline.writer(table))
            if started and tracker.on_stats:  # every stage's counters at the end of the loop
                tracker.on_stats([{op.name: op.counters.snapshot()} for op in ops])
        finally:
            for op in ops:
                op.close()
        if tracker.pending:
            raise RuntimeError(f"{tracker.pending} units ended incomplete (pages lost between stages)")
        return {"write_placement": "driver"} if started else {}
