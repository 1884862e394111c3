"""The write stage: Parquet shards and the vector store's rows, written where the pages are (the workers).

It follows Ray Data's Datasink contract (write tasks on the workers, a completion step on the
driver), streamed: each call writes what its batch holds and returns a small *write result* per
unit it touched (keys, bytes, row counts, per-document page counts, quarantine entries); the
driver's completion step, once a unit's results are all in, is the ledger record (the commit
point). Nothing a writer does is visible to readers before that record.

A unit's pages can reach several writer calls (batches cross unit boundaries), so a unit is
written as *parts*: ``pages/<unit>-<part>.parquet``, where ``<part>`` is derived from the page ids
it holds. A batch that Ray retries (a writer lost with its node) writes the same keys and upserts
the same store keys, so nothing is duplicated; the unit's marker row (its documents, the render
stage's quarantine entries) reaches exactly one call, which also deletes other versions' rows of
the unit's documents from the store (only those it may hold: the planner knows).
"""

from __future__ import annotations

import hashlib
import json
import time

import pyarrow as pa
import pyarrow.compute as pc

from operators import schema as S
from operators.counters import Stage
from operators.faults import checkpoint
from operators.io.store import OutputStore
from operators.stores.parquet import (
    IMAGES_PREFIX,
    PAGES_PREFIX,
    QUARANTINE_PREFIX,
    ParquetSink,
    quarantine_table,
)

PART = "part"  # a write result for a part of a unit
UNIT = "unit"  # the write result that carries the unit's marker
STATS = "stats"  # the stage counters that came with the batch (every stage's workers), and the writer's

RESULT_SCHEMA = pa.schema([pa.field(S.UNIT_ID, pa.string()), pa.field(S.KIND, pa.string()),
                           pa.field("result", pa.string())])


def part_key(prefix: str, unit_id: str, ids: list[str]) -> str:
    """``<prefix>/<unit>-<8 hex>.parquet``: the same rows give the same key (a retried batch
    replaces its own file), different parts of a unit different keys."""
    h = hashlib.blake2b("\n".join(sorted(ids)).encode(), digest_size=4).hexdigest()
    return f"{prefix}/{unit_id}-{h}.parquet"


def image_folder(unit_id: str, page_ids: list[str]) -> str:
    """``images/<unit>-<8 hex>/``: a part's images, named like its shard (``part_key``)."""
    return part_key(IMAGES_PREFIX, unit_id, page_ids)[: -len(".parquet")] + "/"


def image_extension(data: bytes) -> str:
    """The image file's extension, from its first bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    return "png"


def to_pages_table(flow: pa.Table, schema: pa.Schema) -> pa.Table:
    """Page rows of an encoded flow table, in page_id order, with the ``OUT/pages`` schema."""
    pages = flow.filter(pc.equal(flow[S.KIND], S.KIND_PAGE)).select(schema.names)
    return pages.sort_by([(S.PAGE_ID, "ascending")]).cast(schema)


class PagesWriter(Stage):
    """Encoded pages in, write results out (``RESULT_SCHEMA``: one row per unit touched).

    ``vectors``: the vector store's ``StoreWriter`` (operators/stores/door.py), or None; its
    ``name`` keys the stage's counters for it (``<name>_s``, ``<name>_rows``). Construction only
    stores configuration (picklable, no secret); ``setup`` opens the connections in the process
    that writes.
    """

    name = "write"

    def __init__(self, store: OutputStore, pages_schema: pa.Schema, metadata: dict, run_id: str, vectors=None,
                 vectors_name: str = "vectors"):
        self.store = store
        self.pages_schema = pages_schema
        self.metadata = metadata
        self.run_id = run_id
        self.vectors = vectors
        self.vectors_name = vectors_name
        self.extra_counters = {"parquet_s": 0.0, "parquet_cpu_s": 0.0, f"{vectors_name}_s": 0.0,
                               f"{vectors_name}_cpu_s": 0.0, "files": 0, "bytes": 0,
                               f"{vectors_name}_rows": 0, "delete_calls": 0, "images": 0}
        self.parquet: ParquetSink | None = None
        # Multi-vector columns, whose vectors per page each result counts (for the summary).
        self._ragged = [f.name for f in pages_schema if pa.types.is_list(f.type) and not f.name.endswith("_scale")]
        super().__init__()

    def setup(self) -> None:
        if self.parquet is None:
            self.parquet = ParquetSink(self.store, metadata=self.metadata)
            if self.vectors is not None:
                self.vectors.open()

    def close(self) -> None:
        if self.vectors is not None:
            self.vectors.close()

    def __call__(self, batch: pa.Table) -> pa.Table:
        S.require_columns("PagesWriter", batch, [S.UNIT_ID, S.KIND, S.UNIT_INFO, S.PAGE_ID, S.SOURCE_URI])
        self.setup()
        self.counters.start()  # wall time counts from the first batch: set-up is start-up, not work
        t0 = self.counters.mark()
        units = batch[S.UNIT_ID].to_pylist()
        results: list[tuple[str, str, dict]] = []
        written: list[tuple[str, pa.Table, dict | None]] = []
        for unit_id in dict.fromkeys(units):
            part = batch.filter(pc.equal(batch[S.UNIT_ID], unit_id))
            written.append(self._write_files(unit_id, part, results))
        checkpoint("shard_written")
        tm, cm = time.perf_counter(), self.counters.cpu_time()
        rows_key = f"{self.vectors_name}_rows"
        for unit_id, pages, info in written:
            if self.vectors is None:
                continue
            res = next(r for u, _, r in results if u == unit_id)
            if pages.num_rows:
                res["store"] = self.vectors.write(unit_id, pages)
                self.stats[rows_key] += sum(res["store"]["rows"].values())
            if info is not None:
                # Rows of any other version go, for the documents the store may hold rows of (the
                # planner knows: those the ledger has, and those of a commit that died).
                versions = {d["doc_id"]: (d["version"] if d["n_pages"] else None) for d in info["docs"]
                            if d.get("may_hold", True)}
                if versions:
                    res["delete_calls"] = self.vectors.delete_other_versions(versions)
                    self.stats["delete_calls"] += res["delete_calls"]
        self.stats[f"{self.vectors_name}_s"] += time.perf_counter() - tm
        self.stats[f"{self.vectors_name}_cpu_s"] += self.counters.cpu_time() - cm
        checkpoint("vectors_written")
        self.counters.busy(t0)
        self.stats["batches"] += 1
        reports = [json.loads(x) for x in batch[S.STAGE_STATS].to_pylist() if x] if S.STAGE_STATS in batch.column_names else []
        reports.append({self.name: self.counters.snapshot()})
        results.append(("", STATS, {"reports": reports}))
        rows = {S.UNIT_ID: [], S.KIND: [], "result": []}
        for unit_id, kind, res in results:
            rows[S.UNIT_ID].append(unit_id)
            rows[S.KIND].append(kind)
            rows["result"].append(json.dumps(res))
        return pa.table(rows, schema=RESULT_SCHEMA)

    def _write_images(self, unit_id: str, part: pa.Table, res: dict) -> pa.Table:
        """The pages' images (``--page-images``), one file a page under ``images/<part>/``, named
        by page id (a retried batch writes the same keys); the part's ``image_uri`` column says
        where. The folder is the unit's like its shard: live once the unit is committed, an
        orphan removed by the next run otherwise."""
        if S.PAGE_IMAGE not in part.column_names or not part[S.PAGE_IMAGE].null_count < part.num_rows:
            return part
        kinds, ids = part[S.KIND].to_pylist(), part[S.PAGE_ID].to_pylist()
        images, uris = part[S.PAGE_IMAGE].to_pylist(), part[S.SOURCE_URI].to_pylist()
        page_ids = [i for k, i in zip(kinds, ids) if k == S.KIND_PAGE]
        folder = image_folder(unit_id, page_ids)
        out, total, docs = [], 0, set()
        for kind, pid, image, uri in zip(kinds, ids, images, uris):
            if kind != S.KIND_PAGE or image is None:
                out.append(None)
                continue
            key = f"{folder}{pid}.{image_extension(image)}"
            self.store.write_bytes(key, image)
            out.append(f"{self.store.uri.rstrip('/')}/{key}")
            total += len(image)
            docs.add(uri)
        written = sum(1 for u in out if u)
        res["files"].append({"key": folder, "docs": sorted(docs), "rows": written, "bytes": total, "kind": "images"})
        self.stats["images"] += written
        i = part.schema.get_field_index(S.IMAGE_URI)
        col = pa.array(out, pa.string())
        return part.set_column(i, S.IMAGE_URI, col) if i >= 0 else part.append_column(S.IMAGE_URI, col)

    def _write_files(self, unit_id: str, part: pa.Table, results: list) -> tuple[str, pa.Table, dict | None]:
        kinds = part[S.KIND].to_pylist()
        infos = part[S.UNIT_INFO].to_pylist()
        marker = next((json.loads(i) for k, i in zip(kinds, infos) if k == S.KIND_UNIT), None)
        failed = []
        for k, info, uri, version, number in zip(kinds, infos, part[S.SOURCE_URI].to_pylist(),
                                                 part[S.DOC_VERSION].to_pylist(), part[S.PAGE_NUMBER].to_pylist()):
            if k == S.KIND_PAGE_FAILED:
                why = json.loads(info)
                failed.append({"source_uri": uri, "doc_version": version, "page_number": number, "stage": "embed",
                               "reason": why["reason"], "detail": why.get("detail")})
        res: dict = {"files": [], "docs": {}, "failed": failed, "worker": self.counters.snapshot()["worker"],
                     **{k: v for k, v in self.counters.labels.items()}}
        tp, cp = time.perf_counter(), self.counters.cpu_time()
        part = self._write_images(unit_id, part, res)
        pages = to_pages_table(part, self.pages_schema)
        if S.PAGE_HASH in pages.column_names:  # the driver counts near-duplicate pages across the run
            res["hashes"] = [h for h in pages[S.PAGE_HASH].to_pylist() if h is not None]
        if pages.num_rows:
            uris = pages[S.SOURCE_URI].to_pylist()
            key = part_key(PAGES_PREFIX, unit_id, pages[S.PAGE_ID].to_pylist())
            nbytes = self.parquet.write(key, pages)
            res["files"].append({"key": key, "docs": sorted(set(uris)), "rows": pages.num_rows, "bytes": nbytes})
            for u in uris:
                res["docs"][u] = res["docs"].get(u, 0) + 1
            res["vectors"] = {c: int(pc.sum(pc.list_value_length(pages[c])).as_py() or 0) for c in self._ragged}
        entries = failed + (marker["quarantine"] if marker else [])
        if entries:
            table = quarantine_table(entries, unit_id, self.run_id)
            ids = [f"{e['source_uri']}#{e.get('page_number')}#{e['reason']}" for e in entries]
            key = part_key(QUARANTINE_PREFIX, unit_id, ids)
            nbytes = self.parquet.write(key, table)
            res["files"].append({"key": key, "docs": sorted({e["source_uri"] for e in entries}), "rows": len(entries),
                                 "bytes": nbytes})
        self.stats["parquet_s"] += time.perf_counter() - tp
        self.stats["parquet_cpu_s"] += self.counters.cpu_time() - cp
        self.stats["files"] += len(res["files"])
        self.stats["bytes"] += sum(f["bytes"] for f in res["files"])
        self.stats["pages"] += pages.num_rows
        results.append((unit_id, PART, res))
        if marker is not None:
            results.append((unit_id, UNIT, {"info": marker, "worker": res["worker"]}))
        return unit_id, pages, marker

