"""Milvus writer: the collections and fields of a ``MilvusPlan`` (operators/stores/milvus/schema.py),
written by upsert.

The plan is decided once, on the driver (``setup``: connect, check against the server, create
what is missing); the write workers get the plan and a connection without secrets and only
write (``open``). Upserts by stable keys (``page_id``; ``<page_id>:<index>`` for one row per
vector) make a replayed batch harmless; rows of a document's other versions are deleted by
filter. An acknowledged write is in Milvus' write-ahead log, so writes are not flushed one by one
(that makes tiny sealed segments): a run flushes once, at its end.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from operators import schema as S
from operators.faults import checkpoint
from operators.stores.door import StoreWriter
from operators.stores.milvus import private as milvus_private
from operators.stores.milvus.client import (
    Columns,
    MilvusClientBase,
    MilvusConnection,
    escape,
    first_line,
    layout_vectors,
    sv_matrix,
)
from operators.stores.milvus.schema import (
    BM25_LAYOUT,
    CHUNK_ID,
    CHUNK_TEXT,
    CORPUS,
    PATCH_ID,
    TEXT_LAYOUT,
    VECTOR,
    IndexSpec,
    MilvusError,
    MilvusPlan,
    build_collection,
    plan_fields,
)

UPSERT_BATCH_ROWS = 2000


class MilvusWriter(MilvusClientBase, StoreWriter):
    """Creates the plan's collections (``setup``, on the driver) and writes pages (anywhere): the
    Milvus store's ``StoreWriter``. ``stage``: a first load's bulk-import folder (rows are staged
    there as Parquet files instead of upserted)."""

    def __init__(self, conn: MilvusConnection | str, collection: str = "pagemill", dim: int = 128, *,
                 text_dim: int | None = None, layouts: list | None = None, fde_dim: int | None = None,
                 index_specs: dict[str, IndexSpec] | None = None, mv_mode: str = "auto",
                 milvus_layouts: list[str] | None = None, partition_key: bool = False, corpus: str = "default",
                 extra_sv: dict[str, int] | None = None, plan: MilvusPlan | None = None, text_per_page: bool = False):
        super().__init__(conn, collection)
        self.dim = dim
        self.text_dim = text_dim
        self.layouts = layouts
        self.fde_dim = fde_dim
        self.index_specs = index_specs
        self.mv_mode = mv_mode
        self.milvus_layouts = milvus_layouts
        self.partition_key = partition_key
        self.corpus = corpus
        self.extra_sv = extra_sv
        self.plan = plan
        self.text_per_page = text_per_page  # the text layer as before chunks (see plan_fields)
        self.rows_written: dict[str, int] = {}
        self.delete_calls = 0  # deletes by filter sent (each costs the server a query)
        self._columnar: bool | None = None  # column requests (True), the row API (False), not yet known
        self.stage = None
        self._shared = None  # the driver's writer, whose client this one uses (writes in the driver)

    def subset(self, layouts: list[str]) -> MilvusWriter:
        """A copy for the workers that writes only these layouts' fields (and the keys of their
        collections): what an added layout or model sends for pages Milvus already holds."""
        import dataclasses

        # (the text layer's BM25 vectors come with it: Milvus computes them from the chunk text sent)
        keep = [f for f in self.plan.fields if f.layout in layouts or (f.layout == BM25_LAYOUT and TEXT_LAYOUT in layouts)]
        w = self.for_workers()
        w.plan = dataclasses.replace(self.plan, fields=keep)
        return w

    def point_aliases(self, collection: str, base: str, drop_base: str | None = None) -> list[str]:
        """After a reindex: the index's names (``<collection>_pages``, ...) become aliases of this
        generation's collections (``<base>_pages``, ...), so that anyone who searches by those
        names gets the new index; the retired generation's collections (``<drop_base>_...``) go.
        Returns the aliases set."""
        return self._guard("aliases", self._point_aliases, collection, base, drop_base)

    def _point_aliases(self, collection: str, base: str, drop_base: str | None) -> list[str]:
        c = self.client
        names = set(c.list_collections())
        done = []
        if base != collection:
            for real in self.collections:
                alias = collection + real[len(base):]
                try:
                    current = c.describe_alias(alias).get("collection_name")
                except Exception:
                    current = None
                if current:
                    c.alter_alias(real, alias)
                else:
                    if alias in names:  # the first generation's real collection under the index's name
                        c.drop_collection(alias)
                    c.create_alias(real, alias)
                done.append(alias)
        if drop_base and drop_base != base:
            old = [n for n in c.list_collections() if n.startswith(drop_base + "_") and not n.startswith(base + "_")
                   and not n[len(drop_base) + 1:].startswith("g") and n not in done]
            for n in old:
                c.drop_collection(n)
        return done

    def for_workers(self) -> MilvusWriter:
        """A copy to send to write workers: the decided plan, the connection without secrets."""
        if self.plan is None:
            raise RuntimeError("setup() first: the plan is decided on the driver")
        return MilvusWriter(self.conn.public(), self.collection, self.dim, plan=self.plan, corpus=self.corpus)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["client"] = None
        state["_shared"] = None
        state["conn"] = self.conn.public()  # never pickle a secret
        return state

    def _connect(self) -> None:
        if self.conn.lite:
            os.makedirs(os.path.dirname(os.path.abspath(self.uri)), exist_ok=True)
        super()._connect()

    def share(self, driver: MilvusWriter) -> None:
        """Write through the driver's own client (writes in the driver's process: Milvus Lite is one
        process' database file, and one client per process is enough)."""
        self._shared = driver

    def open(self) -> None:
        """On a write worker: connect with this process' secrets; the plan is given."""
        if self._shared is not None:
            self.client, self.server, self.conn = self._shared.client, self._shared.server, self._shared.conn
        elif self.client is None:
            self.connect()
        for c in self.collections:
            self.rows_written.setdefault(c, 0)

    def close(self) -> None:
        if self._shared is not None:
            self.client = None  # the driver's client stays open
            return
        super().close()

    def write(self, unit_id: str, pages: pa.Table) -> dict:
        """Upsert the pages' rows (or stage them, for a first load by bulk import); the rows sent
        per collection and how."""
        if self.stage is not None:
            return {"rows": {s["collection"]: s["rows"] for s in self._stage(unit_id, pages)}, "path": "bulk"}
        rows = self.write_pages(pages)
        return {"rows": rows, "path": self.upsert_path}

    def _stage(self, unit_id: str, pages: pa.Table) -> list[dict]:
        """Milvus' import files for these pages, one per collection (the rows the upserts would
        send, as ``Columns.to_arrow`` types them), named after the unit (uncommitted units' files
        are recognised by it)."""
        import hashlib

        from operators.stores.milvus.bulk import stage_table

        h = hashlib.blake2b("\n".join(sorted(pages[S.PAGE_ID].to_pylist())).encode(), digest_size=4).hexdigest()
        staged = []
        for collection, cols in self.columns_for(pages).items():
            key = f"{collection}/{unit_id}-{h}.parquet"
            stage_table(self.stage, key, cols.to_arrow())
            staged.append({"collection": collection, "key": key, "rows": cols.n})
        return staged

    def setup(self) -> MilvusPlan:
        """Connect, decide the plan against the server, and create what is missing. Fails before
        any data is written if the server would refuse a field or an index."""
        self.connect()
        layouts = self.layouts
        if layouts is None:
            from operators.layouts.layout import parse_layouts

            layouts = parse_layouts([])
        existing = None
        if self._guard("describe", self.client.has_collection, self.pages_collection):
            desc = self._guard("describe", self.client.describe_collection, self.pages_collection)
            existing = {f["name"] for f in desc.get("fields", [])} | {
                f["name"] for f in desc.get("struct_array_fields", []) or []}
        text = f"{self.collection}_text"
        if self.text_dim and not self.text_per_page and self._guard("describe", self.client.has_collection, text):
            # an index built before chunks keeps its text layer's form (a vector per page)
            desc = self._guard("describe", self.client.describe_collection, text)
            self.text_per_page = any(f["name"] == "sv_text" for f in desc.get("fields", []))
        self.plan = plan_fields(self.server, self.collection, layouts, self.dim, fde_dim=self.fde_dim,
                                text_dim=self.text_dim, index_specs=self.index_specs, mv_mode=self.mv_mode,
                                milvus_layouts=self.milvus_layouts, partition_key=self.partition_key,
                                extra_sv=self.extra_sv, existing_page_fields=existing,
                                text_per_page=self.text_per_page)
        self._guard("collection setup", self._ensure_collections, prefix="cannot use")
        for c in self.collections:
            self.rows_written.setdefault(c, 0)
        return self.plan

    def drop(self, only_empty: bool = False) -> list[str]:
        """Drop every collection of this logical index (``milvus-load --recreate``); with
        ``only_empty``, those of them that hold no row, when none does (a run that never
        committed left them, maybe for another model)."""
        prefix = f"{self.collection}_"
        gone = [c for c in self._guard("list", self.client.list_collections) if c.startswith(prefix)
                and (c in (self.pages_collection, f"{prefix}text") or c.startswith(f"{prefix}patches")
                     or c.startswith(f"{prefix}sv_"))]
        if only_empty and any(self.count(c) for c in gone):
            return []
        for c in gone:
            self._guard("drop", self.client.drop_collection, c)
        return gone

    def _ensure_collections(self) -> None:
        # A new collection's load takes a server seconds even empty (its query coordinator works in
        # rounds: 2.8 s on the 2.3.5 test server): every new collection's load is asked for first,
        # then each is waited for, so that they load side by side.
        loading = []
        for name in self.plan.collections:
            schema, index = build_collection(self.plan, name)
            if self.client.has_collection(name):
                self._check_existing(name, schema)
                continue
            try:
                kwargs = {"num_partitions": 16} if self.plan.partition_key else {}
                self.client.create_collection(name, schema=schema, consistency_level="Strong", **kwargs)
                # Without waiting for the (empty) index to build: pymilvus polls every 0.5 s. The
                # server checks the index type and parameters on the call itself.
                self.client.create_index(name, index, sync=False)
                self.client.load_collection(name, _async=True)
            except Exception as e:
                self._refused(name, e)
            loading.append(name)
        for name in loading:
            try:
                self.client.load_collection(name)  # asked for above: this waits until it is loaded
            except Exception as e:
                self._refused(name, e)

    def _refused(self, name: str, e: Exception):
        fields = ", ".join(f"{f.layout}: {f.vtype} {f.index}" for f in self.plan.in_collection(name))
        if self.client.has_collection(name):  # created, then its index or load refused: leave nothing behind
            self.client.drop_collection(name)
        raise MilvusError(f"{self.server.label} refused collection {name} ({fields}): "
                          f"{first_line(e, self.conn.secrets())}") from None

    def _check_existing(self, name: str, schema) -> None:
        """An existing collection must have the fields this run writes, with the same types."""
        want = {f.name: (int(f.dtype), (f.params or {}).get("dim")) for f in schema.fields}
        want.update({f.name: ("struct", None) for f in getattr(schema, "struct_fields", [])})
        desc = self.client.describe_collection(name)
        have = {f["name"]: (int(f["type"]), f.get("params", {}).get("dim")) for f in desc.get("fields", [])}
        have.update({f["name"]: ("struct", None) for f in desc.get("struct_array_fields", []) or []})
        for fname, (ftype, dim) in want.items():
            got = have.get(fname)
            if got is None or got[0] != ftype or (dim is not None and int(got[1] or 0) != int(dim)):
                what = "missing" if got is None else f"type {got[0]} dim {got[1]}"
                raise MilvusError(
                    f"collection {name!r} exists with a different schema ({fname}: {what}; this run writes type "
                    f"{ftype} dim {dim}): use another --collection, or rebuild it with pagemill milvus-load --recreate")

    # -- writes ---------------------------------------------------------------------------------

    def write_pages(self, pages: pa.Table) -> dict[str, int]:
        """Upsert the page rows and their vectors (``pages`` has the ``OUT/pages`` schema).
        Returns the rows sent per collection."""
        return self._guard("upsert", self._write_pages, pages)

    def _write_pages(self, pages: pa.Table) -> dict[str, int]:
        sent = {}
        for collection, cols in self.columns_for(pages).items():
            self._upsert_columns(collection, cols)
            sent[collection] = cols.n
        return sent

    def _upsert_columns(self, collection: str, cols: Columns) -> None:
        """Upsert in batches, each one column-per-field request built by pagemill (the vectors as
        one block, no per-row Python); struct fields, or a pymilvus without the private parts this
        needs, take the row API."""
        if self._columnar is None:
            self._columnar = milvus_private.available(self.client)
        if self._columnar and not cols.has_struct:
            for start in range(0, cols.n, UPSERT_BATCH_ROWS):
                stop = min(cols.n, start + UPSERT_BATCH_ROWS)
                self._call("upsert", milvus_private.upsert_columns, self.client, collection, self.conn.db_name, cols,
                           start, stop, self.conn.timeout_s)
                checkpoint("milvus_upsert")
        else:
            rows = cols.rows()
            for start in range(0, len(rows), UPSERT_BATCH_ROWS):
                self._call("upsert", self.client.upsert, collection, rows[start:start + UPSERT_BATCH_ROWS])
                checkpoint("milvus_upsert")
        self.rows_written[collection] = self.rows_written.get(collection, 0) + cols.n

    @property
    def upsert_path(self) -> str:
        return "columns" if self._columnar else "rows"

    def rows_for(self, pages: pa.Table) -> dict[str, list[dict]]:
        """The rows of every collection of the plan for these pages (the page collection first)."""
        return {c: cols.rows() for c, cols in self.columns_for(pages).items()}

    def columns_for(self, pages: pa.Table) -> dict[str, Columns]:
        """What every collection of the plan gets for these pages, as columns (the page
        collection first)."""
        out: dict[str, Columns] = {}
        if pages.num_rows == 0:
            return out
        keys = {k: pages[k].to_pylist() for k in (S.PAGE_ID, S.DOC_ID, S.DOC_VERSION, S.SOURCE_URI, S.PAGE_NUMBER)}
        ids = keys[S.PAGE_ID]
        n = len(ids)
        corpus = {CORPUS: ("varchar", [self.corpus] * n)} if self.plan.partition_key else {}
        page_cols = Columns(n, {S.PAGE_ID: ("varchar", ids), S.DOC_ID: ("varchar", keys[S.DOC_ID]),
                                S.DOC_VERSION: ("varchar", keys[S.DOC_VERSION]),
                                S.SOURCE_URI: ("varchar", keys[S.SOURCE_URI]),
                                S.PAGE_NUMBER: ("int32", keys[S.PAGE_NUMBER]), **corpus})
        later = []
        for fp in self.plan.fields:
            if fp.mode == "chunks":
                if fp.vtype != "sparse":  # (the BM25 vectors are Milvus' own, from the chunk text)
                    chunks = self._chunk_columns(pages, fp, corpus)
                    if chunks is not None:
                        out[fp.collection] = chunks
                continue
            if fp.collection == self.plan.pages_collection:
                if fp.mode == "struct":
                    offsets, values = layout_vectors(pages, fp, self.dim)
                    page_cols.fields[fp.field] = ("struct", [[{VECTOR: v} for v in values[offsets[i]:offsets[i + 1]].tolist()]
                                                             for i in range(n)])
                else:
                    page_cols.fields[fp.field] = ("float", sv_matrix(pages, fp))
            else:
                later.append(fp)
        if any(fp.collection == self.plan.pages_collection for fp in self.plan.fields):
            out[self.plan.pages_collection] = page_cols  # (a subset plan of added layouts may not touch it)
        for fp in later:
            if fp.mode == "page":  # the text layer, or a single vector in a collection of its own
                if fp.column not in pages.column_names:
                    continue
                keep = np.asarray(pages[fp.column].is_valid().to_numpy(zero_copy_only=False))
                if not keep.any():
                    continue
                matrix = sv_matrix(pages.filter(pa.array(keep)), fp)
                idx = np.flatnonzero(keep).tolist()
                cols = Columns(len(idx), {S.PAGE_ID: ("varchar", [ids[i] for i in idx]),
                                          S.DOC_ID: ("varchar", [keys[S.DOC_ID][i] for i in idx]),
                                          S.DOC_VERSION: ("varchar", [keys[S.DOC_VERSION][i] for i in idx]),
                                          fp.field: ("float", matrix),
                                          **({CORPUS: ("varchar", [self.corpus] * len(idx))} if corpus else {})})
                out[fp.collection] = cols  # one field per collection outside the page collection
                continue
            offsets, values = layout_vectors(pages, fp, self.dim)
            counts = np.diff(offsets)
            total = int(offsets[-1])
            versions = keys[S.DOC_VERSION]
            cols = Columns(total, {
                PATCH_ID: ("varchar", [f"{page_id}:{j}" for page_id, k in zip(ids, counts.tolist()) for j in range(k)]),
                S.PAGE_ID: ("varchar", [page_id for page_id, k in zip(ids, counts.tolist()) for _ in range(k)]),
                S.DOC_VERSION: ("varchar", [v for v, k in zip(versions, counts.tolist()) for _ in range(k)]),
                VECTOR: (fp.vtype, values[:total]),
                **({CORPUS: ("varchar", [self.corpus] * total)} if corpus else {})})
            out[fp.collection] = cols  # one field per collection outside the page collection
        return out

    def _chunk_columns(self, pages: pa.Table, fp, corpus: dict) -> Columns | None:
        """The text layer's chunk rows: the chunks (``chunk_text`` of the page text) with their
        vectors from ``text_chunks``, and the chunk's BM25 text where the collection has it."""
        from operators.models.text_layer import bm25_text, chunk_text, clip_bytes

        if S.TEXT_CHUNKS not in pages.column_names:
            return None
        with_text = any(f.vtype == "sparse" for f in self.plan.in_collection(fp.collection))
        ids, versions = pages[S.PAGE_ID].to_pylist(), pages[S.DOC_VERSION].to_pylist()
        texts, vectors = pages[S.TEXT].to_pylist(), pages[S.TEXT_CHUNKS]
        chunk_ids, page_ids, doc_versions, bodies, blocks = [], [], [], [], []
        for i, text in enumerate(texts):
            if not vectors[i].is_valid:
                continue
            block = np.asarray(vectors[i].values.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, fp.dim)
            chunks = chunk_text(text) or [""]
            if len(chunks) != len(block):
                raise MilvusError(f"page {ids[i]}: {len(block)} chunk vectors for {len(chunks)} chunks of its text "
                                  f"(archived by another chunking): rebuild the text layer with pagemill relayout")
            for j, c in enumerate(chunks):
                chunk_ids.append(f"{ids[i]}:{j}")
                page_ids.append(ids[i])
                doc_versions.append(versions[i])
                bodies.append(clip_bytes(bm25_text(c)))
            blocks.append(block)
        if not chunk_ids:
            return None
        n = len(chunk_ids)
        fields = {CHUNK_ID: ("varchar", chunk_ids), S.PAGE_ID: ("varchar", page_ids),
                  S.DOC_VERSION: ("varchar", doc_versions)}
        if with_text:
            fields[CHUNK_TEXT] = ("varchar", bodies)
        fields[fp.field] = ("float", np.concatenate(blocks))
        if corpus:
            fields[CORPUS] = ("varchar", [self.corpus] * n)
        return Columns(n, fields)

    def delete_other_versions(self, doc_versions: dict[str, str | None]) -> int:
        """Delete rows of each doc_id whose version differs (None: every row of the document).
        Returns the delete calls sent."""
        return self._guard("delete", self._delete_other_versions, doc_versions)

    def _delete_other_versions(self, doc_versions: dict[str, str | None]) -> int:
        if not doc_versions or self.stage is not None:
            return 0  # (a first load by bulk import fills empty collections: nothing to delete)

        def expr(by_page_prefix: bool) -> str:
            terms = []
            for doc_id, version in sorted(doc_versions.items()):
                # Row-per-vector rows carry no doc_id: a document's rows are its page_ids' prefix.
                term = (f'{S.PAGE_ID} like "{escape(doc_id)}-%"' if by_page_prefix
                        else f'{S.DOC_ID} == "{escape(doc_id)}"')
                if version is not None:
                    term = f'({term} and {S.DOC_VERSION} != "{escape(version)}")'
                terms.append(term)
            return " or ".join(terms)

        # One filter per unit, not one per document: one delete per collection per commit.
        rows_collections = {f.collection for f in self.plan.fields if f.mode in ("rows", "chunks")}
        for c in self.collections:
            self._call("delete", self.client.delete, c, filter=expr(c in rows_collections))
            self.delete_calls += 1
        return len(self.collections)
