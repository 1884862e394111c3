"""`pagemill milvus-load`: (re)build the Milvus side of an index from its Parquet shards alone.

For a new cluster, a changed index type or vector layout, or after losing Milvus. The committed
shards (from the ledger, so a half-written unit is never loaded) are streamed in batches of
``batch_pages`` rows, one shard at a time: memory holds one batch, not the corpus. Writes are the
ingest's own upserts, so an interrupted load is finished by running it again. ``recreate`` drops
the collections first (needed to change a field's type or index).
"""

from __future__ import annotations

import io
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

from operators import schema as S
from operators.errors import UsageError
from operators.io.store import OutputStore
from operators.layouts.layout import parse_layouts
from operators.sinks.milvus_client import MilvusConnection, redact_uri
from operators.sinks.milvus_schema import IndexSpec
from operators.sinks.milvus_writer import MilvusWriter
from operators.sinks.parquet import PAGES_PREFIX
from operators.sinks.run_metadata import RunMetadata
from pipelines.ingest.ledger import Ledger


def _open(store: OutputStore, key: str) -> pq.ParquetFile:
    local = store.local_path(key)
    return pq.ParquetFile(local) if local else pq.ParquetFile(io.BytesIO(store.read_bytes(key)))


def milvus_load(store: OutputStore, conn: MilvusConnection, collection: str = "pagemill", *, recreate: bool = False,
                batch_pages: int = 256, index_specs: dict[str, IndexSpec] | None = None, mv_mode: str = "auto",
                milvus_layouts: list[str] | None = None, partition_key: bool = False, corpus: str | None = None,
                bulk_dir: str | None = None, log=None) -> dict:
    """``bulk_dir``: use Milvus' bulk import instead of upserts. Row files (JSON) are written
    there, one per shard and collection, and the server imports them itself: a folder the
    server can read (a standalone server's local storage) or ``s3://bucket/prefix`` in the
    bucket Milvus uses. Import inserts (it does not upsert): the collections must be empty, so
    it goes with ``recreate`` or a new collection."""
    log = log or sys.stderr  # looked up now: a stream bound at import time may be closed since
    t0 = time.monotonic()
    from pipelines.index.identity import active_generation

    ledger = Ledger(store, active_generation(store))
    ledger.load()
    shards = sorted(k for k in ledger.state.files if k.startswith(PAGES_PREFIX + "/"))
    if not shards:
        raise UsageError(f"no committed shards under {store.uri}/pages: run pagemill ingest first")
    schema = _open(store, shards[-1]).schema_arrow
    from pipelines.index.search import recorded_metadata

    meta = recorded_metadata(store)
    layouts = parse_layouts(list(meta.layouts))
    dim = meta.dim
    fde_dim = meta.fde_dim
    text_dim = schema.field(S.SV_TEXT).type.list_size if S.SV_TEXT in schema.names else None
    extra_sv = {"sv-vlm": schema.field(S.SV_VLM).type.list_size} if S.SV_VLM in schema.names else None
    # an archive of an index built before chunks: its text layer stays a vector a page
    text_per_page = bool(text_dim) and S.TEXT_CHUNKS not in schema.names
    sink = MilvusWriter(conn, collection, dim, text_dim=text_dim, layouts=layouts, fde_dim=fde_dim,
                        index_specs=index_specs, mv_mode=mv_mode, milvus_layouts=milvus_layouts,
                        partition_key=partition_key, corpus=corpus or meta.corpus, extra_sv=extra_sv,
                        text_per_page=text_per_page)
    dropped = []
    if recreate:
        sink.connect()
        dropped = sink.drop()
    plan = sink.setup()
    columns = [S.PAGE_ID, S.DOC_ID, S.SOURCE_URI, S.DOC_VERSION, S.PAGE_NUMBER]
    for f in plan.fields:
        columns.append(f.column)
        if f"{f.column}_scale" in schema.names:
            columns.append(f"{f.column}_scale")
        if f.mode == "chunks":
            columns.append(S.TEXT)  # the text layer's rows are the chunks of the page text
    columns = list(dict.fromkeys(c for c in columns if c in schema.names))
    pages = 0
    if bulk_dir:
        return _bulk_load(store, sink, plan, shards, columns, batch_pages, bulk_dir, dropped, conn, t0, corpus, log)
    # Into empty collections there is nothing of another version to delete (each delete by
    # filter costs the server a query).
    stale_possible = any(sink.count(c) for c in sink.collections)
    for n, key in enumerate(shards, 1):
        pf = _open(store, key)
        if corpus is None:
            sink.corpus = RunMetadata.from_schema(pf.schema_arrow).corpus
        versions: dict[str, str] = {}
        for batch in pf.iter_batches(batch_size=batch_pages, columns=columns):
            table = pa.Table.from_batches([batch])
            sink.write_pages(table)
            pages += table.num_rows
            versions.update(zip(table[S.DOC_ID].to_pylist(), table[S.DOC_VERSION].to_pylist()))
        # Rows of any other version of these documents (a stale Milvus) go, as in a commit: the
        # committed shard holds the committed version.
        if stale_possible:
            sink.delete_other_versions(versions)
        if log is not None:
            log.write(f"[pagemill] milvus-load: {n}/{len(shards)} shards, {pages} pages\n")
    sink.flush()  # once, at the end: flushing every shard makes tiny segments
    counts = {c: sink.count(c) for c in sink.collections}
    summary = {"uri": redact_uri(conn.uri), "path": "upsert", "shards": len(shards), "pages": pages, "dropped": dropped,
               "row_counts": counts, "wall_s": round(time.monotonic() - t0, 3), **plan.summary()}
    if text_per_page:
        summary["text_layer_note"] = next(n for n in plan.notes if "before chunks" in n)
    sink.close()
    return summary


def _bulk_load(store, sink, plan, shards, columns, batch_pages, bulk_dir, dropped, conn, t0, corpus, log) -> dict:
    """Milvus' own import: one Parquet file per shard and collection, in the collection's schema
    (vectors as ``list<float32>``/``list<uint8>``, as Milvus' Parquet reader takes them), staged
    where the server reads them, then one import task per file."""
    from operators.io.uris import open_store
    from operators.sinks.milvus_private import bulk_insert
    from operators.sinks.milvus_schema import MilvusError

    nonempty = {c: n for c in sink.collections if (n := sink.count(c))}
    if nonempty:
        raise MilvusError(f"bulk import inserts and cannot replace rows, but {', '.join(nonempty)} already hold rows: "
                          f"add --recreate, use a new --collection, or load without --bulk-dir (upserts)")
    if any(f.mode == "struct" for f in plan.fields):
        raise MilvusError("bulk import of array-of-structs fields is not supported: load with upserts "
                          "(without --bulk-dir) or --milvus-mv-mode rows")
    stage = open_store(bulk_dir)
    # The path the server reads: absolute on its local storage, or the key in its bucket.
    base = str(stage.root) + "/" if hasattr(stage, "root") else getattr(stage, "prefix", "")
    run = f"pagemill-{int(time.time())}"
    tasks, expected, pages = [], {}, 0
    for n, key in enumerate(shards, 1):
        pf = _open(store, key)
        if corpus is None:
            sink.corpus = RunMetadata.from_schema(pf.schema_arrow).corpus
        parts: dict[str, list[pa.Table]] = {}
        for batch in pf.iter_batches(batch_size=batch_pages, columns=columns):
            table = pa.Table.from_batches([batch])
            pages += table.num_rows
            for c, cols in sink.columns_for(table).items():
                parts.setdefault(c, []).append(cols.to_arrow())
        shard = key.rsplit("/", 1)[-1].removesuffix(".parquet")
        for c, tables in parts.items():
            table = pa.concat_tables(tables)
            file_key = f"{run}/{c}/{shard}.parquet"
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            stage.write_bytes(file_key, buf.getvalue())
            tasks.append(sink._guard("bulk import", bulk_insert, sink.client, c, [base + file_key], conn.timeout_s))
            expected[c] = expected.get(c, 0) + table.num_rows
        if log is not None:
            log.write(f"[pagemill] milvus-load (bulk): {n}/{len(shards)} shards staged, {len(tasks)} import tasks\n")
    imported = bulk_wait(sink, tasks)
    # Imported segments count once the server has sealed and loaded them.
    deadline = time.monotonic() + 300
    counts = {c: sink.count(c) for c in sink.collections}
    while counts != {c: expected.get(c, 0) for c in sink.collections} and time.monotonic() < deadline:
        time.sleep(1.0)
        counts = {c: sink.count(c) for c in sink.collections}
    summary = {"uri": redact_uri(conn.uri), "path": "bulk", "format": "parquet", "shards": len(shards), "pages": pages,
               "dropped": dropped, "rows_imported": imported, "row_counts": counts,
               "wall_s": round(time.monotonic() - t0, 3), **plan.summary()}
    sink.close()
    return summary


def bulk_wait(sink, tasks: list[int], timeout_s: float = 600.0) -> int:
    """Wait for import tasks; returns rows imported. A failed task fails with its reason."""
    from operators.sinks.milvus_private import bulk_insert_state
    from operators.sinks.milvus_schema import MilvusError

    deadline = time.monotonic() + timeout_s
    pending, rows = list(tasks), 0
    while pending:
        state = sink._guard("bulk import state", bulk_insert_state, sink.client, pending[0])
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


def stage_base(stage) -> str:
    """The path prefix the Milvus server reads a staged file under: absolute on its local
    storage, or the key in the bucket it uses."""
    return str(stage.root) + "/" if hasattr(stage, "root") else getattr(stage, "prefix", "")


def import_staged(sink, stage, collections: list[str], timeout_s: float = 600.0) -> dict[str, int]:
    """Import every file staged under ``<collection>/`` in ``stage`` (one task per file), wait,
    and return rows imported per collection, checked against the files' own row counts."""
    from operators.sinks.milvus_private import bulk_insert
    from operators.sinks.milvus_schema import MilvusError

    base = stage_base(stage)
    tasks, expected = [], {}
    for c in collections:
        for obj in stage.list(c):
            if not obj.key.endswith(".parquet"):
                continue
            rows = pq.ParquetFile(io.BytesIO(stage.read_bytes(obj.key))).metadata.num_rows
            tasks.append(sink._guard("bulk import", bulk_insert, sink.client, c, [base + obj.key], sink.conn.timeout_s))
            expected[c] = expected.get(c, 0) + rows
    bulk_wait(sink, tasks, timeout_s)
    deadline = time.monotonic() + timeout_s
    counts = {c: sink.count(c) for c in collections}
    while counts != {c: expected.get(c, 0) for c in collections} and time.monotonic() < deadline:
        time.sleep(1.0)  # imported segments count once the server has sealed and loaded them
        counts = {c: sink.count(c) for c in collections}
    if counts != {c: expected.get(c, 0) for c in collections}:
        raise MilvusError(f"bulk import: Milvus holds {counts}, the staged files {expected}")
    return counts
