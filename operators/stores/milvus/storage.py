"""What Milvus stores, measured per collection: its rows, their raw bytes, and the bytes of the
files the server keeps for them (binlogs and index files), read from its storage.

Raw bytes are the payload of the rows as the schema defines it (a float vector of 128 is 512
bytes, a VARCHAR its UTF-8 length + 4, an INT32 4), with the VARCHAR lengths read from a sample
of the collection's rows. Server bytes are the sizes of the server's own files, never derived
from the rows:

- Milvus Lite keeps a folder per collection (``<db>/collections/<name>/``: Parquet data and
  delete files, its index files, a write-ahead log until a flush, the manifest): all of it.
- A Milvus server (local storage or a bucket) keeps the collection's binlogs under
  ``insert_log/<collection id>/``, ``stats_log/...`` and ``delta_log/...`` and its index files
  under ``index_files/<build>/<version>/<partition>/<segment>/``: those of the collection's
  persisted segments (compacted-away segments and dropped collections wait there for the
  garbage collector and are not counted). ``--milvus-storage`` names that storage: the server's
  ``localStorage.path`` (``--data DIR`` of the standalone server: ``DIR/data``), or the bucket's
  root path (``s3://bucket/files``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from operators import schema as S
from operators.io.store import OutputStore
from operators.stores.milvus.client import redact_uri
from operators.stores.milvus.schema import BM25_LAYOUT, PATCH_ID, TEXT_LAYOUT

FIXED_BYTES = {"BOOL": 1, "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8, "FLOAT": 4, "DOUBLE": 8}
VECTOR_BYTES = {"FLOAT_VECTOR": 4.0, "FLOAT16_VECTOR": 2.0, "BFLOAT16_VECTOR": 2.0, "INT8_VECTOR": 1.0,
                "BINARY_VECTOR": 1 / 8}
SERVER_LOGS = ("insert_log", "stats_log", "delta_log")


@dataclass
class CollectionBytes:
    collection: str
    rows: int
    raw_bytes: float  # rows x the schema's bytes per row (VARCHAR lengths from a sample)
    server_bytes: int | None = None  # the server's files for this collection (None: storage not given)
    server_data_bytes: int | None = None
    server_index_bytes: int | None = None
    files: int | None = None
    index_types: dict[str, str] = field(default_factory=dict)  # vector field -> the index the server built
    pending_index_rows: int = 0  # rows the server has not indexed yet (their index files are still to come)
    loaded_memory_bytes: int | None = None  # the query nodes' memory for its loaded segments, as the server reports it
    storage: str | None = None  # where the files were read

    @property
    def ratio(self) -> float | None:
        return self.server_bytes / self.raw_bytes if self.server_bytes is not None and self.raw_bytes else None

    def to_json(self) -> dict:
        out = asdict(self)
        out["ratio"] = round(self.ratio, 4) if self.ratio is not None else None
        return out


def _type_name(t) -> str:
    return getattr(t, "name", str(t)).upper()


def raw_row_bytes(client, collection: str, sample_rows: int = 2000) -> tuple[int, float, dict[str, str]]:
    """(rows, raw bytes per row, vector field -> type) of a collection, from its schema and a sample
    of its rows' VARCHAR values. Function outputs (a BM25 sparse vector) are index, not payload."""
    desc = client.describe_collection(collection)
    outputs = {o for f in desc.get("functions", []) or [] for o in f.get("output_field_names", [])}
    fixed, varchars, vectors = 0.0, [], {}
    for f in desc.get("fields", []):
        name, t = f["name"], _type_name(f["type"])
        if name in outputs:
            continue
        if t in FIXED_BYTES:
            fixed += FIXED_BYTES[t]
        elif t in VECTOR_BYTES:
            fixed += int(f.get("params", {}).get("dim", 0)) * VECTOR_BYTES[t]
            vectors[name] = t
        elif t == "VARCHAR":
            varchars.append(name)
    client.load_collection(collection)
    rows = int(client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])
    var = 0.0
    if varchars and rows:
        got = client.query(collection, filter="", output_fields=varchars, limit=min(rows, sample_rows))
        if got:
            var = sum(len(str(r[v]).encode()) + 4 for r in got for v in varchars) / len(got)
    return rows, fixed + var, vectors


def built_indexes(client, collection: str, vector_fields) -> tuple[dict[str, str], int]:
    """(vector field -> index type the server built, rows not indexed yet)."""
    out, pending = {}, 0
    for name in vector_fields:
        try:
            desc = client.describe_index(collection, name)
        except Exception:  # no index on the field
            out[name] = "none"
            continue
        out[name] = str(desc.get("index_type") or "none")
        total, done = int(desc.get("total_rows") or 0), int(desc.get("indexed_rows") or 0)
        pending = max(pending, int(desc.get("pending_index_rows") or 0), total - done)
    return out, pending


def loaded_memory(client, collection: str) -> int | None:
    """The memory a server's query nodes report for the collection's loaded segments (sealed
    segments: rows still in the growing segment are not in it); None where it is not reported
    (Lite, or a server that reports 0)."""
    try:
        segments = client.list_loaded_segments(collection)
    except Exception:
        return None
    total = sum(int(getattr(s, "mem_size", 0) or 0) for s in segments)
    return total or None  # Milvus 2.3 reports 0 for some loaded segments: not a figure


class ServerFiles:
    """The files a Milvus server keeps, listed once, attributed to collections."""

    def __init__(self, storage: OutputStore):
        self.storage = storage
        self.base = ""
        if not storage.list("insert_log") and storage.list("data/insert_log"):
            self.base = "data/"  # the standalone server's --data DIR
        self._index = None

    def index_files(self):
        if self._index is None:
            self._index = self.storage.list(f"{self.base}index_files")
        return self._index

    def measure(self, client, collection: str) -> tuple[int, int, int]:
        """(data bytes, index bytes, files) of the collection's persisted segments."""
        cid = str(client.describe_collection(collection)["collection_id"])
        segments = {str(s.segment_id) for s in client.list_persistent_segments(collection)}
        data = index = files = 0
        for log in SERVER_LOGS:
            prefix = f"{self.base}{log}/{cid}/"
            for obj in self.storage.list(prefix.rstrip("/")):
                seg = obj.key[len(prefix):].split("/")[1]  # <partition>/<segment>/...
                if seg in segments:
                    data += obj.size
                    files += 1
        skip = len(f"{self.base}index_files/".split("/")) - 1
        for obj in self.index_files():
            parts = obj.key.split("/")[skip:]  # <build>/<version>/<partition>/<segment>/<file>
            if len(parts) >= 5 and parts[3] in segments:
                index += obj.size
                files += 1
        return data, index, files


def lite_files(db: OutputStore, collection: str) -> tuple[int, int, int]:
    """(data bytes, index bytes, files) of a Milvus Lite collection's folder."""
    data = index = files = 0
    prefix = f"collections/{collection}/"
    for obj in db.list(prefix.rstrip("/")):
        rest = obj.key[len(prefix):]
        if rest.endswith(".prev"):
            continue  # the previous manifest, kept for a crash during a manifest write
        if "/indexes/" in f"/{rest}":
            index += obj.size
        else:
            data += obj.size
        files += 1
    return data, index, files


def measure_collections(reader, collections: list[str], storage: OutputStore | None = None) -> list[CollectionBytes]:
    """Rows, raw bytes and (where the files can be read) server bytes of each collection.
    Milvus Lite's files are always readable (its database is a local folder); a server's need
    ``storage``."""
    from operators.io.store import LocalStore

    client = reader.client
    lite_db = LocalStore(reader.uri, create=False) if reader.conn.lite else None
    server = ServerFiles(storage) if storage is not None and lite_db is None else None
    out = []
    for name in collections:
        rows, per_row, vectors = reader._guard("count", raw_row_bytes, client, name)
        indexes, pending = built_indexes(client, name, vectors)
        c = CollectionBytes(name, rows, rows * per_row, index_types=indexes, pending_index_rows=pending)
        if lite_db is not None:
            c.server_data_bytes, c.server_index_bytes, c.files = lite_files(lite_db, name)
            c.storage = reader.uri
        elif server is not None:
            c.server_data_bytes, c.server_index_bytes, c.files = reader._guard("segments", server.measure, client, name)
            c.storage = storage.uri
        if lite_db is None:
            c.loaded_memory_bytes = loaded_memory(client, name)
        if c.server_data_bytes is not None:
            c.server_bytes = c.server_data_bytes + c.server_index_bytes
        out.append(c)
    return out


def measure_storage(reader, storage: OutputStore | None) -> dict:
    """Every collection of the index: rows, raw bytes, the server's own bytes (its files) and the
    index it built on each vector field; which layout is in which collection and field."""
    plan = reader.plan if reader.plan is not None else reader.discover()
    names = sorted({fp.collection for fp in plan.fields})
    collections = measure_collections(reader, names, storage)
    built = {(c.collection, f): t for c in collections for f, t in c.index_types.items()}
    fields = {fp.layout: {"collection": fp.collection, "field": fp.field,
                          "index": built.get((fp.collection, fp.field), fp.index.index_type)} for fp in plan.fields}
    out = {"uri": redact_uri(reader.uri), "lite": reader.conn.lite, "collections": [c.to_json() for c in collections],
           "fields": fields}
    pending = [c for c in collections if c.pending_index_rows]
    if pending:
        out["index_pending"] = (f"the server is still indexing {', '.join(c.collection for c in pending)}: their index "
                                f"bytes are not final (report again when describe_index shows no pending rows)")
    unindexed = [c.collection for c in collections
                 if c.server_bytes is not None and c.rows and not c.pending_index_rows and not c.server_index_bytes
                 and any(t not in ("FLAT", "BIN_FLAT", "none") for t in c.index_types.values())]
    if unindexed and not reader.conn.lite:
        out["index_small"] = (f"no index files for {', '.join(unindexed)}: the server indexes only segments past its "
                              f"minimum size (1,024 rows by default) and searches smaller ones by brute force")
    if not reader.conn.lite and storage is None:
        out["note"] = ("server bytes not measured: pass --milvus-storage with the server's storage (its "
                       "localStorage.path, or the bucket's root path, e.g. s3://milvus-bucket/files)")
    return out


def measure_rows(sink, page_ids: list[str]) -> dict:
    """Raw bytes per page actually stored in Milvus for a sample of pages, read back row by row,
    for every layout the index holds: vector bytes (by the field's type) plus every key and
    scalar field of its rows (length-prefixed VARCHARs, INT32s). A page-level layout is counted
    as if its vector had the page row to itself."""
    plan = sink.plan if sink.plan is not None else sink.discover()
    ids = json.dumps(page_ids)
    elem = {"float": 4.0, "float16": 2.0, "int8": 1.0, "binary": 1 / 8, "struct": 4.0}

    def varchar(v):
        return len(v.encode()) + 4

    out: dict = {}
    pages = None
    for fp in plan.fields:
        if fp.layout in (TEXT_LAYOUT, BM25_LAYOUT):  # the text layer: its own line (text_layer_report)
            continue
        sink.client.load_collection(fp.collection)  # a fresh connection finds collections released
        if fp.mode in ("page", "struct"):
            if pages is None:
                pages = sink.client.query(plan.pages_collection, filter=f"{S.PAGE_ID} in {ids}",
                                          output_fields=[S.PAGE_ID, S.DOC_ID, S.DOC_VERSION, S.SOURCE_URI])
            n = max(1, len(pages))
            scalars = sum(varchar(r[S.PAGE_ID]) + varchar(r[S.DOC_ID]) + varchar(r[S.DOC_VERSION])
                          + varchar(r[S.SOURCE_URI]) + 4 for r in pages)
            if fp.mode == "page":
                vec = fp.dim * elem[fp.vtype] * len(pages)
                out[fp.layout] = {"raw_bytes_per_page": (scalars + vec) / n, "rows_per_page": 1.0}
            continue
        rows = []
        for start in range(0, len(page_ids), 20):
            chunk = json.dumps(page_ids[start:start + 20])
            rows += sink.client.query(fp.collection, filter=f"{S.PAGE_ID} in {chunk}",
                                      output_fields=[PATCH_ID, S.PAGE_ID, S.DOC_VERSION])
        n = max(1, len({r[S.PAGE_ID] for r in rows}))
        raw = sum(varchar(r[PATCH_ID]) + varchar(r[S.PAGE_ID]) + varchar(r[S.DOC_VERSION])
                  + fp.dim * elem[fp.vtype] for r in rows)
        out[fp.layout] = {"raw_bytes_per_page": raw / n, "rows_per_page": len(rows) / n, "vector_type": fp.vtype}
    out["sampled_pages"] = len(pages) if pages is not None else 0
    return out
