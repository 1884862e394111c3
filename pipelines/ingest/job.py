"""The ingest job: resolve the run, recover what a dead run left, open the sinks, plan units from
the source and the ledger, run them, commit each, finish; then summarise.

>>> from pipelines.ingest.config import IngestConfig
>>> summary = run_ingest(IngestConfig(source="examples/pdfs", out="/tmp/out", executor="local").validate())  # doctest: +SKIP
>>> summary["pages"]["indexed"]  # doctest: +SKIP
12
"""

from __future__ import annotations

import sys
import time

from operators.io.sources import NoSource
from operators.io.uris import open_source, open_store
from operators.stores import open_vectors
from pipelines.analysis.layout_stats import LayoutStats
from pipelines.executors import executor_for, holder_checks
from pipelines.executors.base import UnitTracker
from pipelines.ingest.added import add_from_archive
from pipelines.ingest.commit import UnitCommitter
from pipelines.ingest.config import ConfigError, IngestConfig
from pipelines.ingest.generation import retire, swap_in
from pipelines.ingest.metrics import RunCounts, RunMetrics
from pipelines.ingest.planning import PlanCounts, plan_units, primed
from pipelines.ingest.progress import Progress
from pipelines.ingest.recover import recover
from pipelines.ingest.run import resolve_run
from pipelines.ingest.stage_stats import StageStats, bottleneck
from pipelines.ingest.stages import build_pipeline
from pipelines.ingest.summary import RunTotals, build, listing_line, save, with_fidelity
from pipelines.out.identity import load_committed_state, save_state
from pipelines.out.keys import run_log_key
from pipelines.out.lock import RunLock


class IngestJob:
    """One run over one OUT. Phases: ``resolve`` (the run, once), ``recover`` (what a dead run
    left), ``open_sinks`` (the store's tables, the stages: everything that can fail before work),
    ``execute`` (plan, stages, writers, commits), ``complete_layouts``, ``finish`` (deletes,
    compaction, resync, flush), ``complete_generation`` and ``summary``."""

    def __init__(self, cfg: IngestConfig, log=None, metrics: RunMetrics | None = None):
        self.cfg = cfg
        self.log = log or sys.stderr  # looked up now: a stream bound at import time may be closed since
        self.metrics = metrics  # pushed at the heartbeat; the caller pushes the end with the exit status
        self.t_start = time.time()
        self.totals = RunTotals()
        self.stage_stats = StageStats()

    def say(self, line: str) -> None:
        self.log.write(f"[pagemill] {line}\n")

    def run(self) -> dict:
        cfg = self.cfg
        s3 = cfg.s3_options()
        if cfg.relayout_only:
            self.source = NoSource()
        else:
            self.source = open_source(cfg.source, include=tuple(cfg.include), exclude=tuple(cfg.exclude),
                                      s3_options=s3)
            self.source.check()  # a missing source fails here, before OUT is created
        self.out = open_store(cfg.out, s3_options=s3, create=False)
        state = load_committed_state(self.out)
        self.new_index = state is None or state.active is None  # _index.json comes with its first commit
        self.run_, self.decision = resolve_run(cfg, state, self.out.uri)
        self.preflight()
        self.out.check()  # creates a local OUT: the inputs are known good
        self.lock = RunLock(self.out, self.run_.run_id, lease_s=cfg.lock_lease_s, checks=holder_checks(),
                            say=self.say, about=self.ray_submission())
        self.lock.acquire()
        try:
            for line in self.run_.notes:
                self.say(line)
            if not self.new_index:
                save_state(self.out, self.decision.state)
            self.recovery = recover(self.out, self.run_.generation, self.decision.state, self.vectors)
            self.open_sinks()
            self.executor = executor_for(cfg, self.out.local_path("") is not None or self.vectors.local,
                                         self.vectors.single_process, self.log)
            try:
                self.execute()
                self.complete_layouts()
                self.finish()
                self.complete_generation()
            except BaseException:
                self.executor.close()
                self.vectors.close()
                raise
            self.executor.close()
            self.totals.store_counts = self.vectors.counts()
            self.archive_rows = self.expected_rows() if self.metrics else {}
            self.vectors.close()
            return self.summary()
        finally:
            self.lock.release()
            if hasattr(self.log, "log_text") and self.log.log_path:
                # What Ray and the libraries printed (not on the terminal): kept with the run.
                self.out.write_bytes(run_log_key(self.run_.run_id), self.log.log_text())

    def ray_submission(self) -> dict:
        """The Ray job submission this run is the entrypoint of, for the lock to record."""
        if self.cfg.executor != "ray":
            return {}
        from pipelines.executors.ray_executor import submitted_job

        return {"ray": submitted_job()}

    def preflight(self) -> None:
        """Every model resolves, the cluster answers and the store's options fit the run, before
        Ray starts or anything is written: one line each, not minutes of actor restarts."""
        from operators.models.preflight import check_models

        run, cfg = self.run_, self.cfg
        check_models(run.options.model, run.models.spec)
        if cfg.executor == "ray" and cfg.ray_address:
            from pipelines.executors.ray_executor import check_address

            check_address(cfg.ray_address)
        self.vectors = open_vectors(run.vectors, cfg.store, cfg.s3_options(), out=cfg.out)
        problem = self.vectors.check_layouts(run.shape.layout_names())
        if problem:
            raise ConfigError(problem)
        self.vectors.check(run.shape)

    def open_sinks(self) -> None:
        """The store's tables (an unreachable store, or a field or index it would refuse, fails
        here, before anything is written) and the run's stages."""
        run, v, rec = self.run_, self.vectors, self.recovery
        notes = v.prepare(run.shape, fresh=self.new_index)
        for line in v.drop_layouts(list(run.dropped)) if run.dropped else []:
            self.say(f"{v.name}: {line}")
        for line in v.start(rec.ledger):
            self.say(f"{v.name}: {line}")
        rec.check_unexplained_rows(v)
        if rec.suspects.everything:
            self.say(f"{v.name}: every commit deletes other versions' rows ({rec.suspects.why})")
        self.had_suspects = bool(rec.suspects)  # commits take theirs off the list
        for note in notes:
            self.say(f"{v.name}: {note}")
        self.pipeline = build_pipeline(run, self.source, self.out, v.writer(), v.name,
                                       known_hashes=rec.ledger.state.content_keys())
        self.layout_stats = LayoutStats(list(run.layouts), run.models.dim, run.fde, run.models.sv_dim)

    def execute(self) -> None:
        """Units stream from the listing (the driver never holds the whole source in memory), to
        a plan file the executor reads; each unit is committed when all of it is written."""
        cfg, run, rec = self.cfg, self.run_, self.recovery
        beat = (lambda: self.metrics.beat(self.live_counts)) if self.metrics else None
        self.progress = Progress(None, cfg.progress_interval_s, stream=self.log, live=self.executor.live_counters,
                                 on_beat=beat)
        self.say(f"run {run.run_id}: planning from {self.source.uri}"
                 + (f" ({len(rec.orphans)} files of an interrupted run removed)" if rec.orphans else ""))
        self.totals.orphans_removed = len(rec.orphans)
        self.totals.planned = PlanCounts(seen_keys=[] if cfg.delete_missing else None)
        # A generation's units never share ids (and so file names) with another's.
        units = plan_units(primed(self.source.list_documents()), rec.ledger.state, cfg.unit_max_docs,
                           cfg.unit_max_bytes, self.totals.planned, retry_quarantined=cfg.retry_quarantined,
                           suspects=rec.suspects, salt=f"g{run.generation}" if run.generation > 1 else "")
        self.committer = UnitCommitter(rec.ledger, run.run_id, executor=self.executor, vectors=self.vectors,
                                       suspects=rec.suspects, manifest=run.writes_active)
        tracker = UnitTracker(self.on_unit, on_stats=self.stage_stats.observe)
        self.progress.begin()  # a line every interval from now: Ray and the models start inside
        try:
            units, plan_file = self.executor.feed(units, self.out, run.run_id, self._listed, self.say,
                                                  models=run.models.describe())
            if ray_job := self.executor.holder_identity():
                self.lock.record(ray=ray_job)  # a retry can now tell when this driver's job has finished
            t = time.time()
            self.stage_stats.begin()
            self.totals.exec_stats = self.executor.run(units, self.pipeline, tracker, plan=plan_file)
        finally:
            self.progress.finish()
        self.totals.run_s = time.time() - t
        if plan_file is not None:
            plan_file.delete()

    def _listed(self, n_units: int) -> None:
        self.progress.total_units = self.totals.units_planned = n_units
        c, m = self.totals.planned, self.run_.models
        self.totals.listing = self.source.listing.to_json()
        self.say(listing_line(c, n_units, self.totals.listing))
        pages, projected = c.projected_pages(self.recovery.ledger.state)
        warning = self.vectors.memory_warning(projected, pages, m.vectors_per_page(), m.dim)
        if warning:
            self.say(f"warning: {warning}")

    def on_unit(self, unit_id: str, info: dict, parts: list[dict]) -> None:
        self.lock.check()
        t = time.perf_counter()
        if self.new_index:  # the identity becomes the index's with its first commit
            save_state(self.out, self.decision.state)
            self.new_index = False
        added = self.committer.commit(unit_id, info, parts)
        self.stage_stats.committed(added["pages"], time.perf_counter() - t)
        for p in parts:
            self.stage_stats.wrote(p)
        self.layout_stats.add_counts(info, parts)
        self.totals.add(info, added)
        self.progress.update(added["pages"], sum(1 for d in info["docs"] if d["status"] == "quarantined"),
                             sum(added["duplicates"].values()))

    def complete_layouts(self) -> None:
        target = self.decision.target
        if self.run_.mode != "ingest" or not target.building:
            return
        self.totals.relayouted = add_from_archive(self.run_, list(target.building), self.out, self.source,
                                                  self.recovery.ledger, self.executor, self.vectors, self.committer,
                                                  self.say)
        target.building = []
        save_state(self.out, self.decision.state)

    def finish(self) -> None:
        cfg, rec, t = self.cfg, self.recovery, self.totals
        t.parts_swept = rec.sweep(self.out)
        if cfg.delete_missing:
            t.deleted_docs, t.deleted_pages = self.committer.delete_missing(t.planned)
        if rec.ledger.state.records and len(rec.ledger.pending_records) >= cfg.ledger_compact_every:
            rec.ledger.compact()
        # Suspects left that the ledger knows were not committed again (unchanged since their
        # last commit): the store may hold the dead commit's version of them, so resync them.
        t.resynced = self.committer.resync(rec.suspects.uris)
        state = self.decision.state
        t.imported = self.vectors.finish(state.store)
        self.vectors.flush()
        if state.keep_store_record(self.vectors.record()):
            save_state(self.out, state)
        self.committer.publish(force=True)
        t.store_delete_calls = self.committer.delete_calls
        if self.had_suspects:
            rec.settle_suspects(self.vectors.suspects_record, whole_source=not cfg.retry_quarantined)

    def complete_generation(self) -> None:
        state = self.decision.state
        if self.run_.mode == "reindex" and state.pending is not None:
            self.say(swap_in(self.out, state, self.recovery.ledger, self.run_.run_id))
            self.totals.swapped = True
        if state.retired is not None:
            for note in retire(self.out, state, self.recovery.ledger, self.vectors):
                self.say(f"{self.vectors.name}: {note}")

    def live_counts(self) -> RunCounts:
        """The run so far, for the heartbeat's metrics."""
        return RunCounts.live(self.totals, self.stage_stats.summary(), self.progress.rate())

    def expected_rows(self) -> dict[str, int]:
        """Rows the store's tables should hold by the ledger's committed pages (in memory: cheap);
        the tables of a row per vector would need every shard read, and are left to status."""
        pages = self.recovery.ledger.state.pages_held()
        return {t: n for t, n in self.vectors.expected_rows(pages, {}).items() if n is not None}

    def summary(self) -> dict:
        """The run's summary (``summary.build``), said where it matters and written to
        ``OUT/_runs/<run id>.json`` (and ``--summary``)."""
        run, t = self.run_, self.totals
        stages = self.stage_stats.summary()
        diagnosis = bottleneck(stages, accelerator=run.models.simulated or t.on_accelerator())
        if diagnosis:
            self.say(diagnosis)
        layouts = with_fidelity(self.layout_stats.summary(), run, self.out)
        summary = build(run, t, self.stage_stats, stages, diagnosis, layouts, started=self.t_start,
                        source=self.source.uri, out=self.out, store=self.vectors.summary(), store_name=self.vectors.name,
                        ledger_records=self.recovery.ledger.state.records)
        save(summary, self.out, self.cfg.summary)
        if self.metrics:
            self.metrics.finished(RunCounts.of_summary(summary, self.vectors.name, self.archive_rows))
        return summary


def run_ingest(cfg: IngestConfig, log=None, metrics: RunMetrics | None = None) -> dict:
    """Run the job to the end and return the run summary (also written to ``OUT/_runs/``);
    ``metrics``: the run's, pushed at the heartbeat and given the summary's counts."""
    return IngestJob(cfg, log, metrics).run()


__all__ = ["IngestJob", "run_ingest"]
