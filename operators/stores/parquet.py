"""Parquet shards under the output root: one shard per work unit (pages and quarantine)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from operators import schema as S
from operators.io.store import OutputStore
from operators.stores.run_metadata import RunMetadata

PAGES_PREFIX = "pages"
QUARANTINE_PREFIX = "quarantine"
IMAGES_PREFIX = "images"  # page images (--page-images), a folder per part: images/<unit>-<part>/<page id>.<ext>


def read_table(source, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file (a path, bytes or a file object) as a table. Not ``pq.read_table``: on a file
    object it leaves cleanup to its threads after it returns, and a process that exits then can
    abort in them ("terminate called without an active exception", apache/arrow#33975; seen here
    with pyarrow 26 in about one ``pagemill quarantine`` of four)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = pa.BufferReader(source)
    return pq.ParquetFile(source).read(columns=columns)


def quarantine_table(entries: list[dict], unit_id: str, run_id: str) -> pa.Table:
    rows = {f.name: [] for f in S.QUARANTINE_SCHEMA}
    for q in sorted(entries, key=lambda q: (q["source_uri"], q.get("page_number") or -1)):
        rows[S.SOURCE_URI].append(q["source_uri"])
        rows[S.DOC_ID].append(S.doc_id_for(q["source_uri"]))
        rows[S.DOC_VERSION].append(q.get("doc_version"))
        rows[S.PAGE_NUMBER].append(q.get("page_number"))
        rows[S.STAGE].append(q["stage"])
        rows[S.REASON].append(q["reason"])
        rows[S.DETAIL].append(q.get("detail"))
        rows[S.UNIT_ID].append(unit_id)
        rows[S.RUN_ID].append(run_id)
    return pa.table(rows, schema=S.QUARANTINE_SCHEMA)


def is_vector_field(field: pa.Field) -> bool:
    """Embedding columns: (lists of) fixed-size vectors of numbers or bytes."""
    t = field.type
    while pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    return pa.types.is_fixed_size_list(t) or pa.types.is_fixed_size_binary(t) or (
        field.name.endswith("_scale") and pa.types.is_list(field.type))


class ParquetSink:
    """Writes one Parquet object per unit and key; rewriting the same key replaces it whole.

    ``metadata`` goes into the Parquet schema metadata (model, dim, layout parameters). It must
    never contain secrets: callers pass only model and layout facts.
    """

    def __init__(self, store: OutputStore, metadata: dict | None = None, compression: str = "zstd"):
        self.store = store
        self.metadata = RunMetadata(dict(metadata or {})).encode()
        self.compression = compression
        self.bytes_written: dict[str, int] = {PAGES_PREFIX: 0, QUARANTINE_PREFIX: 0}

    def write(self, key: str, table: pa.Table) -> int:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **self.metadata})
        buf = io.BytesIO()
        # Vector columns: plain, uncompressed. Embeddings barely compress, and this way a
        # layout's Parquet bytes follow from its parameters (what `pagemill report` predicts).
        vectors = [f.name for f in table.schema if is_vector_field(f)]
        others = [f.name for f in table.schema if f.name not in vectors]
        pq.write_table(table, buf, compression={**{c: "none" for c in vectors}, **{c: self.compression for c in others}},
                       use_dictionary=others, row_group_size=1024, write_statistics=others)
        data = buf.getvalue()
        self.store.write_bytes(key, data)
        self.bytes_written[key.split("/", 1)[0]] = self.bytes_written.get(key.split("/", 1)[0], 0) + len(data)
        return len(data)

    def read(self, key: str) -> pa.Table:
        return read_table(self.store.read_bytes(key))
