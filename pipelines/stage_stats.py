"""Per-stage instrumentation of a run and the one-line bottleneck diagnosis.

Render and embed workers stamp their cumulative counters on each unit's marker row (the only
channel back from a streaming actor); the driver keeps the latest counters per worker and times
its own commits. The stage that limits a streaming run is the one that never waits: the highest
*utilisation* (busy / wall time of its workers). Its *capacity* (pages / busy seconds x workers)
is beside it, with how much more the other stages could take. (Capacities alone mislead when
stages share cores: every stage then looks slower than it is.)
"""

from __future__ import annotations

import time


class StageStats:
    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.workers: dict[str, dict[str, dict]] = {"render": {}, "embed": {}}
        self.commit = {"units": 0, "pages": 0, "busy_s": 0.0}
        self.start = clock()
        self._first: tuple[float, int] | None = None  # (time, pages) at the first commit
        self._first_arrival: float | None = None  # when the first unit reached the driver
        self._last: tuple[float, int] | None = None

    def observe(self, info: dict) -> None:
        for stage, key in (("render", "render_stats"), ("embed", "embed_stats")):
            s = info.get(key)
            if s:
                self.workers[stage][s["worker"]] = s

    def committed(self, pages: int, seconds: float) -> None:
        self.commit["units"] += 1
        self.commit["pages"] += pages
        self.commit["busy_s"] += seconds
        now = self.clock()
        if self._first is None:
            self._first = (now, self.commit["pages"])
            self._first_arrival = now - seconds
        self._last = (now, self.commit["pages"])

    def steady_pages_per_s(self) -> float | None:
        """Pages committed after the first unit, over the time since it: the rate once actors are
        up and models loaded (start-up is a fixed cost that a backfill amortises)."""
        if not self._first or not self._last or self._last[0] - self._first[0] <= 0:
            return None
        return (self._last[1] - self._first[1]) / (self._last[0] - self._first[0])

    def _commit_window(self, wall: float) -> float:
        """The driver's time since the first unit reached it: like the workers' wall time (from
        their set-up), it leaves out start-up, when there is nothing to commit yet."""
        if self._first_arrival is None or self._last is None:
            return wall
        return max(1e-9, self._last[0] - self._first_arrival)

    def summary(self) -> dict:
        wall = max(1e-9, self.clock() - self.start)
        out = {}
        for stage, workers in self.workers.items():
            if not workers:
                continue
            busy = sum(w["busy_s"] for w in workers.values())
            worker_wall = sum(w["wall_s"] for w in workers.values())
            pages = sum(w["pages"] for w in workers.values())
            s = {"workers": len(workers), "items": pages, "busy_s": round(busy, 3),
                 "items_per_busy_s": round(pages / busy, 2) if busy else None,
                 "capacity_pages_per_s": round(pages / busy * len(workers), 2) if busy else None,
                 "utilisation": round(busy / worker_wall, 3) if worker_wall else None,
                 "waiting_s": round(max(0.0, worker_wall - busy), 3)}
            if stage == "embed":
                forward = sum(w.get("forward_s", 0.0) for w in workers.values())
                batches = sum(w.get("batches", 0) for w in workers.values())
                s.update(accelerator_busy=round(forward / worker_wall, 3) if worker_wall else None,
                         forward_s=round(forward, 3), batches=batches,
                         mean_batch_pages=round(pages / batches, 2) if batches else None,
                         layouts_s=round(sum(w.get("layouts_s", 0.0) for w in workers.values()), 3))
            out[stage] = s
        c = self.commit
        if c["units"]:
            out["commit"] = {"workers": 1, "items": c["pages"], "busy_s": round(c["busy_s"], 3),
                             "items_per_busy_s": round(c["pages"] / c["busy_s"], 2) if c["busy_s"] else None,
                             "capacity_pages_per_s": round(c["pages"] / c["busy_s"], 2) if c["busy_s"] else None,
                             "utilisation": round(min(1.0, c["busy_s"] / self._commit_window(wall)), 3)}
            steady = self.steady_pages_per_s()
            out["steady_pages_per_s"] = round(steady, 2) if steady else None
            out["first_commit_s"] = round(self._first[0] - self.start, 3)
        return out


WHAT = {"render": "render (MuPDF, CPU)", "embed": "embed (model forward)", "commit": "commit (Parquet + Milvus, driver)"}


def bottleneck(stages: dict) -> str | None:
    stages = {k: v for k, v in stages.items() if isinstance(v, dict)}
    cap = {k: v["capacity_pages_per_s"] for k, v in stages.items() if v.get("capacity_pages_per_s")}
    util = {k: stages[k]["utilisation"] for k in cap if stages[k].get("utilisation") is not None}
    if len(util) < 2:
        return None
    slow = max(util, key=util.get)
    others = ", ".join(f"{k} busy {util[k]:.0%}" for k in util if k != slow)
    line = (f"bottleneck: {WHAT[slow]}, busy {util[slow]:.0%} of the run at {cap[slow]:.1f} pages/s "
            f"per busy second; {others}")
    if "embed" in stages and stages["embed"].get("accelerator_busy") is not None:
        line += f"; accelerator busy {stages['embed']['accelerator_busy']:.0%}"
    return line
