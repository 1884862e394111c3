"""Commit a finished work unit: shards, then Milvus, then the ledger record (the commit point).

A crash anywhere before the ledger write leaves the unit uncommitted: its new files are orphans
that the next run deletes, the documents' previous versions stay intact in ``OUT/pages``, and
the unit is planned again. Milvus rows are written by upsert and stale versions deleted by
filter, so a replayed unit converges to the same rows.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from operators import schema as S
from operators.milvus_sink import MilvusSink
from operators.parquet_sink import (
    PAGES_PREFIX,
    QUARANTINE_PREFIX,
    ParquetSink,
    quarantine_table,
    shard_key,
    to_pages_table,
)
from pipelines.faults import checkpoint
from pipelines.ledger import Ledger, MilvusSuspects


def _rewritten_key(old: str, unit_id: str) -> str:
    stem = old.rsplit(".parquet", 1)[0].split("~", 1)[0]
    return f"{stem}~{unit_id}.parquet"


def fold_failed_pages(info: dict, flow: pa.Table) -> None:
    """Pages the embed stage gave up on (``page_failed`` rows) become page-level quarantine
    entries, and each document's status and page count follow what is really committed."""
    import json

    kinds = flow[S.KIND].to_pylist()
    failed = [i for i, k in enumerate(kinds) if k == S.KIND_PAGE_FAILED]
    if not failed:
        return
    uris = flow[S.SOURCE_URI].to_pylist()
    versions = flow[S.DOC_VERSION].to_pylist()
    numbers = flow[S.PAGE_NUMBER].to_pylist()
    infos = flow[S.UNIT_INFO].to_pylist()
    lost: dict[str, int] = {}
    for i in failed:
        why = json.loads(infos[i])
        info["quarantine"].append({"source_uri": uris[i], "doc_version": versions[i], "page_number": numbers[i],
                                   "stage": "embed", "reason": why["reason"], "detail": why.get("detail")})
        lost[uris[i]] = lost.get(uris[i], 0) + 1
    for d in info["docs"]:
        if d["uri"] in lost:
            d["n_pages"] -= lost[d["uri"]]
            d["status"] = "partial" if d["n_pages"] > 0 else "quarantined"
    info["n_pages"] -= len(failed)


class UnitCommitter:
    def __init__(self, ledger: Ledger, parquet: ParquetSink, milvus: MilvusSink | None, pages_schema, run_id: str,
                 suspects: MilvusSuspects | None = None):
        """``suspects``: what Milvus may hold beyond the ledger (see MilvusSuspects); without it
        every commit deletes other versions' rows of all its documents."""
        self.ledger = ledger
        self.parquet = parquet
        self.milvus = milvus
        self.pages_schema = pages_schema
        self.run_id = run_id
        self.suspects = suspects if suspects is not None else MilvusSuspects(everything=True)

    def commit(self, unit_id: str, info: dict, flow: pa.Table) -> dict:
        """Make the unit durable and return what it added (for the run summary)."""
        state = self.ledger.state
        fold_failed_pages(info, flow)
        pages = to_pages_table(flow, self.pages_schema)
        quarantine = quarantine_table(info["quarantine"], unit_id, self.run_id)
        uris = {d["uri"] for d in info["docs"]}
        superseded = sorted(u for u in uris if u in state.docs)

        files = []
        for prefix, table in ((PAGES_PREFIX, pages), (QUARANTINE_PREFIX, quarantine)):
            if table.num_rows:
                key = shard_key(prefix, unit_id)
                self.parquet.write(key, table)
                files.append({"key": key, "docs": sorted(set(table[S.SOURCE_URI].to_pylist()))})

        # Older files that still hold a superseded version: rewrite them without it. The old
        # file is deleted only after the commit, so until then the old version stays readable.
        rewrites = self._rewrite_without(superseded, unit_id) if superseded else []
        checkpoint("shard_written")

        if self.milvus is not None:
            self.milvus.write_pages(pages)
            # Rows of any other version go, for every document Milvus may hold rows of: those
            # the ledger knows, and those of a commit that died before its record (suspects).
            versions = {d["doc_id"]: (d["version"] if d["n_pages"] else None) for d in info["docs"]
                        if self.suspects.may_hold(d["uri"], state)}
            if versions:
                self.milvus.delete_other_versions(versions)
            # No flush per unit: an acknowledged write is already in Milvus' write-ahead log (the
            # message queue of a server, the WAL file of Lite), and flushing every unit makes
            # tiny sealed segments that slow search down. The run flushes once at its end.
            checkpoint("milvus_written")

        self.ledger.commit(
            {
                "unit_id": unit_id,
                "run_id": self.run_id,
                "docs": [
                    {"uri": d["uri"], "doc_id": d["doc_id"], "version": d["version"], "status": d["status"],
                     "n_pages": d["n_pages"]}
                    for d in info["docs"]
                ],
                "files": files,
                "rewrites": rewrites,
                "superseded": superseded,
            }
        )
        checkpoint("committed")
        self.suspects.uris -= uris  # deleted for above; the ledger knows them now
        for rw in rewrites:
            self.parquet.store.delete(rw["old"])
        return {"pages": pages.num_rows, "quarantine": quarantine.num_rows, "superseded": len(superseded),
                "table": pages}

    def resync_milvus(self, uris: set[str]) -> int:
        """Make Milvus hold exactly the committed version of documents the ledger knows but this
        run did not commit (a suspect whose source went back to the committed version after a
        commit died between its Milvus writes and its record: Milvus holds the dead commit's
        version). Their committed pages are upserted again from the shards, and other versions'
        rows deleted. Returns pages written."""
        docs = {u: self.ledger.state.docs[u] for u in uris if u in self.ledger.state.docs}
        if self.milvus is None or not docs:
            return 0
        keep = pa.array(sorted(docs))
        written = 0
        for key in self.ledger.state.files_holding(set(docs)):
            if not key.startswith(PAGES_PREFIX + "/"):
                continue
            table = self.parquet.read(key)
            table = table.filter(pc.is_in(table[S.SOURCE_URI], value_set=keep))
            self.milvus.write_pages(table)
            written += table.num_rows
        self.milvus.delete_other_versions({S.doc_id_for(u): (d.version if d.n_pages else None) for u, d in docs.items()})
        return written

    def _rewrite_without(self, uris: list[str], unit_id: str) -> list[dict]:
        drop = pa.array(uris)
        rewrites = []
        for old in self.ledger.state.files_holding(set(uris)):
            table = self.parquet.read(old)
            keep = table.filter(pc.invert(pc.is_in(table[S.SOURCE_URI], value_set=drop)))
            new = None
            if keep.num_rows:
                new = _rewritten_key(old, unit_id)
                self.parquet.write(new, keep)
            rewrites.append({"old": old, "new": new})
        return rewrites

    def delete_documents(self, uris: list[str]) -> int:
        """Remove documents gone from the source: shards rewritten without them, their Milvus
        rows deleted, then one ledger record. Returns pages removed."""
        import hashlib

        uris = sorted(uris)
        if not uris:
            return 0
        unit_id = "d" + hashlib.blake2b("\n".join(uris).encode(), digest_size=10).hexdigest()
        removed = sum(self.ledger.state.docs[u].n_pages for u in uris if u in self.ledger.state.docs)
        rewrites = self._rewrite_without(uris, unit_id)
        if self.milvus is not None:
            self.milvus.delete_other_versions({S.doc_id_for(u): None for u in uris})
        self.ledger.commit({"unit_id": unit_id, "run_id": self.run_id, "docs": [], "files": [], "rewrites": rewrites,
                            "superseded": uris, "deleted": uris})
        for rw in rewrites:
            self.parquet.store.delete(rw["old"])
        return removed
