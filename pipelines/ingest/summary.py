"""An ingest run's totals (what its phases did) and its summary (``OUT/_runs/<run id>.json``),
built from the totals and the resolved run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipelines.ingest.planning import PlanCounts
from pipelines.out.keys import PAGES_PREFIX, QUARANTINE_PREFIX, run_summary_key


@dataclass
class RunTotals:
    """What the run did: its commits (documents and pages by outcome, quarantine) and the counts
    of every phase, for the summary."""

    docs: dict = field(default_factory=lambda: {"indexed": 0, "partial": 0, "quarantined": 0})
    pages: int = 0
    page_quarantine: int = 0
    superseded: int = 0
    quarantine: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    planned: PlanCounts = field(default_factory=PlanCounts)
    units_planned: int | None = None
    units_committed: int = 0
    orphans_removed: int = 0  # files of an interrupted run, removed before planning
    parts_swept: int = 0  # parts a retried write left under another key, removed at the end
    deleted_docs: int = 0
    deleted_pages: int = 0
    relayouted: int = 0  # pages given added layouts from the archive
    resynced: int = 0  # pages written to the store again from the archive
    imported: dict | None = None  # what the store did at the end (a first load's bulk import, indexes, compaction)
    swapped: bool = False  # a reindex swapped in
    store_counts: dict = field(default_factory=dict)
    store_delete_calls: int = 0  # the driver's deletes (documents gone, resyncs)
    exec_stats: dict = field(default_factory=dict)
    run_s: float = 0.0
    listing: dict = field(default_factory=dict)  # documents listed by format, files skipped by reason
    duplicate_docs: int = 0  # documents with the same bytes as an indexed one: pages copied, no model run
    duplicate_pages: int = 0
    duplicate_deferred: int = 0  # duplicates whose canonical went meanwhile: rendered by the next run
    page_hashes: set = field(default_factory=set)  # the run's pages' perceptual hashes
    near_duplicates: int = 0  # pages whose perceptual hash an earlier page of the run had
    images: int = 0  # page images committed (the writers' and the duplicates' copies)
    image_bytes: int = 0

    def add(self, info: dict, added: dict) -> None:
        for d in info["docs"]:
            self.docs[d["status"]] += 1
        for q in added["quarantine"]:
            self.quarantine.append({"source_uri": q["source_uri"], "reason": q["reason"], "page_number": q["page_number"]})
            self.page_quarantine += q["page_number"] is not None
        self.pages += added["pages"]
        self.duplicate_docs += len(added.get("duplicates", {}))
        self.duplicate_pages += sum(added.get("duplicates", {}).values())
        self.duplicate_deferred += added.get("deferred", 0)
        for f in added.get("files", ()):
            if f.get("kind") == "images":
                self.images += f["rows"]
                self.image_bytes += f["bytes"]
        for h in added.get("hashes", ()):
            if h in self.page_hashes:
                self.near_duplicates += 1
            else:
                self.page_hashes.add(h)
        self.superseded += added["superseded"]
        self.units_committed += 1
        for stage, s in info.get("settings", {}).items():
            self.settings.setdefault(stage, s)

    def on_accelerator(self) -> bool:
        device = str(self.settings.get("embed", {}).get("device") or "")
        return device.startswith("cuda") or device == "sim"


def build(run, totals: RunTotals, stage_stats, stages: dict, diagnosis: str | None, layouts: dict, *,
          started: float, source: str, out, store: dict, store_name: str, ledger_records: int) -> dict:
    """The summary of an ingest run (``run``: its ResolvedRun) that has finished: what it found,
    indexed, quarantined, deleted and wrote, per stage and per layout. ``store``: what the vector
    store says of itself (its section, under ``store_name``)."""
    wall = time.time() - started
    embed = stages.get("embed", {})
    counts = totals.planned
    summary = {
        "run_id": run.run_id,
        "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "index": {"generation": run.generation, "mode": run.mode, "model": run.index, "added": list(run.added),
                  "dropped": list(run.dropped), "swapped": totals.swapped, "milvus_base": run.base},
        "source": source,
        "out": out.uri,
        "executor": run.options.executor,
        "documents": {
            "seen": counts.seen,
            "indexed": totals.docs["indexed"] + totals.docs["partial"],
            "partial": totals.docs["partial"],
            "skipped_unchanged": counts.skipped_unchanged,
            "quarantined": totals.docs["quarantined"],
            "replaced_versions": totals.superseded,
            "retried": counts.retried,
            "deleted": totals.deleted_docs,
            "deferred": counts.deferred,
            "by_format": totals.listing.get("by_format", {}),
            "skipped": totals.listing.get("skipped", {}),
        },
        "pages": {
            "indexed": totals.pages,
            "embedded": int(embed.get("items", 0)),
            "quarantined": totals.page_quarantine,
            "deleted": totals.deleted_pages,
            "relayouted": totals.relayouted,
        },
        "duplicates": duplicates(run, totals, stages),
        "ocr": ocr(run, stages.get("render", {})),
        "page_images": {"spec": run.options.page_images, "written": totals.images, "bytes": totals.image_bytes},
        "units": {"planned": totals.units_planned, "committed": totals.units_committed,
                  "orphan_files_removed": totals.orphans_removed, "retried_parts_removed": totals.parts_swept},
        "quarantine": totals.quarantine,
        "layouts": layouts,
        store_name: {
            "rows_written": stage_stats.store_rows(),
            "delete_calls": stage_stats.delete_calls() + totals.store_delete_calls,
            "pages_resynced": totals.resynced,
            "upsert_path": stage_stats.upsert_path or "columns",
            "row_counts": totals.store_counts,
            **(totals.imported or {}),
            **store,
        },
        "outputs": {
            "pages_bytes": stage_stats.written_bytes(PAGES_PREFIX),
            "quarantine_bytes": stage_stats.written_bytes(QUARANTINE_PREFIX),
            "pages_total_bytes": sum(o.size for o in out.list(PAGES_PREFIX)),
            "ledger_records": ledger_records,
        },
        "model": totals.settings.get("embed") or {"model": run.models.spec.name, "weights": run.models.spec.weights,
                                                  "dim": run.models.dim},
        "executor_stats": {**totals.exec_stats, "embed_actor_devices": sorted(
            {w["visible_devices"] for w in stages.get("embed", {}).get("per_worker", []) if w.get("visible_devices")})},
        "stages": stages,
        "bottleneck": diagnosis,
        "wall_s": round(wall, 3),
        "run_s": round(totals.run_s, 3),
        "pages_per_s": round(totals.pages / wall, 3) if wall > 0 else 0.0,
    }
    if "embed_sv" in totals.settings:
        summary["model"]["sv_model"] = totals.settings["embed_sv"].get("sv_model")
    if "embed_text" in totals.settings:
        summary["model"].update(totals.settings["embed_text"])
    return summary


def listing_line(counts: PlanCounts, n_units: int, listing: dict) -> str:
    """``listing done: ...``: documents seen (by format where several), unchanged, to process, and
    the files skipped by reason."""
    formats = ", ".join(f"{k} {v}" for k, v in listing["by_format"].items())
    skipped = sum(listing["skipped"].values())
    return (f"listing done: {counts.seen} documents seen" + (f" ({formats})" if len(listing["by_format"]) > 1 else "")
            + f", {counts.skipped_unchanged} unchanged, {counts.pending} to process in {n_units} units"
            + (f"; {skipped} files skipped (" + ", ".join(f"{n} {why}" for why, n in listing["skipped"].items())
               + ")" if skipped else ""))


def with_fidelity(layouts: dict, run, out) -> dict:
    """``--fidelity-queries N``: each layout's fidelity measured on the index just written."""
    cfg = run.options
    if cfg.fidelity_queries:
        from pipelines.analysis.fidelity import measure_fidelity

        fid = measure_fidelity(out, run.models.spec, list(run.layouts), run.fde, cfg.fidelity_queries,
                               seed=cfg.fidelity_seed)
        for name, res in fid["layouts"].items():
            layouts.setdefault(name, {})["fidelity"] = res
    return layouts


def ocr(run, render: dict) -> dict:
    """What ``--ocr`` did: the engine (or why it was off), the pages it read (empty or thin text)
    and those whose text came from it, its seconds and milliseconds per page read."""
    read, took = int(render.get("ocr_read", 0)), float(render.get("ocr_s", 0.0))
    return {"mode": run.ocr.mode, "engine": run.ocr.note, "read": read, "pages": int(render.get("ocr_pages", 0)),
            "s": round(took, 3), "ms_per_page": round(1000 * took / read, 1) if read else None}


def duplicates(run, totals: RunTotals, stages: dict) -> dict:
    """What duplicates saved: documents with an indexed document's bytes (pages copied, neither
    rendered nor embedded) and near-duplicate pages (embedded once with ``--dedup pages``), in
    pages and in model-seconds (the run's own embedding time per page)."""
    embed = stages.get("embed", {})
    per_page = float(embed.get("busy_s", 0.0)) / max(1, int(embed.get("items", 0)))
    once = int(embed.get("deduplicated", 0))
    return {"documents": totals.duplicate_docs, "pages": totals.duplicate_pages,
            "deferred": totals.duplicate_deferred, "near_duplicate_pages": totals.near_duplicates,
            "pages_embedded_once": once, "policy": run.options.dedup,
            "model_s_saved": round(per_page * (totals.duplicate_pages + once), 3)}


def save(summary: dict, out, path: str | None = None) -> None:
    """``OUT/_runs/<run id>.json``, and ``path`` (``--summary``) when given."""
    data = json.dumps(summary, indent=2, sort_keys=True).encode()
    out.write_bytes(run_summary_key(summary["run_id"]), data)
    if path:
        with open(path, "wb") as f:
            f.write(data)
