"""The ingest job: plan units from the source and the ledger, run them, commit, summarise.

>>> from pipelines.config import IngestConfig
>>> summary = run_ingest(IngestConfig(source="examples/pdfs", out="/tmp/out", executor="local").validate())  # doctest: +SKIP
>>> summary["pages"]["indexed"]  # doctest: +SKIP
12
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import datetime, timezone

from operators import schema as S
from operators.embed import EmbedPages, layout_fields, sv_vlm_field, text_field
from operators.layouts import parse_layouts
from operators.milvus_sink import MilvusSink, redact_uri
from operators.models import ModelSpec, adapter_for
from operators.parquet_sink import PAGES_PREFIX, QUARANTINE_PREFIX, ParquetSink
from operators.render import RenderLimits, RenderPages, load_password_map
from operators.sources import open_source
from operators.store import open_store
from operators.sv_models import sv_embedder_for
from operators.text_embed import TextEmbedder, split_model_specs, sv_model_spec
from pipelines.commit import UnitCommitter
from pipelines.config import IngestConfig
from pipelines.layout_stats import LayoutStats
from pipelines.ledger import LEDGER_PREFIX, Ledger
from pipelines.lock import RunLock
from pipelines.plan import PlanCounts, plan_units
from pipelines.progress import Progress
from pipelines.stage_stats import StageStats, bottleneck

RUNS_PREFIX = "_runs"


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def make_executor(cfg: IngestConfig):
    if cfg.executor == "local":
        from pipelines.local_executor import LocalExecutor

        return LocalExecutor()
    from pipelines.ray_executor import RayExecutor

    return RayExecutor(address=cfg.ray_address, num_gpus=cfg.num_gpus, embed_actors=cfg.embed_actors,
                       render_actors=cfg.render_actors, object_store_mb=cfg.object_store_mb)


def model_spec(cfg: IngestConfig) -> ModelSpec:
    visual, _ = split_model_specs(cfg.model)
    return ModelSpec(name=visual, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype,
                     attn_implementation=cfg.attn_implementation, max_pixels=cfg.max_pixels,
                     trust_remote_code=cfg.trust_remote_code)


def _suspect_orphans(store, keys: list[str], suspects) -> None:
    """The documents in orphan page shards (an unreadable one: suspect everything)."""
    import io

    import pyarrow.parquet as pq

    for key in keys:
        try:
            uris = pq.read_table(io.BytesIO(store.read_bytes(key)), columns=[S.SOURCE_URI])[S.SOURCE_URI].to_pylist()
        except Exception as e:
            suspects.everything, suspects.why = True, f"an interrupted run's shard {key} is unreadable ({type(e).__name__})"
            continue
        suspects.uris.update(uris)


def _chain(first, rest):
    if first is not None:
        yield first
        yield from rest


def _announced(units, counts: PlanCounts, progress: Progress, log):
    """Pass units through; when the listing is exhausted, say what it found."""
    n = 0
    for unit in units:
        n += 1
        yield unit
    progress.total_units = n
    log.write(f"[pagemill] listing done: {counts.seen} documents seen, {counts.skipped_unchanged} unchanged, "
              f"{counts.pending} to process in {n} units\n")


def run_ingest(cfg: IngestConfig, log=None) -> dict:
    """Run the job to the end and return the run summary (also written to ``OUT/_runs/``)."""
    log = log or sys.stderr  # looked up now: a stream bound at import time may be closed since
    t_start = time.time()
    run_id = new_run_id()
    s3 = cfg.s3_options()
    source = open_source(cfg.source, include=tuple(cfg.include), exclude=tuple(cfg.exclude), s3_options=s3)
    store = open_store(cfg.out, s3_options=s3)
    store.check()
    lock = RunLock(store, run_id, lease_s=cfg.lock_lease_s)
    lock.acquire()
    try:
        return _run_locked(cfg, run_id, t_start, source, store, lock, log)
    finally:
        lock.release()


def _run_locked(cfg: IngestConfig, run_id: str, t_start: float, source, store, lock: RunLock, log) -> dict:
    ledger = Ledger(store)
    ledger.load()
    # Files of units that never committed (the previous run died): not part of the index. Their
    # documents may have Milvus rows the ledger does not know: recorded before the files go.
    orphans = ledger.orphans((PAGES_PREFIX, QUARANTINE_PREFIX))
    suspects = ledger.load_suspects()
    if orphans:
        # A unit's own page shards hold what its commit sent to Milvus; a rewrite (``~`` in
        # the name: an older shard without the superseded documents) sent nothing.
        _suspect_orphans(store, [k for k in orphans if k.startswith(PAGES_PREFIX + "/") and "~" not in k], suspects)
        ledger.save_suspects(suspects)
    for key in orphans:
        store.delete(key)

    spec = model_spec(cfg)
    adapter = adapter_for(spec)  # cheap: reads the preset, loads nothing
    dim = adapter.dim
    layouts = parse_layouts(cfg.layouts)
    fde = cfg.fde_params()
    _, text_model = split_model_specs(cfg.model)
    text_dim = TextEmbedder(text_model).dim if text_model else None
    sv_model = sv_model_spec(cfg.model)
    sv_dim = sv_embedder_for(sv_model, spec).dim if sv_model else None  # from the preset or config: loads nothing
    schema = S.pages_schema(dim, layout_fields(layouts, dim, fde) + ([text_field(text_dim)] if text_dim else [])
                            + ([sv_vlm_field(sv_dim)] if sv_dim else []))
    # Connect (and create collections) before any work: an unreachable sink, or a field or index
    # the server would refuse, fails here, before anything is written.
    from operators.milvus_plan import parse_index_specs

    milvus = MilvusSink(cfg.milvus_connection(), cfg.collection, dim, text_dim=text_dim, layouts=layouts,
                        fde_dim=fde.dim, index_specs=parse_index_specs(cfg.milvus_index), mv_mode=cfg.milvus_mv_mode,
                        milvus_layouts=cfg.milvus_layouts or None, partition_key=cfg.milvus_partition_key,
                        corpus=cfg.corpus, extra_sv={"sv-vlm": sv_dim} if sv_dim else None)
    milvus_plan = milvus.setup()
    if not ledger.state.docs and not suspects.everything and any(milvus.count_own(c) for c in milvus.collections):
        suspects.everything, suspects.why = True, "Milvus holds rows that the (empty) ledger does not account for"
        ledger.save_suspects(suspects)
    if suspects.everything:
        log.write(f"[pagemill] milvus: every commit deletes other versions' rows ({suspects.why})\n")
    had_suspects = bool(suspects.uris or suspects.everything)  # commits take theirs off the list
    for note in milvus_plan.notes:
        log.write(f"[pagemill] milvus: {note}\n")
    parquet = ParquetSink(store, metadata={"model": spec.name, "weights": cfg.weights, "dim": dim, "corpus": cfg.corpus,
                                           "text_model": text_model, "sv_model": sv_model,
                                           "layouts": {lay.name: lay.params(fde) for lay in layouts}})
    committer = UnitCommitter(ledger, parquet, milvus, schema, run_id, suspects=suspects)

    counts = PlanCounts(seen_uris=set() if cfg.delete_missing else None)
    progress = Progress(None, cfg.progress_interval_s, stream=log)
    log.write(f"[pagemill] run {run_id}: planning from {source.uri}"
              + (f" ({len(orphans)} files of an interrupted run removed)" if orphans else "") + "\n")
    # Units stream from the listing: the driver never holds the whole source in memory.
    listing = source.list_documents()
    first = next(iter_ := iter(listing), None)  # the first listing call fails fast on a bad source
    units = _announced(plan_units(_chain(first, iter_), ledger.state, cfg.unit_max_docs, cfg.unit_max_bytes, counts,
                                  retry_quarantined=cfg.retry_quarantined), counts, progress, log)

    render = RenderPages(source, adapter.pixel_budget(),
                         RenderLimits(page_timeout_s=cfg.page_timeout_s, max_pages=cfg.max_pages,
                                      max_bytes=cfg.max_doc_bytes, extract_text=cfg.extract_text,
                                      password_map=load_password_map(cfg.passwords) if cfg.passwords else ()))
    embed = EmbedPages(spec, batch_size=cfg.batch_size, layouts=layouts, fde=fde, max_batch_tokens=cfg.max_batch_tokens,
                       text_model=text_model, sv_model=sv_model)
    layout_stats = LayoutStats(layouts, dim, fde)
    totals = {"indexed": 0, "partial": 0, "quarantined": 0, "pages": 0, "page_quarantine": 0, "superseded": 0}
    quarantine: list[dict] = []
    embed_settings: dict = {}
    devices_seen: set[str] = set()

    stage_stats = StageStats()

    def on_unit(unit_id: str, info: dict, flow) -> None:
        lock.check()
        stage_stats.observe(info)
        t_commit = time.perf_counter()
        added = committer.commit(unit_id, info, flow)
        stage_stats.committed(added["pages"], time.perf_counter() - t_commit)
        layout_stats.add(added["table"])
        embed_settings.update(info.get("embed_settings", {}))
        if embed_settings.get("visible_devices"):
            devices_seen.add(embed_settings["visible_devices"])
        for d in info["docs"]:
            key = {"indexed": "indexed", "partial": "partial", "quarantined": "quarantined"}[d["status"]]
            totals[key] += 1
        for q in info["quarantine"]:
            quarantine.append({"source_uri": q["source_uri"], "reason": q["reason"], "page_number": q["page_number"]})
            totals["page_quarantine"] += q["page_number"] is not None
        totals["pages"] += added["pages"]
        totals["superseded"] += added["superseded"]
        progress.update(added["pages"], sum(1 for d in info["docs"] if d["status"] == "quarantined"))

    executor = make_executor(cfg)
    t_exec = time.time()
    try:
        exec_stats = executor.run(units, render, embed, on_unit)
        progress.finish()
        deleted_docs = deleted_pages = 0
        if cfg.delete_missing:
            missing = [u for u in ledger.state.docs if u not in counts.seen_uris]
            if missing and not counts.seen_uris:
                raise ValueError(f"--delete-missing: the source lists no documents at all; refusing to delete all "
                                 f"{len(missing)} indexed documents (wrong source?)")
            deleted_docs, deleted_pages = len(missing), committer.delete_documents(missing)
        if ledger.state.records and len(ledger.pending_records) >= cfg.ledger_compact_every:
            ledger.compact()
        # Suspects left that the ledger knows were not committed again (unchanged since their
        # last commit): Milvus may hold the dead commit's version of them, so resync them.
        resynced = committer.resync_milvus(suspects.uris)
        milvus.flush()  # once per run: seals the run's segments (commits do not flush)
        if had_suspects:
            # A run over the whole source has given every document a deleting commit or a resync,
            # so the unexplained rows are accounted for.
            suspects.uris = {u for u in suspects.uris if u not in ledger.state.docs}
            if not cfg.retry_quarantined:
                suspects.everything, suspects.why = False, None
            ledger.save_suspects(suspects)
    except BaseException:
        executor.close()
        milvus.close()
        raise
    executor.close()
    milvus_counts = {c: milvus.count(c) for c in milvus.collections}
    milvus.close()
    stages = stage_stats.summary()
    diagnosis = bottleneck(stages)
    if diagnosis:
        log.write(f"[pagemill] {diagnosis}\n")
    layouts_summary = layout_stats.summary()
    if cfg.fidelity_queries:
        from pipelines.fidelity import measure_fidelity

        fid = measure_fidelity(store, spec, layouts, fde, cfg.fidelity_queries, seed=cfg.fidelity_seed)
        for name, res in fid["layouts"].items():
            layouts_summary.setdefault(name, {})["fidelity"] = res
    wall = time.time() - t_start

    summary = {
        "run_id": run_id,
        "started_at": datetime.fromtimestamp(t_start, timezone.utc).isoformat(),
        "source": source.uri,
        "out": store.uri,
        "executor": cfg.executor,
        "documents": {
            "seen": counts.seen,
            "indexed": totals["indexed"] + totals["partial"],
            "partial": totals["partial"],
            "skipped_unchanged": counts.skipped_unchanged,
            "quarantined": totals["quarantined"],
            "replaced_versions": totals["superseded"],
            "retried": counts.retried,
            "deleted": deleted_docs,
            "deferred": counts.deferred,
        },
        "pages": {
            "indexed": totals["pages"],
            "embedded": totals["pages"],
            "quarantined": totals["page_quarantine"],
            "deleted": deleted_pages,
        },
        "units": {"planned": progress.total_units, "committed": progress.units, "orphan_files_removed": len(orphans)},
        "quarantine": quarantine,
        "layouts": layouts_summary,
        "milvus": {
            "uri": redact_uri(cfg.milvus_uri()),
            "rows_written": dict(milvus.rows_written),
            "delete_calls": milvus.delete_calls,
            "pages_resynced": resynced,
            "upsert_path": milvus.upsert_path,
            "row_counts": milvus_counts,
            **milvus.plan.summary(),
        },
        "outputs": {
            "pages_bytes": parquet.bytes_written.get(PAGES_PREFIX, 0),
            "quarantine_bytes": parquet.bytes_written.get(QUARANTINE_PREFIX, 0),
            "pages_total_bytes": sum(o.size for o in store.list(PAGES_PREFIX)),
            "ledger_records": ledger.state.records,
        },
        "model": embed_settings or {"model": cfg.model, "weights": cfg.weights, "dim": dim},
        "executor_stats": {**exec_stats, "embed_actor_devices": sorted(devices_seen)},
        "stages": stages,
        "bottleneck": diagnosis,
        "wall_s": round(wall, 3),
        "run_s": round(time.time() - t_exec, 3),
        "pages_per_s": round(totals["pages"] / wall, 3) if wall > 0 else 0.0,
    }
    data = json.dumps(summary, indent=2, sort_keys=True).encode()
    store.write_bytes(f"{RUNS_PREFIX}/{run_id}.json", data)
    if cfg.summary:
        with open(cfg.summary, "wb") as f:
            f.write(data)
    return summary


__all__ = ["run_ingest", "LEDGER_PREFIX", "RUNS_PREFIX"]
