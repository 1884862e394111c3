"""An ingest run's totals (what its commits added) and its summary (``OUT/_runs/<run id>.json``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from operators.sinks.milvus_client import redact_uri
from operators.sinks.parquet import PAGES_PREFIX, QUARANTINE_PREFIX


@dataclass
class RunTotals:
    """What the run's commits added, for the summary."""

    docs: dict = field(default_factory=lambda: {"indexed": 0, "partial": 0, "quarantined": 0})
    pages: int = 0
    page_quarantine: int = 0
    superseded: int = 0
    quarantine: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def add(self, info: dict, added: dict) -> None:
        for d in info["docs"]:
            self.docs[d["status"]] += 1
        for q in added["quarantine"]:
            self.quarantine.append({"source_uri": q["source_uri"], "reason": q["reason"], "page_number": q["page_number"]})
            self.page_quarantine += q["page_number"] is not None
        self.pages += added["pages"]
        self.superseded += added["superseded"]
        for stage, s in info.get("settings", {}).items():
            self.settings.setdefault(stage, s)



def on_accelerator(totals: RunTotals) -> bool:
    device = str(totals.settings.get("embed", {}).get("device") or "")
    return device.startswith("cuda") or device == "sim"



def build(job, stages: dict, diagnosis: str | None, layouts: dict) -> dict:
    """The summary of an ingest job (``pipelines.ingest.job.IngestJob``) that has finished: what it
    found, indexed, quarantined, deleted and wrote, per stage and per layout."""
    cfg, totals = job.cfg, job.totals
    wall = time.time() - job.t_start
    embed = stages.get("embed", {})
    summary = {
        "run_id": job.run_id,
        "started_at": datetime.fromtimestamp(job.t_start, timezone.utc).isoformat(),
        "index": {"generation": job.target.generation, "mode": job.mode, "model": job.target.describe(),
                  "added": job.added, "dropped": job.dropped, "swapped": job.swapped,
                  "milvus_base": job.target.milvus_base},
        "source": job.source.uri,
        "out": job.store.uri,
        "executor": cfg.executor,
        "documents": {
            "seen": job.counts.seen,
            "indexed": totals.docs["indexed"] + totals.docs["partial"],
            "partial": totals.docs["partial"],
            "skipped_unchanged": job.counts.skipped_unchanged,
            "quarantined": totals.docs["quarantined"],
            "replaced_versions": totals.superseded,
            "retried": job.counts.retried,
            "deleted": job.deleted_docs,
            "deferred": job.counts.deferred,
        },
        "pages": {
            "indexed": totals.pages,
            "embedded": int(embed.get("items", 0)),
            "quarantined": totals.page_quarantine,
            "deleted": job.deleted_pages,
            "relayouted": job.relayouted,
        },
        "units": {"planned": job.progress.total_units, "committed": job.progress.units,
                  "orphan_files_removed": len(job.orphans), "retried_parts_removed": len(job.swept)},
        "quarantine": totals.quarantine,
        "layouts": layouts,
        "milvus": {
            "uri": redact_uri(cfg.milvus_uri()),
            "rows_written": job.stage_stats.milvus_rows(),
            "delete_calls": job.stage_stats.delete_calls() + job.committer.delete_calls,
            "pages_resynced": job.resynced,
            "bulk_imported": job.imported,
            "upsert_path": job.stage_stats.upsert_path or "columns",
            "row_counts": job.milvus_counts,
            **job.milvus_plan.summary(),
        },
        "outputs": {
            "pages_bytes": job.stage_stats.written_bytes(PAGES_PREFIX),
            "quarantine_bytes": job.stage_stats.written_bytes(QUARANTINE_PREFIX),
            "pages_total_bytes": sum(o.size for o in job.store.list(PAGES_PREFIX)),
            "ledger_records": job.ledger.state.records,
        },
        "model": totals.settings.get("embed") or {"model": job.spec.name, "weights": cfg.weights, "dim": job.dim},
        "executor_stats": {**job.exec_stats, "embed_actor_devices": sorted(
            {w["visible_devices"] for w in stages.get("embed", {}).get("per_worker", []) if w.get("visible_devices")})},
        "stages": stages,
        "bottleneck": diagnosis,
        "wall_s": round(wall, 3),
        "run_s": round(getattr(job, "run_s", 0.0), 3),
        "pages_per_s": round(totals.pages / wall, 3) if wall > 0 else 0.0,
    }
    if "embed_sv" in totals.settings:
        summary["model"]["sv_model"] = totals.settings["embed_sv"].get("sv_model")
    if "embed_text" in totals.settings:
        summary["model"].update(totals.settings["embed_text"])
    return summary
