"""Milvus writer: the collections and fields of a ``MilvusPlan`` (operators/milvus_plan.py),
written by upsert.

Upserts by stable keys (``page_id``; ``<page_id>:<index>`` for one row per vector) make a
replayed unit harmless; rows of a document's older versions are deleted after the new version is
written. An acknowledged write is in Milvus' write-ahead log, so units are not flushed one by one
(that makes tiny sealed segments): a run flushes once, at its end. Transient failures
(a server restarting, a dropped connection) are retried with backoff; anything else becomes one
``MilvusError`` line that names the server without its credentials.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from operators import encodings as E
from operators import schema as S
from operators.milvus_plan import (
    CORPUS,
    PATCH_ID,
    TEXT_LAYOUT,
    VECTOR,
    FieldPlan,
    IndexSpec,
    MilvusError,
    MilvusPlan,
    ServerInfo,
    build_collection,
    plan_fields,
    server_info,
)

__all__ = ["MilvusError", "MilvusSink", "MilvusConnection", "PATCH_ID", "VECTOR", "redact_uri",
           "is_lite_uri"]

UPSERT_BATCH_ROWS = 2000
_fault_hook = None  # set by pipelines.faults when PAGEMILL_KILL_AT is set (crash tests only)
_TRANSIENT = re.compile(r"unavailable|connect|deadline|timed? ?out|closed|reset|temporarily|rate limit|try again",
                        re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """The URI without user info (``http://user:pw@host`` -> ``http://host``)."""
    p = urlparse(uri)
    if p.username or p.password:
        host = p.hostname + (f":{p.port}" if p.port else "")
        return p._replace(netloc=host).geturl()
    return uri


def is_lite_uri(uri: str) -> bool:
    return urlparse(uri).scheme not in ("http", "https", "tcp", "grpc", "unix")


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class MilvusConnection:
    """Where and how to connect. Secrets (token, password) come from the environment at the
    call site and are never logged, pickled into Ray tasks, or written anywhere."""

    uri: str
    token: str | None = None
    user: str | None = None
    password: str | None = None
    db_name: str | None = None
    ca_file: str | None = None  # PEM of the CA (or the self-signed server certificate) for TLS
    server_name: str | None = None  # TLS server name, when it differs from the URI's host
    timeout_s: float = 60.0
    retries: int = 3  # extra attempts for transient failures, with exponential backoff

    def client_kwargs(self) -> dict:
        kw: dict = {"uri": self.uri, "timeout": self.timeout_s}
        if self.token:
            kw["token"] = self.token
        if self.user:
            kw["user"] = self.user
            kw["password"] = self.password or ""
        if self.db_name:
            kw["db_name"] = self.db_name
        if self.ca_file or urlparse(self.uri).scheme == "https":
            kw["secure"] = True
        if self.ca_file:
            kw["server_pem_path"] = self.ca_file
        if self.server_name:
            kw["server_name"] = self.server_name
        return kw

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.password) if s]


class MilvusSink:
    """Creates the plan's collections (``setup``) and writes pages into them.

    Readers (search, report, milvus-load's checks) call ``connect`` and then ``discover``, which
    rebuilds the plan from the collections the server has.
    """

    def __init__(self, uri: str | MilvusConnection, collection: str = "pagemill", dim: int = 128,
                 token: str | None = None, timeout_s: float = 60.0, text_dim: int | None = None, *,
                 layouts: list | None = None, fde_dim: int | None = None, index_specs: dict[str, IndexSpec] | None = None,
                 mv_mode: str = "auto", milvus_layouts: list[str] | None = None, partition_key: bool = False,
                 corpus: str = "default", extra_sv: dict[str, int] | None = None):
        self.conn = uri if isinstance(uri, MilvusConnection) else MilvusConnection(uri, token=token, timeout_s=timeout_s)
        self.collection = collection
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
        self.client = None
        self.server: ServerInfo | None = None
        self.plan: MilvusPlan | None = None
        self.rows_written: dict[str, int] = {}
        self.delete_calls = 0  # deletes by filter sent (each costs the server a query)
        self._columnar: bool | None = None  # column requests (True), the row API (False), not yet known

    @property
    def uri(self) -> str:
        return self.conn.uri

    @property
    def pages_collection(self) -> str:
        return f"{self.collection}_pages"

    @property
    def patches_collection(self) -> str:
        return f"{self.collection}_patches"

    @property
    def text_collection(self) -> str:
        """One row per page that has a text layer (``text:<model>`` runs only)."""
        return f"{self.collection}_text"

    @property
    def collections(self) -> list[str]:
        return self.plan.collections if self.plan else []

    # -- connection and setup -------------------------------------------------------------------

    def connect(self) -> None:
        """Open the client and learn the server's version (readers stop here, or call discover)."""
        self._guard("connect", self._connect, prefix="cannot use")

    def _connect(self) -> None:
        from pymilvus import MilvusClient

        if is_lite_uri(self.uri):
            os.makedirs(os.path.dirname(os.path.abspath(self.uri)), exist_ok=True)
        if self.conn.ca_file and not os.path.isfile(self.conn.ca_file):
            raise MilvusError(f"milvus_ca_file: no such file {self.conn.ca_file!r}")
        self.client = MilvusClient(**self.conn.client_kwargs())
        self.server = server_info(self.client.get_server_version())

    def setup(self) -> MilvusPlan:
        """Connect, decide the plan against the server, and create what is missing. Fails before
        any data is written if the server would refuse a field or an index."""
        self.connect()
        layouts = self.layouts
        if layouts is None:
            from operators.layouts import parse_layouts

            layouts = parse_layouts([])
        self.plan = plan_fields(self.server, self.collection, layouts, self.dim, fde_dim=self.fde_dim,
                                text_dim=self.text_dim, index_specs=self.index_specs, mv_mode=self.mv_mode,
                                milvus_layouts=self.milvus_layouts, partition_key=self.partition_key,
                                extra_sv=self.extra_sv)
        self._guard("collection setup", self._ensure_collections, prefix="cannot use")
        for c in self.collections:
            self.rows_written.setdefault(c, 0)
        return self.plan

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def drop(self) -> list[str]:
        """Drop every collection of this logical index (``milvus-load --recreate``)."""
        prefix = f"{self.collection}_"
        gone = [c for c in self._guard("list", self.client.list_collections) if c.startswith(prefix)
                and (c in (self.pages_collection, self.text_collection) or c.startswith(self.patches_collection)
                     or c.startswith(f"{prefix}sv_"))]
        for c in gone:
            self._guard("drop", self.client.drop_collection, c)
        return gone

    def _ensure_collections(self) -> None:
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
                self.client.load_collection(name)
            except Exception as e:
                fields = ", ".join(f"{f.layout}: {f.vtype} {f.index}" for f in self.plan.in_collection(name))
                if self.client.has_collection(name):  # created, but the index was refused: leave nothing behind
                    self.client.drop_collection(name)
                raise MilvusError(f"{self.server.label} refused collection {name} ({fields}): "
                                  f"{_first_line(e, self.conn.secrets())}") from None

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

    # -- readers --------------------------------------------------------------------------------

    def discover(self) -> MilvusPlan:
        """The plan of an existing index, from the collections on the server."""
        self.plan = self._guard("describe", self._discover)
        return self.plan

    def _discover(self) -> MilvusPlan:
        from pymilvus import DataType

        vtypes = {int(DataType.FLOAT_VECTOR): "float", int(DataType.FLOAT16_VECTOR): "float16",
                  int(DataType.BINARY_VECTOR): "binary", int(DataType.INT8_VECTOR): "int8"}
        names = [c for c in self.client.list_collections() if c.startswith(f"{self.collection}_")]
        if self.pages_collection not in names:
            raise MilvusError(f"no collection {self.pages_collection} at {redact_uri(self.uri)}: nothing indexed under "
                              f"--collection {self.collection}")
        fields, partition_key, mode = [], False, "rows"
        for name in sorted(names):
            if name == self.pages_collection:
                layout_of = lambda f: f.replace("_", "-")  # noqa: E731  (sv_fde -> sv-fde)
                page_mode = "page"
            elif name == self.text_collection:
                layout_of = lambda f: TEXT_LAYOUT  # noqa: E731
                page_mode = "page"
            elif name.startswith(f"{self.collection}_sv_"):
                layout_of = lambda f: f.replace("_", "-")  # noqa: E731
                page_mode = "page"
            elif name.startswith(self.patches_collection):
                rest = name[len(self.patches_collection):].lstrip("_")
                layout_of = lambda f, rest=rest: "mv" + (f"-{rest.replace('_', '-')}" if rest else "")  # noqa: E731
                page_mode = "rows"
            else:
                continue
            desc = self.client.describe_collection(name)
            for f in desc.get("fields", []):
                if f["name"] == CORPUS:
                    partition_key = True
                if int(f["type"]) in vtypes:
                    dim = int(f.get("params", {}).get("dim", 0))
                    fields.append(FieldPlan(layout_of(f["name"]), name, f["name"], vtypes[int(f["type"])], dim, page_mode,
                                            IndexSpec()))
            for f in desc.get("struct_array_fields", []) or []:
                mode = "struct"
                sub = next((x for x in f.get("fields", []) if x.get("name") == VECTOR), {})
                fields.append(FieldPlan(f["name"].replace("_", "-"), name, f["name"], "struct",
                                        int(sub.get("params", {}).get("dim", 0)), "struct", IndexSpec("HNSW")))
        return MilvusPlan(self.server, self.collection, fields, mode, partition_key)

    # -- writes ---------------------------------------------------------------------------------

    def _call(self, what: str, fn, *args, **kwargs):
        """A client call, retried on transient failures (upserts and deletes are idempotent)."""
        for attempt in range(self.conn.retries + 1):
            try:
                return fn(*args, **kwargs)
            except MilvusError:
                raise
            except Exception as e:
                if attempt >= self.conn.retries or not _TRANSIENT.search(str(e) or type(e).__name__):
                    raise
                time.sleep(min(0.5 * 2 ** attempt, 8.0))

    def _upsert(self, collection: str, rows: list[dict]) -> None:
        for start in range(0, len(rows), UPSERT_BATCH_ROWS):
            self._call("upsert", self.client.upsert, collection, rows[start : start + UPSERT_BATCH_ROWS])
            if _fault_hook:
                _fault_hook("milvus_upsert")
        self.rows_written[collection] = self.rows_written.get(collection, 0) + len(rows)

    def _guard(self, what: str, fn, *args, prefix: str | None = None, **kwargs):
        """Run a client call; any failure becomes one MilvusError line naming the URI (no secret)."""
        try:
            return fn(*args, **kwargs)
        except MilvusError:
            raise  # composed here, with the server's part already scrubbed
        except Exception as e:
            where = redact_uri(self.uri)
            head = f"{prefix} Milvus at {where}" if prefix else f"Milvus at {where} failed during {what}"
            raise MilvusError(f"{head}: {_first_line(e, self.conn.secrets())[:300]}") from None

    def write_pages(self, pages: pa.Table) -> None:
        """Upsert the page rows and their vectors (``pages`` has the ``OUT/pages`` schema)."""
        self._guard("upsert", self._write_pages, pages)

    def _keys(self, pages: pa.Table) -> dict:
        return {k: pages[k].to_pylist() for k in (S.PAGE_ID, S.DOC_ID, S.DOC_VERSION, S.SOURCE_URI, S.PAGE_NUMBER)}

    def _write_pages(self, pages: pa.Table) -> None:
        for collection, cols in self.columns_for(pages).items():
            self._upsert_columns(collection, cols)

    def _upsert_columns(self, collection: str, cols: Columns) -> None:
        """Upsert in batches. Each batch goes as one column-per-field request built here (the
        vectors as one block, no per-row Python); pymilvus' row API packs every value of every
        row one by one, several times slower on row-per-vector collections. Struct fields, or a
        pymilvus without the parts this needs, take the row API."""
        if self._columnar is not False and not cols.has_struct:
            try:
                from pymilvus.grpc_gen import milvus_pb2

                handler = self.client._get_connection()
                send = handler.upsert
            except (ImportError, AttributeError):
                self._columnar = False
            else:
                self._columnar = True
                for start in range(0, cols.n, UPSERT_BATCH_ROWS):
                    stop = min(cols.n, start + UPSERT_BATCH_ROWS)
                    request = milvus_pb2.UpsertRequest(collection_name=collection, db_name=self.conn.db_name or "",
                                                       num_rows=stop - start)
                    cols.to_field_data(request.fields_data, start, stop)
                    # pymilvus sends a prepared request as it is (and needs no schema for it)
                    self._call("upsert", send, collection, [], upsert_param=request, schema={"fields": []},
                               timeout=self.conn.timeout_s)
                    if _fault_hook:
                        _fault_hook("milvus_upsert")
                self.rows_written[collection] = self.rows_written.get(collection, 0) + cols.n
                return
        self._upsert(collection, cols.rows())

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
        keys = self._keys(pages)
        ids = keys[S.PAGE_ID]
        n = len(ids)
        corpus = {CORPUS: ("varchar", [self.corpus] * n)} if self.plan.partition_key else {}
        page_cols = Columns(n, {S.PAGE_ID: ("varchar", ids), S.DOC_ID: ("varchar", keys[S.DOC_ID]),
                                S.DOC_VERSION: ("varchar", keys[S.DOC_VERSION]),
                                S.SOURCE_URI: ("varchar", keys[S.SOURCE_URI]),
                                S.PAGE_NUMBER: ("int32", keys[S.PAGE_NUMBER]), **corpus})
        later = []
        for fp in self.plan.fields:
            if fp.collection == self.plan.pages_collection:
                if fp.mode == "struct":
                    offsets, values = layout_vectors(pages, fp, self.dim)
                    page_cols.fields[fp.field] = ("struct", [[{VECTOR: v} for v in values[offsets[i]:offsets[i + 1]].tolist()]
                                                             for i in range(n)])
                else:
                    page_cols.fields[fp.field] = ("float", _sv_matrix(pages, fp))
            else:
                later.append(fp)
        out[self.plan.pages_collection] = page_cols
        for fp in later:
            if fp.mode == "page":  # the text layer, or a single vector in a collection of its own
                if fp.column not in pages.column_names:
                    continue
                keep = np.asarray(pages[fp.column].is_valid().to_numpy(zero_copy_only=False))
                if not keep.any():
                    continue
                matrix = _sv_matrix(pages.filter(pa.array(keep)), fp)
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

    # -- bulk import (Milvus' own import path: files the server reads itself) -------------------

    def bulk_import(self, collection: str, path: str) -> int:
        """Start importing one row-based JSON file (a path the server can read: on its local
        storage, or a key in the bucket it uses). Returns the task id."""
        handler = self.client._get_connection()
        # The client's call context carries the database (pymilvus passes it per request).
        return self._guard("bulk import", handler.do_bulk_insert, collection, "", [path], timeout=self.conn.timeout_s,
                           context=self.client._generate_call_context())

    def bulk_wait(self, tasks: list[int], timeout_s: float = 600.0) -> int:
        """Wait for import tasks; returns rows imported. A failed task fails with its reason."""
        handler = self.client._get_connection()
        deadline = time.monotonic() + timeout_s
        pending, rows = list(tasks), 0
        while pending:
            state = self._guard("bulk import state", handler.get_bulk_insert_state, pending[0],
                                context=self.client._generate_call_context())
            if state.state_name == "Completed":
                rows += int(state.row_count)
                pending.pop(0)
                continue
            if state.state_name == "Failed":
                raise MilvusError(f"Milvus bulk import of {state.infos.get('files')} failed: "
                                  f"{state.infos.get('failed_reason', '')[:300]}")
            if time.monotonic() > deadline:
                raise MilvusError(f"Milvus bulk import still {state.state_name} after {timeout_s:.0f}s")
            time.sleep(0.5)
        return rows

    def delete_other_versions(self, doc_versions: dict[str, str | None]) -> None:
        self._guard("delete", self._delete_other_versions, doc_versions)

    def _delete_other_versions(self, doc_versions: dict[str, str | None]) -> None:
        """Delete rows of each doc_id whose version differs (None: delete every row of the doc)."""
        if not doc_versions:
            return

        def expr(by_page_prefix: bool) -> str:
            terms = []
            for doc_id, version in sorted(doc_versions.items()):
                # Row-per-vector rows carry no doc_id: a document's rows are its page_ids' prefix.
                term = (f'{S.PAGE_ID} like "{_escape(doc_id)}-%"' if by_page_prefix
                        else f'{S.DOC_ID} == "{_escape(doc_id)}"')
                if version is not None:
                    term = f'({term} and {S.DOC_VERSION} != "{_escape(version)}")'
                terms.append(term)
            return " or ".join(terms)

        # One filter per unit, not one per document: one delete per collection per commit.
        rows_collections = {f.collection for f in self.plan.fields if f.mode == "rows"}
        for c in self.collections:
            self._call("delete", self.client.delete, c, filter=expr(c in rows_collections))
            self.delete_calls += 1

    def flush(self) -> None:
        for c in self.collections:
            self._guard("flush", self._call, "flush", self.client.flush, c)

    def count(self, collection: str, filter: str = "") -> int:
        res = self._guard("count", self.client.query, collection, filter=filter, output_fields=["count(*)"],
                          consistency_level="Strong")
        return int(res[0]["count(*)"])

    def count_own(self, collection: str) -> int:
        """Rows of this sink's corpus (with a partition key, other corpora share the collection)."""
        return self.count(collection, f'{CORPUS} == "{_escape(self.corpus)}"' if self.plan.partition_key else "")

    def fetch_vectors(self, layout: str, page_ids: list[str]) -> dict[str, np.ndarray]:
        """A multi-vector layout's vectors of some pages, read back from Milvus (float32; a binary
        field decodes to +-1 like the Parquet layout)."""
        return self._guard("query", self._fetch_vectors, layout, page_ids)

    def _fetch_vectors(self, layout: str, page_ids: list[str]) -> dict[str, np.ndarray]:
        fp = self.plan.by_layout(layout) if self.plan else None
        if fp is None or fp.mode == "page":
            held = [f.layout for f in (self.plan.fields if self.plan else []) if f.mode != "page"]
            raise MilvusError(f"--vectors-from milvus: layout {layout!r} is not in Milvus (it holds: {', '.join(held) or 'none'})")
        self.client.load_collection(fp.collection)
        out: dict[str, list] = {}
        for start in range(0, len(page_ids), 20):
            chunk = json.dumps(page_ids[start:start + 20])
            if fp.mode == "struct":
                for r in self.client.query(fp.collection, filter=f"{S.PAGE_ID} in {chunk}", output_fields=[S.PAGE_ID, fp.field]):
                    out[r[S.PAGE_ID]] = [(j, s[VECTOR]) for j, s in enumerate(r[fp.field])]
                continue
            for r in self.client.query(fp.collection, filter=f"{S.PAGE_ID} in {chunk}",
                                       output_fields=[S.PAGE_ID, PATCH_ID, VECTOR]):
                out.setdefault(r[S.PAGE_ID], []).append((patch_index(r[PATCH_ID]), r[VECTOR]))
        return {pid: _from_milvus([v for _, v in sorted(rows, key=lambda x: x[0])], fp) for pid, rows in out.items()}


def patch_index(patch_id: str) -> int:
    """``<page_id>:<index>`` -> index."""
    return int(patch_id.rsplit(":", 1)[1])


def _first_line(e: Exception, secrets: list[str]) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return _scrub(msg, secrets)


def _scrub(msg: str, secrets: list[str]) -> str:
    for s in secrets:
        msg = msg.replace(s, "***")
    return msg


_PB_TYPES = {"varchar": 21, "int32": 4, "float": 101, "float16": 102, "binary": 100, "int8": 105}  # schema.proto DataType


@dataclass
class Columns:
    """One collection's entities as columns: field -> (kind, values). Scalar kinds ("varchar",
    "int32") hold lists; vector kinds ("float", "float16", "binary", "int8") a 2-D array with one
    row per entity (binary: packed bits); "struct" a list of struct lists per entity."""

    n: int
    fields: dict[str, tuple[str, object]]

    @property
    def has_struct(self) -> bool:
        return any(kind == "struct" for kind, _ in self.fields.values())

    def rows(self) -> list[dict]:
        """The same entities as the row dicts pymilvus' row API (and bulk import) take."""
        cols = [(name, _row_values(kind, values)) for name, (kind, values) in self.fields.items()]
        return [{name: values[i] for name, values in cols} for i in range(self.n)]

    def to_field_data(self, fields_data, start: int, stop: int) -> None:
        """Fill a request's ``fields_data`` (protobuf FieldData) with entities [start, stop)."""
        for name, (kind, values) in self.fields.items():
            fd = fields_data.add()
            fd.field_name = name
            fd.type = _PB_TYPES[kind]
            part = values[start:stop]
            if kind == "varchar":
                fd.scalars.string_data.data.extend(part)
            elif kind == "int32":
                fd.scalars.int_data.data.extend(part)
            elif kind == "float":
                fd.vectors.dim = part.shape[1]
                fd.vectors.float_vector.data.extend(np.asarray(part, np.float32).ravel().tolist())
            elif kind == "binary":
                fd.vectors.dim = part.shape[1] * 8
                fd.vectors.binary_vector = np.ascontiguousarray(part, np.uint8).tobytes()
            elif kind == "float16":
                fd.vectors.dim = part.shape[1]
                fd.vectors.float16_vector = np.ascontiguousarray(part, np.float16).tobytes()
            elif kind == "int8":
                fd.vectors.dim = part.shape[1]
                fd.vectors.int8_vector = np.ascontiguousarray(part, np.int8).tobytes()
            else:
                raise ValueError(f"{name}: no column encoding for {kind}")


def _row_values(kind: str, values) -> list:
    if kind == "float":
        return values.tolist()
    if kind == "binary":
        return [v.tobytes() for v in values]
    if kind in ("float16", "int8"):
        return list(values)
    return values


def _sv_matrix(pages: pa.Table, fp: FieldPlan) -> np.ndarray:
    col = pages[fp.column].combine_chunks()
    return np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(col), fp.dim)


def layout_vectors(pages: pa.Table, fp: FieldPlan, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, vectors) of a multi-vector layout column, in the field's Milvus type: packed
    bits for binary, int8 codes for int8, float16 or float32 otherwise (decoded from Parquet)."""
    offsets, stored = E.read_ragged(pages[fp.column], fp.encoding, dim)
    if fp.vtype == "binary" and fp.encoding == "bin":
        return offsets, stored
    if fp.vtype == "int8" and fp.encoding == "int8":
        return offsets, stored
    scale = None
    scale_col = f"{fp.column}_scale"
    if fp.encoding == "int8":
        scale = pages[scale_col].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    floats = E.decode_block(stored, fp.encoding, dim, scale)
    return offsets, floats.astype(np.float16 if fp.vtype == "float16" else np.float32)


def json_value(v):
    """A row value as Milvus' JSON import wants it (vectors as lists; binary as uint8 lists)."""
    if isinstance(v, (bytes, bytearray)):
        return list(v)
    if isinstance(v, np.ndarray):
        return v.astype(np.float32).tolist() if v.dtype == np.float16 else v.tolist()
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return [{k: json_value(x) for k, x in d.items()} for d in v]
    return v


def _raw(v) -> bytes | None:
    """pymilvus returns a float16 or binary vector as ``[bytes]`` (or bytes); floats as a list."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (bytes, bytearray)):
        return bytes(v[0])
    return None


def _from_milvus(rows: list, fp: FieldPlan) -> np.ndarray:
    if fp.vtype == "binary":
        return E.binary_decode(np.stack([np.frombuffer(_raw(r), np.uint8) for r in rows]), fp.dim)
    if fp.vtype in ("float16", "int8"):
        dtype = np.float16 if fp.vtype == "float16" else np.int8
        return np.stack([np.frombuffer(_raw(r), dtype) if _raw(r) is not None else np.asarray(r, dtype)
                         for r in rows]).astype(np.float32)
    return np.asarray(rows, np.float32)
