"""Per-stage instrumentation of a run and the one-line bottleneck diagnosis.

Every worker of every stage (render, the model stages, encode, write) stamps its cumulative
counters on each unit's marker row (the only channel back from a streaming actor that needs no
service); the driver keeps the latest counters per worker and times its own commits (the ledger
records). A worker's wall time counts from the end of its set-up (a model load is start-up, not
work), and the driver's from the first unit's arrival; every window ends at the end of the run
(a stage that finished its last batch early was idle since). The stage that limits a streaming run is
the one that never waits: the highest *utilisation* (busy / wall time of its workers). Its
*capacity* (pages / busy seconds x workers) is beside it. (Capacities alone mislead when stages
share cores: every stage then looks slower than it is.)
"""

from __future__ import annotations

import time

STAGES = ("render", "embed", "embed_sv", "embed_text", "encode", "write")
MODEL_STAGES = ("embed", "embed_sv", "embed_text")
WHAT = {"render": "render (MuPDF, CPU)", "embed": "embed (model forward)", "embed_sv": "embed_sv (single-vector model)",
        "embed_text": "embed_text (text model)", "encode": "encode (pooling and encodings, CPU)",
        "write": "write (Parquet + vector store)", "commit": "commit (ledger, driver)"}


class StageStats:
    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.workers: dict[str, dict[str, dict]] = {s: {} for s in STAGES}
        self.commit = {"units": 0, "pages": 0, "busy_s": 0.0}
        self.start = clock()
        self._first: tuple[float, int] | None = None  # (time, pages) at the first commit
        self._first_arrival: float | None = None  # when the first unit reached the driver
        self._last: tuple[float, int] | None = None
        self._commits_after_first = 0
        self._store_rows: dict[str, int] = {}
        self._delete_calls = 0
        self._bytes: dict[str, int] = {}
        self.upsert_path: str | None = None

    def begin(self) -> None:
        """The run's stages start now (the origin of ``first_commit_s``, as of the run's ``run_s``)."""
        self.start = self.clock()

    def observe(self, reports: list[dict]) -> None:
        """Workers' cumulative counters ({stage: counters}); the latest report of a worker wins
        (reports can arrive out of order: the one with the longest wall time is the latest)."""
        for report in reports:
            for stage, s in report.items():
                if stage in self.workers and s:
                    old = self.workers[stage].get(s["worker"])
                    if old is None or s.get("wall_s", 0) >= old.get("wall_s", 0):
                        self.workers[stage][s["worker"]] = s

    def wrote(self, part: dict) -> None:
        """A writer's result for part of a unit: the store's rows, deletes, bytes."""
        store = part.get("store") or {}
        if store.get("path") != "bulk":  # (rows staged for a bulk import count when imported)
            for c, n in store.get("rows", {}).items():
                self._store_rows[c] = self._store_rows.get(c, 0) + n
            if store.get("path"):
                self.upsert_path = store["path"]
        self._delete_calls += part.get("delete_calls", 0)
        for f in part["files"]:
            prefix = f["key"].split("/", 1)[0]
            self._bytes[prefix] = self._bytes.get(prefix, 0) + f["bytes"]

    def store_rows(self) -> dict[str, int]:
        return dict(self._store_rows)

    def delete_calls(self) -> int:
        return self._delete_calls

    def written_bytes(self, prefix: str) -> int:
        return self._bytes.get(prefix, 0)

    def committed(self, pages: int, seconds: float) -> None:
        self.commit["units"] += 1
        self.commit["pages"] += pages
        self.commit["busy_s"] += seconds
        now = self.clock()
        if self._first is None:
            self._first = (now, self.commit["pages"])
            self._first_arrival = now - seconds
        else:
            self._commits_after_first += 1
        self._last = (now, self.commit["pages"])
        self._last_at = time.time()

    def flowing_pages_per_s(self) -> float | None:
        """Pages committed over the time from the first batch any stage took (its worker's set-up
        done: model loads and actor starts are not in it) to the last commit: the pipeline's rate
        with its filling, without start-up or the end's flush (what a plan's pages/s predicts;
        ``steady_pages_per_s`` can overshoot on a short run whose first commit waited)."""
        starts = [w["started_at"] for ws in self.workers.values() for w in ws.values() if w.get("started_at")]
        if not starts or self._last is None or self._last_at - min(starts) < 0.2:
            return None
        return self._last[1] / (self._last_at - min(starts))

    def steady_pages_per_s(self) -> float | None:
        """Pages committed after the first unit, over the time since it: the rate once actors are
        up and models loaded (start-up is a fixed cost that a backfill amortises). None when too
        few units committed after the first, or too close together, to measure a rate."""
        if not self._first or self._commits_after_first < 2 or self._last[0] - self._first[0] < 0.2:
            return None
        return (self._last[1] - self._first[1]) / (self._last[0] - self._first[0])

    def _commit_window(self, wall: float) -> float:
        """The driver's time for commits: from the first unit's arrival to now, the end of the
        run, as a worker's counts from its first batch (start-up is nobody's idle time). A run of
        one unit gets no bottleneck line (``bottleneck``): there is no steady state to diagnose."""
        if self._first_arrival is None:
            return wall
        return max(1e-9, self.clock() - self._first_arrival)

    def summary(self) -> dict:
        wall = max(1e-9, self.clock() - self.start)
        now = time.time()

        def window(w: dict) -> float:
            """A worker's time: from its first batch (after its set-up) to now, the end of the run
            (its last batch may be long before: a stage that did one batch early was not busy
            for the rest of the run)."""
            return max(w["wall_s"], now - w["started_at"]) if w.get("started_at") else w["wall_s"]

        out: dict = {}
        for stage, workers in self.workers.items():
            if not workers:
                continue
            workers = {k: {**w, "wall_s": round(window(w), 4)} for k, w in workers.items()}
            busy = sum(w["busy_s"] for w in workers.values())
            worker_wall = sum(w["wall_s"] for w in workers.values())
            pages = sum(w["pages"] for w in workers.values())
            cpu = sum(w.get("cpu_s", 0.0) for w in workers.values())
            s = {"workers": len(workers), "items": pages, "busy_s": round(busy, 3), "cpu_s": round(cpu, 3),
                 "cpu_ms_per_page": round(1000 * cpu / pages, 2) if pages else None,
                 "items_per_busy_s": round(pages / busy, 2) if busy else None,
                 "capacity_pages_per_s": round(pages / busy * len(workers), 2) if busy else None,
                 "utilisation": round(min(1.0, busy / worker_wall), 3) if worker_wall else None,
                 "waiting_s": round(max(0.0, worker_wall - busy), 3),
                 "per_worker": [{k: w[k] for k in ("worker", "node_id", "visible_devices", "pages", "busy_s", "wall_s",
                                                   "forward_s")
                                 if k in w} for w in sorted(workers.values(), key=lambda w: w["worker"])]}
            if stage in MODEL_STAGES:
                forward = sum(w.get("forward_s", 0.0) for w in workers.values())
                # Steady state: each worker's own span, its first batch to its last; the drain
                # after the last (the other stages finishing, the sinks' flush) is no page's wait.
                span = sum(w["wall_s"] for w in self.workers[stage].values())
                s["forward_share_steady"] = round(min(1.0, forward / span), 3) if span else None
                batches = sum(w.get("batches", 0) for w in workers.values())
                s.update(forward_s=round(forward, 3), batches=batches,
                         forward_share=round(forward / worker_wall, 3) if worker_wall else None,
                         mean_batch_pages=round(pages / batches, 2) if batches else None)
                for w in s["per_worker"]:
                    w["forward_share"] = round(w.get("forward_s", 0.0) / w["wall_s"], 3) if w.get("wall_s") else None
            if stage == "encode":
                s["layouts_s"] = round(sum(w.get("layouts_s", 0.0) for w in workers.values()), 3)
                by_layout: dict[str, float] = {}
                for w in workers.values():
                    for name, sec in (w.get("layout_cpu_s") or {}).items():
                        by_layout[name] = by_layout.get(name, 0.0) + sec
                s["layout_cpu_ms_per_page"] = {k: round(1000 * v / pages, 2) for k, v in by_layout.items()} if pages else {}
            if stage == "render":  # OCR, Office conversions, duplicates, page images, hashes
                for key in ("documents", "ocr_pages", "ocr_read", "ocr_s", "converted", "convert_s", "duplicates", "images",
                            "image_bytes", "images_s", "hash_s"):
                    s[key] = round(sum(w.get(key, 0) for w in workers.values()), 3)
            if stage == "embed":
                s["deduplicated"] = sum(w.get("deduplicated", 0) for w in workers.values())
            if stage == "write":
                # the Parquet and vector-store counters (``<store>_s``, ``<store>_rows``), files, bytes
                keys = {k for w in workers.values() for k in w
                        if k.endswith(("_s", "_rows")) and k not in ("busy_s", "wall_s")} | {"files", "bytes", "images"}
                for key in sorted(keys):
                    s[key] = round(sum(w.get(key, 0) for w in workers.values()), 3)
            out[stage] = s
        c = self.commit
        if c["units"]:
            out["commit"] = {"workers": 1, "items": c["pages"], "busy_s": round(c["busy_s"], 3),
                             "items_per_busy_s": round(c["pages"] / c["busy_s"], 2) if c["busy_s"] else None,
                             "capacity_pages_per_s": round(c["pages"] / c["busy_s"], 2) if c["busy_s"] else None,
                             "utilisation": round(min(1.0, c["busy_s"] / self._commit_window(wall)), 3)}
            steady = self.steady_pages_per_s()
            out["steady_pages_per_s"] = round(steady, 2) if steady else None
            flowing = self.flowing_pages_per_s()
            out["flowing_pages_per_s"] = round(flowing, 2) if flowing else None
            out["first_commit_s"] = round(self._first[0] - self.start, 3)
            out["steady_window_s"] = round(self._last[0] - self._first[0], 3)
            out["steady_pages"] = self._last[1] - self._first[1]  # committed in that window, after the first unit
        return out


def bottleneck(stages: dict, accelerator: bool = False) -> str | None:
    """The stage with the highest utilisation, with the others beside it. ``accelerator``: the
    model ran on an accelerator (a GPU, or sim:), so its forward-pass share is worth naming. A run
    of one unit has no steady state: its diagnosis is over the whole run, and says so."""
    steady = bool(stages.get("steady_window_s"))
    stages = {k: v for k, v in stages.items() if isinstance(v, dict)}
    cap = {k: v["capacity_pages_per_s"] for k, v in stages.items() if v.get("capacity_pages_per_s")}
    util = {k: stages[k]["utilisation"] for k in cap if stages[k].get("utilisation") is not None}
    if len(util) < 2:
        return None
    slow = max(util, key=util.get)
    others = ", ".join(f"{k} busy {util[k]:.0%}" for k in util if k != slow)
    line = (f"bottleneck{'' if steady else ' (one unit, no steady state: over the whole run)'}: {WHAT.get(slow, slow)}, "
            f"busy {util[slow]:.0%} of its time at {cap[slow]:.1f} pages/s per busy second; {others}")
    if accelerator and stages.get("embed", {}).get("forward_share") is not None:
        line += f"; accelerator busy {stages['embed']['forward_share']:.0%}"
    return line
