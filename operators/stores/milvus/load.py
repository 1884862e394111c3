"""Milvus loaded from the Parquet archive (``pagemill milvus-load``): the committed shards' pages
streamed in batches and upserted (the ingest's own writes, so an interrupted load is finished by
running it again), or staged as Parquet files in the collections' schema and imported by the
server itself (``--bulk-dir``: import inserts, so the collections must be empty)."""

from __future__ import annotations

import time

import pyarrow as pa

from operators import schema as S
from operators.stores.milvus.bulk import Imports
from operators.stores.milvus.client import redact_uri
from operators.stores.milvus.schema import MilvusError


def _by_shard(batches):
    """(key, corpus, [tables]) per shard, from (key, table, corpus) batches in shard order."""
    key, corpus, tables = None, None, []
    for k, table, c in batches:
        if k != key and tables:
            yield key, corpus, tables
            tables = []
        key, corpus = k, c
        tables.append(table)
    if tables:
        yield key, corpus, tables


def upsert_load(writer, batches, shards: int, log=None) -> dict:
    """``writer``: the prepared MilvusWriter. Into empty collections there is nothing of another
    version to delete (each delete by filter costs the server a query)."""
    t0 = time.monotonic()
    stale_possible = any(writer.count(c) for c in writer.collections)
    pages = 0
    for n, (_key, corpus, tables) in enumerate(_by_shard(batches), 1):
        writer.corpus = corpus
        versions: dict[str, str] = {}
        for table in tables:
            writer.write_pages(table)
            pages += table.num_rows
            versions.update(zip(table[S.DOC_ID].to_pylist(), table[S.DOC_VERSION].to_pylist()))
        # Rows of any other version of these documents (a stale Milvus) go, as in a commit: the
        # committed shard holds the committed version.
        if stale_possible:
            writer.delete_other_versions(versions)
        if log is not None:
            log.write(f"[pagemill] milvus-load: {n}/{shards} shards, {pages} pages\n")
    writer.flush()  # once, at the end: flushing every shard makes tiny segments
    return {"uri": redact_uri(writer.uri), "path": "upsert", "shards": shards, "pages": pages,
            "row_counts": {c: writer.count(c) for c in writer.collections}, "wall_s": round(time.monotonic() - t0, 3)}


def bulk_load(writer, batches, shards: int, bulk_dir: str, log=None) -> dict:
    """Milvus' own import: Parquet files in the collection's schema (vectors as
    ``list<float32>``/``list<uint8>``, as Milvus' Parquet reader takes them), each about
    ``IMPORT_FILE_BYTES`` of a collection's rows from consecutive shards, staged where the
    server reads them, one import task each."""
    from operators.io.uris import open_store

    t0 = time.monotonic()
    nonempty = {c: n for c in writer.collections if (n := writer.count(c))}
    if nonempty:
        raise MilvusError(f"bulk import inserts and cannot replace rows, but {', '.join(nonempty)} already hold rows: "
                          f"add --recreate, use a new --collection, or load without --bulk-dir (upserts)")
    if any(f.mode == "struct" for f in writer.plan.fields):
        raise MilvusError("bulk import of array-of-structs fields is not supported: load with upserts "
                          "(without --bulk-dir) or --milvus-mv-mode rows")
    imports = Imports(writer, open_store(bulk_dir), f"pagemill-{int(time.time())}", list(writer.collections))
    pages = 0
    for n, (_key, corpus, tables) in enumerate(_by_shard(batches), 1):
        writer.corpus = corpus
        parts: dict[str, list[pa.Table]] = {}
        for table in tables:
            pages += table.num_rows
            for c, cols in writer.columns_for(table).items():
                parts.setdefault(c, []).append(cols.to_arrow())
        for c, found in parts.items():
            imports.add(c, pa.concat_tables(found))
        if log is not None:
            log.write(f"[pagemill] milvus-load (bulk): {n}/{shards} shards read, {len(imports.tasks)} import tasks\n")
    imported, counts = imports.wait()  # imported segments count once sealed and loaded
    return {"uri": redact_uri(writer.uri), "path": "bulk", "format": "parquet", "shards": shards, "pages": pages,
            "rows_imported": imported, "row_counts": counts, "wall_s": round(time.monotonic() - t0, 3)}
