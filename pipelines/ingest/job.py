"""The ingest job: recover, open the sinks, plan units from the source and the ledger, run them,
commit each, finish; then summarise.

>>> from pipelines.ingest.config import IngestConfig
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
from operators.embed import EmbedPages, EmbedSinglePages, EmbedText
from operators.encode import EncodePages
from operators.errors import UsageError
from operators.io.uris import open_source, open_store
from operators.layouts.layout import parse_layouts
from operators.models import ModelSpec, adapter_for, family_of, split_model_specs, sv_model_spec
from operators.models.sv import sv_embedder_for
from operators.models.text import TextEmbedder
from operators.render import RenderLimits, RenderPages, load_password_map
from operators.sinks.milvus_writer import MilvusWriter
from operators.sinks.parquet import PAGES_PREFIX, QUARANTINE_PREFIX
from operators.writer import PagesWriter
from pipelines.analysis.layout_stats import LayoutStats
from pipelines.executors.base import Pipeline, UnitTracker
from pipelines.index.identity import (
    IndexIdentity,
    IndexState,
    ModelIdentity,
    checkpoint_id,
    decide,
    load_state,
    save_state,
)
from pipelines.ingest.commit import UnitCommitter
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.ledger import LEDGER_PREFIX, Ledger
from pipelines.ingest.lock import RunLock
from pipelines.ingest.progress import Progress
from pipelines.ingest.stage_stats import StageStats, bottleneck
from pipelines.ingest.summary import RunTotals, on_accelerator
from pipelines.ingest.summary import build as build_summary
from pipelines.ingest.units import PlanCounts, PlanFile, plan_units

RUNS_PREFIX = "_runs"
DEFAULT_MODEL = "colqwen2-tiny"
BULK_STATE_KEY = "_ledger/milvus_bulk.json"  # a first load whose staged files Milvus has not imported yet
PLACEMENT_WORDS = {"driver": "in the driver", "driver_node": "one writer on the driver's node",
                   "workers": "on the workers"}


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def model_spec(cfg: IngestConfig) -> ModelSpec:
    visual, _ = split_model_specs(cfg.model or DEFAULT_MODEL)
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


class IngestJob:
    """One run over one OUT. Phases: ``recover`` (what a dead run left), ``open_sinks`` (models,
    schema, Milvus collections: everything that can fail before work), ``plan`` (listing against
    the ledger), ``execute`` (stages, writers, commits), ``finish`` (deletes, compaction, resync,
    flush) and ``summary``."""

    def __init__(self, cfg: IngestConfig, log=None):
        self.cfg = cfg
        self.log = log or sys.stderr  # looked up now: a stream bound at import time may be closed since
        self.t_start = time.time()
        self.run_id = new_run_id()
        self.totals = RunTotals()
        self.stage_stats = StageStats()

    def say(self, line: str) -> None:
        self.log.write(f"[pagemill] {line}\n")

    # -- the job ---------------------------------------------------------------------------------

    def run(self) -> dict:
        cfg = self.cfg
        s3 = cfg.s3_options()
        if cfg.relayout_only:
            from operators.io.sources import NoSource

            self.source = NoSource()
        else:
            self.source = open_source(cfg.source, include=tuple(cfg.include), exclude=tuple(cfg.exclude),
                                      s3_options=s3)
            self.source.check()  # a missing source fails here, before OUT is created
        self.store = open_store(cfg.out, s3_options=s3, create=False)
        self.index = load_state(self.store)  # what OUT already holds (None: a new index)
        self.resolve()
        self.model_preflight()
        if cfg.executor == "ray" and cfg.ray_address:
            from pipelines.executors.ray_executor import check_address

            check_address(cfg.ray_address)
        self.store.check()  # creates a local OUT: the inputs are known good
        self.lock = RunLock(self.store, self.run_id, lease_s=cfg.lock_lease_s)
        self.lock.acquire()
        try:
            self.identify()
            self.recover()
            self.open_sinks()
            self.executor = self.make_executor()
            try:
                self.execute()
                self.complete_layouts()
                self.finish()
                self.complete_generation()
            except BaseException:
                self.executor.close()
                self.milvus.close()
                raise
            self.executor.close()
            self.milvus_counts = {c: self.milvus.count(c) for c in self.milvus.collections}
            self.milvus.close()
            return self.summary()
        finally:
            self.lock.release()
            if hasattr(self.log, "log_text") and self.log.log_path:
                # What Ray and the libraries printed (not on the terminal): kept with the run.
                self.store.write_bytes(f"{RUNS_PREFIX}/{self.run_id}.log", self.log.log_text())

    # -- what the index is -----------------------------------------------------------------------

    def resolve(self) -> None:
        """Options the user left out come from the index (a nightly job needs no --model); the
        pixel budget is decided here, once, before anything is rendered."""
        from operators.models import decide_budget

        cfg, active = self.cfg, self.index.active if self.index else None
        target = self.index.pending if (self.index and self.index.pending and cfg.reindex and cfg.model is None) else active
        if cfg.model is None:
            if target is not None:
                parts = [target.model.name] + [f"{p}{m['name']}" for p, m in (("text:", target.text_model),
                                                                                ("sv:", target.sv_model)) if m]
                cfg.model = ",".join(parts)
                cfg.weights = cfg.weights or target.model.weights
                cfg.max_pixels = cfg.max_pixels or (target.model.max_pixels or None)
            else:
                cfg.model = DEFAULT_MODEL
        cfg.weights = cfg.weights or "random"
        cfg.collection = cfg.collection or (active.collection if active else "pagemill")
        cfg.validate_model()
        spec = decide_budget(model_spec(cfg))
        cfg.max_pixels = spec.max_pixels or cfg.max_pixels
        self.budget_spec = spec

    def requested_identity(self) -> IndexIdentity:
        cfg = self.cfg
        spec = self.budget_spec
        adapter = adapter_for(spec)
        budget = adapter.pixel_budget()
        _, text = split_model_specs(cfg.model)
        sv = sv_model_spec(cfg.model)
        fde = cfg.fde_params()
        return IndexIdentity(
            model=ModelIdentity(spec.name, spec.weights, adapter.dim, checkpoint_id(spec), budget.max_pixels,
                                budget.multiple),
            layouts={lay.name: lay.params(fde) for lay in parse_layouts(cfg.layouts)},
            text_model={"name": text, "dim": TextEmbedder(text).dim} if text else None,
            sv_model={"name": sv, "dim": sv_embedder_for(sv, spec).dim} if sv else None,
            collection=cfg.collection, milvus_base=cfg.collection)

    def identify(self) -> None:
        """Compare what the run asks for with what the index holds (``identity.decide``), then
        make the run's layouts and models the target index's: what it holds plus what was asked."""
        cfg = self.cfg
        decision = decide(self.index or IndexState(), self.requested_identity(), reindex=cfg.reindex,
                          drop_layouts=cfg.drop_layouts, out=self.store.uri)
        for line in decision.notes:
            self.say(line)
        self.mode, self.added, self.dropped = decision.mode, decision.added, decision.dropped
        self.target = target = decision.target
        self.index = state = decision.state
        cfg.layouts = [name for name in target.layouts if name not in ("mv", "sv-mean")]
        lay = target.layouts.get("sv-fde")
        if lay:
            cfg.fde_reps, cfg.fde_bits, cfg.fde_proj_dim, cfg.fde_seed = (lay["fde_reps"], lay["fde_bits"],
                                                                          lay["fde_proj_dim"], lay["fde_seed"])
        parts = [target.model.name.split("@", 1)[0] if not self.budget_spec.name.startswith("sim:") else self.budget_spec.name]
        parts += [f"{p}{m['name']}" for p, m in (("text:", target.text_model), ("sv:", target.sv_model)) if m]
        cfg.model = ",".join(parts)
        save_state(self.store, state)

    def model_preflight(self) -> None:
        """Every model of the run resolves before Ray starts: a typo, a checkpoint that is not
        there, or a hub that cannot be reached is one line naming the model, not minutes of
        actor restarts."""
        from operators.models.preflight import check_models

        check_models(self.cfg.model, model_spec(self.cfg))

    def recover(self) -> None:
        self.ledger = Ledger(self.store, self.target.generation)
        self.ledger.load()
        # Files another generation holds (the active index during a reindex, or the reindex's
        # during a plain run) are live too.
        self.other_live: set[str] = set()
        for other in (self.index.active, self.index.pending, self.index.retired):
            if other is not None and other.generation != self.target.generation:
                ledger = Ledger(self.store, other.generation)
                ledger.load()
                self.other_live |= ledger.state.live_files()
        # Files of units that never committed (the previous run died): not part of the index. Their
        # documents may have Milvus rows the ledger does not know: recorded before the files go.
        self.orphans = self.ledger.orphans((PAGES_PREFIX, QUARANTINE_PREFIX), self.other_live)
        self.suspects = self.ledger.load_suspects()
        if self.orphans:
            # A unit's own page parts hold what its writers sent to Milvus; a rewrite (``~`` in
            # the name: an older shard without the superseded documents) sent nothing.
            _suspect_orphans(self.store, [k for k in self.orphans if k.startswith(PAGES_PREFIX + "/") and "~" not in k],
                             self.suspects)
            self.ledger.save_suspects(self.suspects)
        for key in self.orphans:
            self.store.delete(key)
        for key in [o.key for o in self.store.list(RUNS_PREFIX) if "/plan/" in o.key]:
            self.store.delete(key)  # plan files of runs that died

    def open_sinks(self) -> None:
        cfg = self.cfg
        self.spec = model_spec(cfg)
        adapter = adapter_for(self.spec)  # cheap: reads the preset, loads nothing
        self.dim = adapter.dim
        self.budget = adapter.pixel_budget()
        self.layouts = parse_layouts(cfg.layouts)
        self.fde = cfg.fde_params()
        _, self.text_model = split_model_specs(cfg.model)
        self.text_dim = TextEmbedder(self.text_model).dim if self.text_model else None
        self.sv_model = sv_model_spec(cfg.model)
        self.sv_dim = sv_embedder_for(self.sv_model, self.spec).dim if self.sv_model else None  # loads nothing
        encode = EncodePages(self.dim, self.layouts, self.fde, text_dim=self.text_dim, sv_dim=self.sv_dim)
        self.pages_schema = S.pages_schema(self.dim, encode.extra_fields())
        # Connect (and create collections) before any work: an unreachable sink, or a field or
        # index the server would refuse, fails here, before anything is written.
        from operators.sinks.milvus_schema import parse_index_specs

        self.milvus = MilvusWriter(cfg.milvus_connection(), self.target.milvus_base, self.dim, text_dim=self.text_dim,
                                   layouts=self.layouts, fde_dim=self.fde.dim,
                                   index_specs=parse_index_specs(cfg.milvus_index), mv_mode=cfg.milvus_mv_mode,
                                   milvus_layouts=cfg.milvus_layouts or None, partition_key=cfg.milvus_partition_key,
                                   corpus=cfg.corpus, extra_sv={"sv-vlm": self.sv_dim} if self.sv_dim else None)
        self.milvus_plan = self.milvus.setup()
        self._drop_layouts()
        self.bulk = self._open_bulk()
        suspects = self.suspects
        if self.ledger.state.empty() and not suspects.everything and any(
                self.milvus.count_own(c, cfg.corpus) for c in self.milvus.collections):
            suspects.everything, suspects.why = True, "Milvus holds rows that the (empty) ledger does not account for"
            self.ledger.save_suspects(suspects)
        if suspects.everything:
            self.say(f"milvus: every commit deletes other versions' rows ({suspects.why})")
        self.had_suspects = bool(suspects.uris or suspects.everything)  # commits take theirs off the list
        for note in self.milvus_plan.notes:
            self.say(f"milvus: {note}")
        metadata = {"model": self.spec.name, "weights": cfg.weights, "dim": self.dim, "corpus": cfg.corpus,
                    "text_model": self.text_model, "sv_model": self.sv_model,
                    "layouts": {lay.name: lay.params(self.fde) for lay in self.layouts}}
        stages = [RenderPages(self.source, self.budget, RenderLimits(
            page_timeout_s=cfg.page_timeout_s, max_pages=cfg.max_pages, max_bytes=cfg.max_doc_bytes,
            extract_text=cfg.extract_text, password_map=load_password_map(cfg.passwords) if cfg.passwords else ())),
            EmbedPages(self.spec, batch_size=cfg.batch_size, max_batch_tokens=cfg.max_batch_tokens,
                       keep_pixels=bool(self.sv_model))]
        if self.sv_model:
            stages.append(EmbedSinglePages(self.sv_model, self.spec, batch_size=cfg.batch_size))
        if self.text_model:
            stages.append(EmbedText(self.text_model, device=cfg.device))
        stages.append(encode)
        self.writer = PagesWriter(self.store, self.pages_schema, metadata, self.run_id, self.milvus.for_workers(),
                                  bulk=self.bulk)
        self.pipeline = Pipeline(stages, self.writer, batch_sizes={
            "render": 1, "embed": cfg.batch_size, "embed_sv": cfg.batch_size, "embed_text": 64, "encode": None,
            "write": cfg.write_batch_pages})
        self.layout_stats = LayoutStats(self.layouts, self.dim, self.fde)

    def _drop_layouts(self) -> None:
        """``--drop-layouts``: the collections that hold only a dropped layout go (a field of the
        page collection cannot be dropped: it stays, unwritten by new pages' writers only if
        Milvus allows nulls, so it is said instead)."""
        if not self.dropped:
            return
        from operators.layouts.layout import parse_layout
        from operators.sinks.milvus_schema import patches_collection

        client = self.milvus.client
        for name in self.dropped:
            lay = parse_layout(name)
            own = patches_collection(self.target.milvus_base, name) if lay.is_multi_vector else \
                f"{self.target.milvus_base}_{lay.column}"
            if client.has_collection(own):
                client.drop_collection(own)
                self.say(f"milvus: {own} dropped ({name} removed from the index)")
            else:
                self.say(f"milvus: {name} is a field of {self.milvus.pages_collection}, which Milvus cannot drop "
                         f"from a collection: rebuild it without the layout with pagemill milvus-load --recreate")

    def _open_bulk(self):
        """``--milvus-bulk-dir``: a first load, imported by Milvus at the end of the run. Refused
        unless the collections are empty (import inserts; it cannot replace rows), or this
        continues a first load that an earlier run staged and never imported. A run without the
        option refuses while such a load is pending: Milvus lacks the rows of committed units."""
        from operators.sinks.milvus_schema import MilvusError

        pending = json.loads(self.store.read_bytes(BULK_STATE_KEY)) if self.store.exists(BULK_STATE_KEY) else None
        if not self.cfg.milvus_bulk_dir:
            if pending:
                raise MilvusError(f"a first load into Milvus by bulk import is unfinished (staged in {pending['dir']}): "
                                  f"run again with --milvus-bulk-dir {pending['dir']}, or load Milvus from the shards "
                                  f"with pagemill milvus-load --recreate")
            return None
        held = {c: n for c in self.milvus.collections if (n := self.milvus.count(c))}
        if held:
            raise MilvusError(f"--milvus-bulk-dir is for a first load, but {', '.join(f'{c} ({n} rows)' for c, n in held.items())} "
                              f"already hold rows (import inserts and cannot replace rows): drop the option to upsert, "
                              f"or rebuild with pagemill milvus-load --recreate --bulk-dir")
        stage = open_store(self.cfg.milvus_bulk_dir, s3_options=self.cfg.s3_options())
        # Files staged by units that never committed (a run that died): not to be imported.
        committed = self.ledger.state.unit_index
        for c in self.milvus.collections:
            for obj in stage.list(c):
                if obj.key.rsplit("/", 1)[-1].split("-", 1)[0] not in committed:
                    stage.delete(obj.key)
        self.store.write_bytes(BULK_STATE_KEY, json.dumps({"dir": self.cfg.milvus_bulk_dir, "pending": True}).encode())
        self.say(f"milvus: first load by bulk import: writers stage Parquet files in {self.cfg.milvus_bulk_dir}, "
                 f"imported at the end of the run")
        return stage

    def make_executor(self):
        cfg = self.cfg
        if cfg.executor == "local":
            from pipelines.executors.local import LocalExecutor

            return LocalExecutor()
        from pipelines.executors.ray_executor import RayExecutor

        return RayExecutor(address=cfg.ray_address, num_gpus=cfg.num_gpus, embed_actors=cfg.embed_actors,
                           render_actors=cfg.render_actors, object_store_mb=cfg.object_store_mb,
                           encode_actors=cfg.encode_actors, write_actors=cfg.write_actors,
                           write_placement=cfg.write_placement, out_is_local=self.store.local_path("") is not None,
                           milvus_lite=self.milvus.conn.lite, log=self.log)

    def plan(self):
        """Units stream from the listing: the driver never holds the whole source in memory."""
        cfg = self.cfg
        self.counts = PlanCounts(seen_keys=[] if cfg.delete_missing else None)
        self.say(f"run {self.run_id}: planning from {self.source.uri}"
                 + (f" ({len(self.orphans)} files of an interrupted run removed)" if self.orphans else ""))
        listing = self.source.list_documents()
        first = next(iter_ := iter(listing), None)  # the first listing call fails fast on a bad source

        def chain():
            if first is not None:
                yield first
                yield from iter_

        # A generation's units never share ids (and so file names) with another's.
        return plan_units(chain(), self.ledger.state, cfg.unit_max_docs, cfg.unit_max_bytes, self.counts,
                          retry_quarantined=cfg.retry_quarantined, suspects=self.suspects,
                          salt=f"g{self.target.generation}" if self.target.generation > 1 else "")

    def execute(self) -> None:
        self.progress = Progress(None, self.cfg.progress_interval_s, stream=self.log, live=self.executor.live_counters)
        units = self.plan()
        plan_file = None
        if self.cfg.executor != "local":
            plan_file = PlanFile(self.store, self.run_id)
            for unit in units:
                plan_file.add(unit)
            plan_file.close()
            self._listed(plan_file.units)
            if plan_file.units:
                self.executor.start()
                where = self.executor.placement
                self.say(f"writes: {PLACEMENT_WORDS[where['where']]} ({where['why']})")
                if where["where"] == "driver":
                    self.writer.share_client(self.milvus)
            units = iter(())
        else:
            units = self._announced(units)
            self.writer.share_client(self.milvus)
        self.committer = UnitCommitter(self.ledger, self.run_id, executor=self.executor, milvus=self.milvus,
                                       suspects=self.suspects, manifest=self.target is self.index.active)
        tracker = UnitTracker(self.on_unit, on_stats=self.stage_stats.observe)
        t = time.time()
        self.progress.begin()
        try:
            self.exec_stats = self.executor.run(units, self.pipeline, tracker, plan=plan_file)
        finally:
            self.progress.finish()
        self.run_s = time.time() - t
        if plan_file is not None:
            plan_file.delete()

    def _listed(self, n_units: int) -> None:
        self.progress.total_units = n_units
        c = self.counts
        self.say(f"listing done: {c.seen} documents seen, {c.skipped_unchanged} unchanged, {c.pending} to process "
                 f"in {n_units} units")
        if self.milvus.conn.lite:
            warning = self.lite_memory_check(c.pending)
            if warning:
                self.say(f"warning: {warning}")

    def lite_memory_check(self, pending_docs: int) -> str | None:
        """Will Milvus Lite's collections fit in this machine's memory once these documents are
        in? Pages per document as the index has them so far (10 when it is empty); rows per page
        from the rows Milvus holds per page so far, else the model's token budget."""
        from pipelines.analysis.costs import lite_memory_warning

        state = self.ledger.state
        docs, pages = len(state), state.pages_held()
        per_doc = pages / docs if docs and pages else 10.0
        projected = pages + pending_docs * per_doc
        held = sum(self.milvus.count(c) for c in self.milvus.collections) if pages else 0
        if held:
            rows_per_page = held / pages
        else:  # one row per vector of each multi-vector layout in Milvus, one for the page row
            tokens = self.budget.max_pixels / (196 if family_of(self.spec) == "colpali" else 784)
            rows_per_page = 1 + sum(tokens for f in self.milvus_plan.fields if f.mode == "rows")
        # a row: the vector (float32 on Lite) and its keys (about 120 bytes)
        return lite_memory_warning(projected, rows_per_page * (self.dim * 4 + 120))

    def _announced(self, units):
        """Pass units through; when the listing is exhausted, say what it found."""
        n = 0
        for unit in units:
            n += 1
            yield unit
        self._listed(n)

    def on_unit(self, unit_id: str, info: dict, parts: list[dict]) -> None:
        self.lock.check()
        t = time.perf_counter()
        added = self.committer.commit(unit_id, info, parts)
        self.stage_stats.committed(added["pages"], time.perf_counter() - t)
        for p in parts:
            self.stage_stats.wrote(p)
        self.layout_stats.add_counts(info, parts)
        self.totals.add(info, added)
        self.progress.update(added["pages"], sum(1 for d in info["docs"] if d["status"] == "quarantined"))

    def complete_layouts(self) -> None:
        """Layouts, a text model or a single-vector model added to an existing index: the pages
        committed before are given them from the archive (shards rewritten with the new columns,
        the new Milvus fields filled), exactly-once per shard like any commit."""
        self.relayouted = 0
        if self.mode != "ingest" or not self.target.building:
            return
        from operators.augment import AugmentShards, augment_job_id
        from operators.layouts.layout import parse_layout

        added = list(self.target.building)
        layouts = [parse_layout(n) for n in added if n not in ("text", "sv-vlm")]
        keys = sorted(k for k in self.ledger.state.files if k.startswith(PAGES_PREFIX + "/"))
        sv = None
        if "sv-vlm" in added:
            limits = RenderLimits(page_timeout_s=self.cfg.page_timeout_s, max_pages=self.cfg.max_pages,
                                  max_bytes=self.cfg.max_doc_bytes, extract_text=False)
            sv = (self.sv_model, self.spec, self.source, self.budget, limits)
        names = [n if n not in ("text",) else "text" for n in added]
        milvus = self.milvus.subset([n for n in names if self.milvus.plan.by_layout(n)])
        job = augment_job_id(added)
        op = AugmentShards(self.store, job, self.pages_schema, self.dim, layouts, self.fde,
                           text_model=self.text_model if "text" in added else None, sv=sv, milvus=milvus,
                           device=self.cfg.device)
        if keys:
            self.say(f"index: adding {', '.join(added)} to {len(keys)} shards from the archive")
        for key, new_key, pages in self.executor.map_items(op, keys, driver_milvus=self.milvus):
            if new_key:
                self.committer.commit_rewrite(job, key, new_key)
                self.relayouted += pages
        self.target.building = []
        save_state(self.store, self.index)

    def complete_generation(self) -> None:
        """A reindex run that finished has every listed document in the new generation: swap it
        in (``_index.json`` is the commit point), then retire the old one: its collections (the
        index's names become aliases of the new ones), its shards and its ledger."""
        self.swapped = False
        state = self.index
        if self.mode == "reindex" and state.pending is not None:
            state.retired, state.active, state.pending = state.active, state.pending, None
            state.history.append({"generation": state.active.generation, "swapped_at": time.time(),
                                  "model": state.active.describe(), "run_id": self.run_id})
            save_state(self.store, state)
            self.swapped = True
            self.say(f"reindex complete: generation {state.active.generation} ({state.active.describe()}) is the "
                     f"index now")
            from pipelines.ingest.commit import write_manifest

            write_manifest(self.store, self.ledger.state, state.active.generation)
        if state.retired is not None:
            self.retire(state)

    def retire(self, state: IndexState) -> None:
        old, new = state.retired, state.active
        aliases = self.milvus.point_aliases(new.collection, new.milvus_base, drop_base=old.milvus_base)
        ledger = Ledger(self.store, old.generation)
        ledger.load()
        live_now = self.ledger.state.live_files() if self.ledger.generation == new.generation else set()
        for key in sorted(ledger.state.live_files() - live_now):
            self.store.delete(key)
        ledger.delete_all()
        state.retired = None
        save_state(self.store, state)
        if aliases:
            self.say(f"milvus: {', '.join(aliases)} now point at generation {new.generation}")

    def finish(self) -> None:
        cfg = self.cfg
        # Every unit committed, no writer in flight: a file no record names is a part that a
        # retried write batch left under another key (a lost node's), never read by anyone.
        self.swept = self.ledger.orphans((PAGES_PREFIX, QUARANTINE_PREFIX), self.other_live)
        for key in self.swept:
            self.store.delete(key)
        self.deleted_docs = self.deleted_pages = 0
        if cfg.delete_missing:
            missing = self.ledger.state.missing(self.counts.seen_key_array())
            if missing and not self.counts.seen:
                raise UsageError(f"--delete-missing: the source lists no documents at all; refusing to delete all "
                                 f"{len(missing)} indexed documents (wrong source?)")
            self.deleted_docs, self.deleted_pages = len(missing), self.committer.delete_documents(missing)
        if self.ledger.state.records and len(self.ledger.pending_records) >= cfg.ledger_compact_every:
            self.ledger.compact()
        # Suspects left that the ledger knows were not committed again (unchanged since their
        # last commit): Milvus may hold the dead commit's version of them, so resync them.
        self.resynced = self.committer.resync_milvus(self.suspects.uris)
        self.imported = None
        if self.bulk is not None:
            from pipelines.index.milvus_load import import_staged

            self.imported = import_staged(self.milvus, self.bulk, self.milvus.collections)
            self.store.delete(BULK_STATE_KEY)  # imported: Milvus holds every committed unit's rows
            for c in self.milvus.collections:
                for obj in self.bulk.list(c):
                    self.bulk.delete(obj.key)
        self.milvus.flush()  # once per run: seals the run's segments (commits do not flush)
        self.committer.publish(force=True)
        if self.had_suspects:
            # A run over the whole source has given every document a deleting commit or a resync,
            # so the unexplained rows are accounted for.
            self.suspects.uris = {u for u in self.suspects.uris if u not in self.ledger.state}
            if not cfg.retry_quarantined:
                self.suspects.everything, self.suspects.why = False, None
            self.ledger.save_suspects(self.suspects)

    def summary(self) -> dict:
        """The run's summary (``summary.build``), said where it matters and written to
        ``OUT/_runs/<run id>.json`` (and ``--summary``)."""
        stages = self.stage_stats.summary()
        diagnosis = bottleneck(stages, accelerator=self.spec.name.startswith("sim:") or on_accelerator(self.totals))
        if diagnosis:
            self.say(diagnosis)
        layouts = self.layout_stats.summary()
        if self.cfg.fidelity_queries:
            from pipelines.analysis.fidelity import measure_fidelity

            fid = measure_fidelity(self.store, self.spec, self.layouts, self.fde, self.cfg.fidelity_queries,
                                   seed=self.cfg.fidelity_seed)
            for name, res in fid["layouts"].items():
                layouts.setdefault(name, {})["fidelity"] = res
        summary = build_summary(self, stages, diagnosis, layouts)
        data = json.dumps(summary, indent=2, sort_keys=True).encode()
        self.store.write_bytes(f"{RUNS_PREFIX}/{self.run_id}.json", data)
        if self.cfg.summary:
            with open(self.cfg.summary, "wb") as f:
                f.write(data)
        return summary


def run_ingest(cfg: IngestConfig, log=None) -> dict:
    """Run the job to the end and return the run summary (also written to ``OUT/_runs/``)."""
    return IngestJob(cfg, log).run()


__all__ = ["IngestJob", "run_ingest", "LEDGER_PREFIX", "RUNS_PREFIX"]
