"""Milvus behind the store door: Milvus Lite (a database file, the embedded default) and Milvus
servers and clusters, by URI.

An index is a set of collections (``<base>_pages``, ``<base>_patches*``, ``<base>_text``, ...:
operators/stores/milvus/schema.py), planned against the server's version before anything is
created. Writes are upserts by stable keys and deletes by filter, visible at once: a unit that
died between its writes and its ledger record leaves rows the ledger does not know, so the store
keeps its *suspects* in the ledger. A first load can go through Milvus' bulk import instead
(``--milvus-bulk-dir``, operators/stores/milvus/bulk.py).
"""

from __future__ import annotations

import time

import numpy as np

from operators.stores.door import Hit, IndexShape, StoreWriter, VectorStore
from operators.stores.milvus.client import MilvusConnection, default_uri, is_lite_uri, redact_uri
from operators.stores.milvus.schema import (
    BM25_LAYOUT,
    TEXT_LAYOUT,
    MilvusError,
    parse_index_specs,
    patches_collection,
)


class MilvusStore(VectorStore):
    name = "milvus"
    title = "Milvus"
    suspects_record = "milvus_suspects"

    def __init__(self, conn: MilvusConnection, *, index_specs: list[str] | tuple = (), mv_mode: str = "auto",
                 layouts: list[str] | None = None, partition_key: bool = False, bulk_dir: str | None = None,
                 storage: str | None = None, s3_options=None):
        """``storage``: where a server keeps its files (its localStorage.path, or its bucket's root
        path), for ``measure`` to read their sizes."""
        self.conn = conn
        self.index_specs = parse_index_specs(list(index_specs or ()))
        self.mv_mode = mv_mode
        self.only_layouts = list(layouts or [])
        self.partition_key = partition_key
        self.corpus = "default"
        self.bulk_dir = bulk_dir
        self.storage = storage
        self._files = None  # the server's storage, checked (discover)
        self.s3_options = s3_options
        self._writer = None  # the driver's MilvusWriter (prepare): plan, setup, deletes
        self._reader = None  # a reader's (discover)
        self._first_load = None

    @classmethod
    def from_options(cls, uri: str, options: dict, s3_options=None, out: str | None = None) -> MilvusStore:
        """The store that the store's options describe (pipelines/options.py, group ``store``:
        every key present, defaults filled in)."""
        layouts = options.get("milvus_layouts") or []
        if isinstance(layouts, str):
            layouts = [x.strip() for x in layouts.split(",") if x.strip()]
        specs = options.get("milvus_index") or []
        return cls(MilvusConnection.from_options(uri, options), index_specs=[specs] if isinstance(specs, str) else specs,
                   mv_mode=options.get("milvus_mv_mode") or "auto", layouts=layouts,
                   partition_key=bool(options.get("milvus_partition_key")), bulk_dir=options.get("milvus_bulk_dir"),
                   storage=options.get("milvus_storage"), s3_options=s3_options)

    @staticmethod
    def check_options(options: dict, out: str) -> str | None:
        """What is wrong with the store's options, naming the key; None when nothing is."""
        import os

        if options.get("milvus_ca_file") and not os.path.isfile(options["milvus_ca_file"]):
            return f"milvus_ca_file: no such file {options['milvus_ca_file']!r}"
        try:
            parse_index_specs(list(options.get("milvus_index") or []))
        except MilvusError as e:
            return str(e)
        if not (options.get("vectors") or options.get("milvus") or default_uri(out)):
            return ("vectors: required when out is an object store (Milvus Lite needs a local file): pass --vectors "
                    "PATH.db, a server URI or lancedb:s3://bucket/prefix")
        return None

    def check(self, shape: IndexShape) -> None:
        """What can be checked before anything is created: on Milvus Lite, whose abilities its
        version decides, the plan of the index's fields (an index type Lite lacks is one line,
        before the database file is made)."""
        if not self.conn.lite:
            return
        from importlib.metadata import PackageNotFoundError, version

        from operators.stores.milvus.schema import plan_fields, server_info

        try:
            raw = f"milvus_lite-{version('milvus-lite')}"
        except PackageNotFoundError:
            raw = "milvus_lite"
        plan_fields(server_info(raw), shape.base, list(shape.layouts), shape.dim, fde_dim=shape.fde_dim,
                    text_dim=shape.text_dim, index_specs=self.index_specs, mv_mode=self.mv_mode,
                    milvus_layouts=self.only_layouts or None, partition_key=self.partition_key,
                    extra_sv=dict(shape.page_vectors) or None, text_per_page=not shape.text_chunks)

    def check_layouts(self, run_layouts: list[str]) -> str | None:
        """The layouts the options send to Milvus must be the run's."""
        for name in self.only_layouts:
            if name not in run_layouts:
                return f"milvus_layouts: {name!r} is not a layout of this run (its layouts: {', '.join(run_layouts)})"
        return None

    # -- what it is ----------------------------------------------------------------------------

    @property
    def single_process(self) -> str | None:
        return "Milvus Lite" if self.conn.lite else None  # one process' database file

    @property
    def local(self) -> bool:
        return self.conn.lite

    @property
    def uri(self) -> str:
        return self.conn.uri

    @property
    def _client(self):
        return self._writer if self._writer is not None else self._reader

    @property
    def plan(self):
        return self._client.plan if self._client is not None else None

    @property
    def label(self) -> str:
        c = self._client
        return c.server.label if c is not None and c.server is not None else f"Milvus at {redact_uri(self.uri)}"

    @property
    def collections(self) -> list[str]:
        return self._client.collections if self._client is not None else []

    def layouts(self) -> list[str]:
        return [f.layout for f in self.plan.fields] if self.plan else []

    # -- the index's collections -----------------------------------------------------------------

    def prepare(self, shape: IndexShape, recreate: bool = False, fresh: bool = False) -> list[str]:
        from operators.stores.milvus.writer import MilvusWriter

        self._writer = MilvusWriter(self.conn, shape.base, shape.dim, text_dim=shape.text_dim,
                                    layouts=list(shape.layouts), fde_dim=shape.fde_dim, index_specs=self.index_specs,
                                    mv_mode=self.mv_mode, milvus_layouts=self.only_layouts or None,
                                    partition_key=self.partition_key, corpus=shape.corpus,
                                    extra_sv=dict(shape.page_vectors) or None, text_per_page=not shape.text_chunks)
        self.corpus = shape.corpus
        self.dropped: list[str] = []
        if recreate:
            self._writer.connect()
            self.dropped = self._writer.drop()
        elif fresh:
            self._writer.connect()
            self.dropped = self._writer.drop(only_empty=True)
        plan = self._writer.setup()
        return list(plan.notes)

    def discover(self, base: str) -> list[str]:
        from operators.stores.milvus.reader import MilvusReader

        self._files = self._storage()
        self._reader = MilvusReader(self.conn, base)
        self._reader.connect()
        self._reader.discover()
        return list(self._reader.notes)

    def remove(self, base: str) -> list[str]:
        from operators.stores.milvus.client import MilvusClientBase

        conn = MilvusClientBase(self.conn, base)
        conn.connect()
        try:
            c = conn.client
            gone = sorted(n for n in conn._guard("list", c.list_collections) if n.startswith(base + "_"))
            for n in gone:
                try:  # (pymilvus' list_aliases looks in the default database on some servers)
                    aliases = c.list_aliases(n).get("aliases", [])
                except Exception:
                    aliases = []
                for alias in aliases:
                    conn._guard("drop alias", c.drop_alias, alias)
                conn._guard("drop", c.drop_collection, n)
            return gone
        finally:
            conn.close()

    def drop_layouts(self, names: list[str]) -> list[str]:
        """A layout's own collection goes; a field of the page collection cannot be dropped from a
        collection: it stays, and that is said."""
        from operators.layouts.layout import parse_layout

        client, base, notes = self._writer.client, self._writer.collection, []
        for name in names:
            lay = parse_layout(name)
            own = patches_collection(base, name) if lay.is_multi_vector else f"{base}_{lay.column}"
            if client.has_collection(own):
                client.drop_collection(own)
                notes.append(f"{own} dropped ({name} removed from the index)")
            else:
                notes.append(f"{name} is a field of {self._writer.pages_collection}, which Milvus cannot drop from a "
                             f"collection: rebuild it without the layout with pagemill milvus-load --recreate")
        return notes

    # -- a run ---------------------------------------------------------------------------------

    def start(self, ledger) -> list[str]:
        from operators.stores.milvus.bulk import FirstLoad

        if not self.bulk_dir:
            FirstLoad.refuse_pending(ledger)
            return []
        self._first_load = FirstLoad(self._writer, self.bulk_dir, self.s3_options)
        return [self._first_load.start(ledger, self.collections)]

    def writer(self, layouts: list[str] | None = None) -> StoreWriter:
        w = self._writer.subset([n for n in layouts if self.plan.by_layout(n)]) if layouts is not None \
            else self._writer.for_workers()
        if self._first_load is not None and layouts is None:
            w.stage = self._first_load.stage
        w.share(self._writer)  # (pickled for a worker, it connects on its own)
        return w

    def delete_other_versions(self, versions: dict[str, str | None]) -> int:
        return self._writer.delete_other_versions(versions)

    def finish(self, recorded: dict | None = None) -> dict | None:
        if self._first_load is None:
            return {"bulk_imported": None}
        t0 = time.perf_counter()
        imported = self._first_load.finish(self.collections)
        # the server's import, from the first task to the rows counted: what a backfill by bulk
        # import waits for after its writers (calibrate's rate for this path)
        return {"bulk_imported": imported, "bulk_import_s": round(time.perf_counter() - t0, 3)}

    def flush(self) -> None:
        self._writer.flush()  # once per run: seals the run's segments (commits do not flush)

    def publish(self, collection: str, base: str, retired_base: str | None, generation: int) -> list[str]:
        aliases = self._writer.point_aliases(collection, base, drop_base=retired_base)
        return [f"{', '.join(aliases)} now point at generation {generation}"] if aliases else []

    def holds_rows(self) -> bool:
        return any(self._writer.count_own(c, self.corpus) for c in self.collections)

    def counts(self) -> dict[str, int]:
        return {c: self._client.count(c) for c in self.collections}

    def memory_warning(self, pages: float, pages_held: int, vectors_per_page: float, dim: int) -> str | None:
        """Milvus Lite holds its collections in this process' memory: will ``pages`` fit? Rows
        per page from what the collections hold for the ``pages_held`` so far, else one per
        vector of each multi-vector layout in rows (``vectors_per_page``, the model's) and one for
        the page row; a row is its vector (float32 on Lite) and its keys."""
        if not self.conn.lite:
            return None
        from operators.stores.milvus.lite import ROW_KEY_BYTES, lite_memory_warning

        held = sum(self.counts().values()) if pages_held else 0
        if held:
            rows_per_page = held / pages_held
        else:
            rows_per_page = 1 + sum(vectors_per_page for f in self.plan.fields if f.mode == "rows")
        return lite_memory_warning(pages, rows_per_page * (dim * 4 + ROW_KEY_BYTES))

    def summary(self) -> dict:
        return {"uri": redact_uri(self.uri), **self.plan.summary()}

    def pending(self, ledger) -> list[str]:
        from operators.stores.milvus.bulk import PENDING_RECORD

        if ledger.load_record(PENDING_RECORD):
            return ["a first load by bulk import is unfinished: run ingest with --milvus-bulk-dir"]
        return []

    def close(self) -> None:
        for c in (self._writer, self._reader):
            if c is not None:
                c.close()

    # -- reading -------------------------------------------------------------------------------

    def search(self, layout: str, query: np.ndarray, candidates: int, corpus: str | None = None) -> list[Hit]:
        from operators.stores.milvus.search import corpus_filter, search_layout

        return search_layout(self._client.client, self.plan, layout, query, candidates, corpus_filter(self.plan, corpus))

    def text_lists(self) -> dict[str, bool]:
        dense = self.plan.by_layout(TEXT_LAYOUT)
        return {"bm25": self.plan.by_layout(BM25_LAYOUT) is not None, "dense": dense is not None,
                "per_chunk": dense is not None and dense.mode == "chunks"}

    def text_note(self) -> str | None:
        dense = self.plan.by_layout(TEXT_LAYOUT)
        if dense is None or self.plan.by_layout(BM25_LAYOUT) is not None:
            return None
        if dense.mode == "page":
            return ("lexical search unavailable: this index's text layer predates chunks (one vector per page): "
                    "dense text only; ingest into a new OUT for chunks and BM25")
        return f"lexical search unavailable on {self.label}: dense text only (BM25 needs Milvus >= 2.5 or Milvus Lite)"

    def search_text(self, kind: str, query, limit: int, corpus: str | None = None) -> list[Hit]:
        from operators.stores.milvus.search import corpus_filter, search_text

        return search_text(self._client.client, self.plan, kind, query, limit, corpus_filter(self.plan, corpus))

    def fetch(self, layout: str, page_ids: list[str]) -> dict[str, np.ndarray]:
        return self._client.fetch_vectors(layout, page_ids)

    def count_columns(self) -> list[str]:
        return sorted({f.column for f in self.plan.fields if f.mode in ("rows", "chunks")})

    def expected_rows(self, pages: int, vectors: dict[str, int]) -> dict[str, int | None]:
        exp: dict[str, int | None] = {}
        for f in self.plan.fields:
            if f.mode in ("rows", "chunks"):  # a row per vector; the text layer's, a row per chunk
                exp[f.collection] = vectors.get(f.column)
            elif f.collection not in exp:
                exp[f.collection] = pages if f.layout != TEXT_LAYOUT else None  # text: pages with text only
        exp[self.plan.pages_collection] = pages
        return exp

    def archive_columns(self, available: list[str]) -> list[str]:
        from operators import schema as S

        columns = [S.PAGE_ID, S.DOC_ID, S.SOURCE_URI, S.DOC_VERSION, S.PAGE_NUMBER]
        for f in self.plan.fields:
            columns.append(f.column)
            if f"{f.column}_scale" in available:
                columns.append(f"{f.column}_scale")
            if f.mode == "chunks":
                columns.append(S.TEXT)  # the text layer's rows are the chunks of the page text
        return list(dict.fromkeys(c for c in columns if c in available))

    def load(self, batches, shards: int, bulk_dir: str | None = None, log=None) -> dict:
        from operators.stores.milvus.load import bulk_load, upsert_load

        out = bulk_load(self._writer, batches, shards, bulk_dir, log) if bulk_dir else \
            upsert_load(self._writer, batches, shards, log)
        out = {**out, "dropped": self.dropped, **self.plan.summary()}
        note = next((n for n in self.plan.notes if "before chunks" in n), None)
        if note and not bulk_dir:
            out["text_layer_note"] = note
        return out

    def _storage(self):
        """The server's storage named by ``--milvus-storage``, checked (None when not given)."""
        if not self.storage:
            return None
        from operators.errors import UsageError
        from operators.io.uris import open_store

        files = open_store(self.storage, self.s3_options, create=False)
        if not files.list("insert_log") and not files.list("data/insert_log"):
            raise UsageError(f"--milvus-storage {self.storage}: no insert_log/ in it (the server's localStorage.path, "
                             f"or the bucket's root path)")
        return files

    def measure(self, page_ids: list[str]) -> dict:
        from operators.stores.milvus.storage import measure_rows, measure_storage

        return {"milvus": measure_rows(self._client, page_ids),
                "milvus_collections": measure_storage(self._client, self._files), "milvus_lite": self.conn.lite}


__all__ = ["MilvusError", "MilvusStore", "default_uri", "is_lite_uri"]
