"""What every executor does: run the stages over the work units, the writers last, and hand the
writers' small results back to the driver, which commits each unit once all of it is written.

A pipeline is a list of stage objects (``RenderPages``, ``EmbedPages``, ``EmbedSinglePages``,
``EmbedText``, ``EncodePages``; cheap to construct, picklable, loaded in ``setup``) and a writer
(``PagesWriter``). The executor runs them (in this process, or as Ray actor pools) and feeds the
writers' results to a ``UnitTracker``, whose ``on_unit(unit_id, info, parts)`` runs in the driver
when a unit is complete. Committing is the caller's business.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from operators import schema as S
from operators.writer import PART, STATS, UNIT
from pipelines.out.units import WorkUnit

OnUnit = Callable[[str, dict, list[dict]], None]


class IncompleteUnits(RuntimeError):
    """The run ended with units whose pages did not all reach a writer."""


@dataclass
class Pipeline:
    """The stages of a run in order, and the writer that ends it."""

    stages: list
    writer: object
    batch_sizes: dict[str, int | None] = field(default_factory=dict)  # rows per call, by stage name

    def batch_size(self, stage) -> int | None:
        return self.batch_sizes.get(stage.name)


class UnitTracker:
    """Collects write results by unit. A unit is complete when the result carrying its marker
    (its documents and how many pages each rendered) has arrived and every one of those pages is
    accounted for, written or failed. A page reported twice is an error, never a silent duplicate."""

    def __init__(self, on_unit: OnUnit, on_part: Callable[[dict], None] | None = None,
                 on_stats: Callable[[list[dict]], None] | None = None):
        self.on_unit = on_unit
        self.on_part = on_part
        self.on_stats = on_stats
        self._parts: dict[str, list[dict]] = {}
        self._info: dict[str, dict] = {}
        self.committed = 0

    def add(self, results: pa.Table) -> None:
        touched = []
        for unit_id, kind, raw in zip(results[S.UNIT_ID].to_pylist(), results[S.KIND].to_pylist(),
                                      results["result"].to_pylist()):
            res = json.loads(raw)
            if kind == STATS:
                if self.on_stats:
                    self.on_stats(res["reports"])
                continue
            if kind == PART:
                self._parts.setdefault(unit_id, []).append(res)
                if self.on_part:
                    self.on_part(res)
            elif kind == UNIT:
                self._info[unit_id] = res["info"]
                self._parts.setdefault(unit_id, [])
            touched.append(unit_id)
        for unit_id in dict.fromkeys(touched):
            if self._complete(unit_id):
                info, parts = self._info.pop(unit_id), self._parts.pop(unit_id)
                self.on_unit(unit_id, info, parts)
                self.committed += 1

    def _complete(self, unit_id: str) -> bool:
        info = self._info.get(unit_id)
        if info is None:
            return False
        seen: dict[str, int] = {}
        for p in self._parts.get(unit_id, []):
            for uri, n in p["docs"].items():
                seen[uri] = seen.get(uri, 0) + n
            for q in p["failed"]:
                seen[q["source_uri"]] = seen.get(q["source_uri"], 0) + 1
        done = True
        for d in info["docs"]:
            n = seen.get(d["uri"], 0)
            if n > d["n_pages"]:
                raise RuntimeError(f"unit {unit_id}: {n} pages of {d['uri']} were written, but it has {d['n_pages']}: "
                                   f"a page was written twice (the unit stays uncommitted)")
            done &= n == d["n_pages"]
        return done

    @property
    def pending(self) -> int:
        return len(self._parts)


class Executor:
    name = "base"

    def run(self, units: Iterable[WorkUnit], pipeline: Pipeline, tracker: UnitTracker, plan=None) -> dict:
        """Process ``units`` (or the plan file ``plan``, where the executor streams from one);
        return executor-level stats for the summary."""
        raise NotImplementedError

    tasks_in_driver = True  # run_task runs in this process

    def starting(self) -> str:
        """What starts when the work does, in words (for the line before a long start-up)."""
        return "the stages in this process (each loads its model with the first unit)"

    def feed(self, units: Iterable[WorkUnit], out, run_id: str, listed: Callable[[int], None],
             say: Callable[[str], None], models: str = "") -> tuple[Iterable[WorkUnit], object | None]:
        """What ``run`` takes: (units, plan file). This process' version streams the units as
        they are planned, says what starts before the first, and calls ``listed(units)`` once
        the listing is exhausted."""
        def announced():
            n = 0
            for unit in units:
                if not n:
                    say(f"starting: {self.starting()}; models: {models}")
                n += 1
                yield unit
            listed(n)

        return announced(), None

    def live_counters(self) -> dict:
        """Pages each stage's workers have handled so far (for the heartbeat)."""
        return {}

    def holder_identity(self) -> dict:
        """What the run lock records about where this driver runs, beyond host and pid (its Ray
        job); {} here."""
        return {}

    def run_task(self, fn, *args):
        """Run ``fn(*args)`` where the data lives (a worker for Ray; here for the local
        executor) and return its (small) result: rewrites of older shards and other maintenance
        that must happen in commit order."""
        return fn(*args)

    def map_items(self, op, keys: list[str]):
        """Run a per-item stage (``AugmentShards``: one shard key per call) over ``keys``; yield
        (key, new key, pages, result JSON) per item as results come. This process' version: in order."""
        op.setup()
        try:
            for key in keys:
                out = op(pa.table({"key": [key]}))
                yield from zip(out["key"].to_pylist(), out["new_key"].to_pylist(), out["pages"].to_pylist(),
                              out["result"].to_pylist())
        finally:
            op.close()

    def close(self) -> None:
        pass


# The CPU requests of pagemill's Ray executor (ray_executor.RayExecutor.resources): what a fleet
# node gives each stage by default, and what ``plan`` sizes a fleet's actors from.
READ_CPUS = 0.01  # a plan part is a small file: its read task must not starve the actor pools
MIN_RENDER_CPUS = 0.25  # what a CPU-only machine keeps for rendering when its model stages ask for more
HEADROOM_CPUS = 0.05  # per node, left free: pools are placed node by node, and a read task must still fit
MODEL_CPUS = {"gpu": 1.0, "sim": 0.25}  # the model stage's actor: a GPU's feeding core, or a sleeping simulation
ENCODE_CPUS = 0.5  # an encode actor, one per accelerator
WRITE_CPUS = 0.25  # a writer actor, one per two accelerators


def default_actors(cpus: float, gpus: int, nodes: int = 1, sim: bool = False) -> dict[str, int]:
    """Actors per stage that the Ray executor starts by default on ``cpus`` CPUs and ``gpus``
    accelerators (no ``--*-actors`` given, one model stage, writes on the workers): one model
    actor per accelerator, one encode actor per accelerator, a writer per two, and render actors
    on the whole CPUs left.

    >>> default_actors(16, 1), default_actors(2, 1, sim=True)["render"]
    ({'embed': 1, 'encode': 1, 'write': 1, 'render': 14}, 1)
    """
    gpus = max(1, int(gpus))
    writers = max(1, math.ceil(gpus / 2))
    used = READ_CPUS + gpus * MODEL_CPUS["sim" if sim else "gpu"] + gpus * ENCODE_CPUS + writers * WRITE_CPUS
    left = cpus - used - HEADROOM_CPUS * nodes
    return {"embed": gpus, "encode": gpus, "write": writers, "render": max(1, int(left))}
