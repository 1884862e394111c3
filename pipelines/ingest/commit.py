"""Commit a written work unit: the ledger record is the commit point.

By the time a unit is complete its writers have written its Parquet parts and its rows in the
vector store (upserts and deletes of other versions, or writes the store commits). Here, in commit
order on the driver: older shards that still hold a superseded version of the unit's documents
are rewritten without it (a task where the data lives), the store commits the unit's writes, then
the ledger record names the unit's files and the rewrites, then the replaced files go. A crash
anywhere before the record leaves the unit uncommitted: its files are orphans that the next run
deletes, the documents' previous versions stay intact in ``OUT/pages``, and the unit is planned
again; the store converges because its writes are idempotent (and, where they are visible before
the commit, the suspects list covers a commit that died after them).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from operators import schema as S
from operators.faults import checkpoint
from operators.io.store import OutputStore
from operators.stores.door import StoreWriter, Suspects, VectorStore
from operators.stores.parquet import PAGES_PREFIX, ParquetSink, read_table
from pipelines.out.ledger import Ledger
from pipelines.out.manifest import MANIFEST_EVERY_S, MANIFEST_MAX_FILES, write_manifest


def _rewritten_key(old: str, unit_id: str) -> str:
    stem = old.rsplit(".parquet", 1)[0].split("~", 1)[0]
    return f"{stem}~{unit_id}.parquet"


def rewrite_without(store: OutputStore, keys: list[str], uris: list[str], unit_id: str) -> list[dict]:
    """Rewrite each file in ``keys`` without the rows of ``uris`` (a new key; the old file stays
    until the commit). A file left empty is dropped. Runs where the data lives."""


    parquet = ParquetSink(store)  # no metadata of its own: the old file's stays as it was
    drop = pa.array(uris)
    rewrites = []
    for old in keys:
        data = store.read_bytes(old)
        inside = read_table(data, columns=[S.SOURCE_URI])[S.SOURCE_URI]
        if not pc.any(pc.is_in(inside, value_set=drop)).as_py():
            continue  # another part of the unit: nothing of these documents in it
        table = read_table(data)
        keep = table.filter(pc.invert(pc.is_in(table[S.SOURCE_URI], value_set=drop)))
        new = None
        if keep.num_rows:
            new = _rewritten_key(old, unit_id)
            parquet.write(new, keep)
        rewrites.append({"old": old, "new": new})
    return rewrites


def resync_pages(store: OutputStore, writer: StoreWriter, keys: list[str], uris: list[str]) -> tuple[int, list[dict]]:
    """Write again the committed pages of ``uris`` from their shards (``writer``: the vector
    store's). Runs where the data lives; returns the pages written and the writer's results (for
    the store's commit)."""
    writer.open()
    try:
        keep = pa.array(sorted(uris))
        written, results = 0, []
        parquet = ParquetSink(store)
        for key in keys:
            table = parquet.read(key)
            table = table.filter(pc.is_in(table[S.SOURCE_URI], value_set=keep))
            results.append(writer.write("resync", table))
            written += table.num_rows
        return written, results
    finally:
        writer.close()


def fold_failed(info: dict, parts: list[dict]) -> list[dict]:
    """Pages the embed stage gave up on become page-level quarantine entries, and each document's
    status and page count follow what is really committed. Returns the unit's quarantine entries."""
    failed = [q for p in parts for q in p["failed"]]
    lost: dict[str, int] = {}
    for q in failed:
        lost[q["source_uri"]] = lost.get(q["source_uri"], 0) + 1
    for d in info["docs"]:
        if d["uri"] in lost:
            d["n_pages"] -= lost[d["uri"]]
            d["status"] = "partial" if d["n_pages"] > 0 else "quarantined"
    info["n_pages"] -= len(failed)
    return info["quarantine"] + failed


class UnitCommitter:
    def __init__(self, ledger: Ledger, run_id: str, executor=None, vectors: VectorStore | None = None,
                 suspects: Suspects | None = None, manifest: bool = True):
        """``executor``: runs rewrites and resyncs where the data lives (``run_task``);
        ``vectors``: the driver's vector store (commits of the units' writes, deletes of documents
        gone from the source, the writers that resyncs use); ``suspects``: what the store may hold
        beyond the ledger."""
        self.ledger = ledger
        self.store = ledger.store
        self.run_id = run_id
        self.executor = executor
        self.vectors = vectors
        self.suspects = suspects if suspects is not None else Suspects(everything=True)
        self.delete_calls = 0  # deletes by filter sent from the driver (resyncs, documents gone)
        self.manifest = manifest  # this is the active index: keep OUT/pages/_manifest.json current
        self._retired: list[str] = []  # replaced files, deleted once a manifest without them is written
        self._manifest_at = 0.0

    def publish(self, force: bool = False) -> None:
        """Write the manifest (at every commit, or every MANIFEST_EVERY_S for very large
        archives), then delete the files it no longer names: a reader of the previous manifest
        had them until now."""
        import time

        now = time.monotonic()
        big = len(self.ledger.state.files) > MANIFEST_MAX_FILES
        if self.manifest and (force or not big or now - self._manifest_at >= MANIFEST_EVERY_S):
            write_manifest(self.store, self.ledger.state, self.ledger.generation)
            self._manifest_at = now
        elif self.manifest:
            return  # deletes wait for the next manifest
        for key in self._retired:
            self.store.delete(key)
        self._retired = []

    def commit_rewrite(self, job: str, old: str, new: str, stored: dict | None = None) -> None:
        """A shard rewritten with more columns (an added layout or model), and what its writer
        sent to the vector store (``stored``): one record."""
        import hashlib

        unit_id = f"{job}-{hashlib.blake2b(old.encode(), digest_size=6).hexdigest()}"
        if self.vectors is not None and stored:
            self.vectors.commit(unit_id, [stored])
        self.ledger.commit({"unit_id": unit_id, "run_id": self.run_id, "docs": [], "files": [],
                            "rewrites": [{"old": old, "new": new}], "superseded": []})
        self._retired.append(old)
        self.publish()

    def _run(self, fn, *args):
        return self.executor.run_task(fn, *args) if self.executor is not None else fn(*args)

    def commit(self, unit_id: str, info: dict, parts: list[dict]) -> dict:
        """Make the unit durable and return what it added (for the run summary)."""
        state = self.ledger.state
        quarantine = fold_failed(info, parts)
        files = [f for p in parts for f in p["files"]]
        uris = {d["uri"] for d in info["docs"]}
        superseded = sorted(u for u in uris if u in state)
        # Older files that still hold a superseded version: rewrite them without it. The old
        # file is deleted only after the commit, so until then the old version stays readable.
        holding = state.files_holding(set(superseded)) if superseded else []
        rewrites = self._run(rewrite_without, self.store, holding, superseded, unit_id) if holding else []
        checkpoint("rewritten")
        if self.vectors is not None:
            replaces = {d["doc_id"]: (d["version"] if d["n_pages"] else None) for d in info["docs"]
                        if d.get("may_hold", True)}
            self.vectors.commit(unit_id, [p["store"] for p in parts if p.get("store")], replaces)
            checkpoint("store_committed")
        self.ledger.commit({
            "unit_id": unit_id,
            "run_id": self.run_id,
            "docs": [{"uri": d["uri"], "doc_id": d["doc_id"], "version": d["version"], "status": d["status"],
                      "n_pages": d["n_pages"]} for d in info["docs"]],
            "files": [{"key": f["key"], "docs": f["docs"]} for f in files],
            "rewrites": rewrites,
            "superseded": superseded,
        })
        checkpoint("committed")
        self.suspects.uris -= uris  # their writer deleted other versions; the ledger knows them now
        self._retired += [rw["old"] for rw in rewrites]
        self.publish()
        pages_key = PAGES_PREFIX + "/"
        return {"pages": sum(f["rows"] for f in files if f["key"].startswith(pages_key)),
                "bytes": sum(f["bytes"] for f in files if f["key"].startswith(pages_key)),
                "quarantine": quarantine, "superseded": len(superseded), "files": files}

    def resync(self, uris: set[str]) -> int:
        """Make the store hold exactly the committed version of documents the ledger knows but
        this run did not commit (a suspect whose source went back to the committed version after
        a commit died between its store writes and its record: the store holds the dead commit's
        version). Their committed pages are written again from the shards, and other versions'
        rows deleted. Returns pages written."""
        state = self.ledger.state
        docs = {u: d for u in uris if (d := state.get(u, with_version=True)) is not None}
        if self.vectors is None or not docs:
            return 0
        keys = [k for k in self.ledger.state.files_holding(set(docs)) if k.startswith(PAGES_PREFIX + "/")]
        written, results = self._run(resync_pages, self.store, self.vectors.writer(), keys, sorted(docs))
        versions = {S.doc_id_for(u): (d.version if d.n_pages else None) for u, d in docs.items()}
        self.vectors.commit("resync", results, versions)
        self.delete_calls += self.vectors.delete_other_versions(versions)
        return written

    def delete_missing(self, planned) -> tuple[int, int]:
        """``--delete-missing``: the committed documents the listing (``planned``, with its keys)
        did not see. Refused when the source listed nothing at all. Returns (documents, pages)."""
        from operators.errors import UsageError

        missing = self.ledger.state.missing(planned.seen_key_array())
        if missing and not planned.seen:
            raise UsageError(f"--delete-missing: the source lists no documents at all; refusing to delete all "
                             f"{len(missing)} indexed documents (wrong source?)")
        return len(missing), self.delete_documents(missing)

    def delete_documents(self, uris: list[str]) -> int:
        """Remove documents gone from the source: shards rewritten without them, their rows in
        the store deleted, then one ledger record. Returns pages removed."""
        import hashlib

        uris = sorted(uris)
        if not uris:
            return 0
        unit_id = "d" + hashlib.blake2b("\n".join(uris).encode(), digest_size=10).hexdigest()
        removed = sum(d.n_pages for u in uris if (d := self.ledger.state.get(u)) is not None)
        holding = self.ledger.state.files_holding(set(uris))
        rewrites = self._run(rewrite_without, self.store, holding, uris, unit_id) if holding else []
        if self.vectors is not None:
            self.delete_calls += self.vectors.delete_other_versions({S.doc_id_for(u): None for u in uris})
        self.ledger.commit({"unit_id": unit_id, "run_id": self.run_id, "docs": [], "files": [], "rewrites": rewrites,
                            "superseded": uris, "deleted": uris})
        self._retired += [rw["old"] for rw in rewrites]
        self.publish()
        return removed
