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
        if not old.endswith(".parquet"):
            continue  # a part's folder of page images: its dropped pages' images go with the rewrite below
        data = store.read_bytes(old)
        inside = read_table(data, columns=[S.SOURCE_URI])[S.SOURCE_URI]
        if not pc.any(pc.is_in(inside, value_set=drop)).as_py():
            continue  # another part of the unit: nothing of these documents in it
        table = read_table(data)
        dropped = pc.is_in(table[S.SOURCE_URI], value_set=drop)
        keep = table.filter(pc.invert(dropped))
        images = []
        if S.IMAGE_URI in table.column_names:
            base = store.uri.rstrip("/") + "/"
            images = [u[len(base):] for u in table.filter(dropped)[S.IMAGE_URI].to_pylist()
                      if u and u.startswith(base)]
        new = None
        if keep.num_rows:
            new = _rewritten_key(old, unit_id)
            parquet.write(new, keep)
        rewrites.append({"old": old, "new": new, **({"images": images} if images else {})})
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


def copy_duplicates(store: OutputStore, writer: StoreWriter | None, keys: list[str], copies: dict[str, list],
                    unit_id: str) -> dict:
    """The pages of duplicates, copied from their canonical documents' shards without a model run:
    ``copies`` maps a canonical URI to the (URI, version) of each document with the same bytes.
    Each copy's rows get its own page ids, document id, URI and version (and its own copy of the
    page images); one new part file holds them, and the store's writer writes them. Runs where the
    data lives; returns the part's file entry, the store's write result and the pages per copy."""
    from operators.stores.parquet import IMAGES_PREFIX
    from operators.writer import image_folder, part_key

    parquet = ParquetSink(store)
    want = pa.array(sorted(copies))
    found = [t.filter(pc.is_in(t[S.SOURCE_URI], value_set=want)) for t in (parquet.read(key) for key in keys)]
    held = pa.concat_tables(found, promote_options="default") if found else None
    pieces, per_copy = [], {}
    for canonical in sorted(set(held[S.SOURCE_URI].to_pylist())) if held is not None else ():
        rows = held.filter(pc.equal(held[S.SOURCE_URI], canonical))  # its pages, whichever parts hold them
        numbers = rows[S.PAGE_NUMBER].to_pylist()
        for uri, version in copies[canonical]:
            copy = rows
            for name, values in ((S.PAGE_ID, [S.page_id_for(uri, n) for n in numbers]),
                                 (S.DOC_ID, [S.doc_id_for(uri)] * rows.num_rows),
                                 (S.SOURCE_URI, [uri] * rows.num_rows), (S.DOC_VERSION, [version] * rows.num_rows)):
                i = copy.schema.get_field_index(name)
                copy = copy.set_column(i, copy.schema.field(i), pa.array(values, copy.schema.field(i).type))
            pieces.append(copy)
            per_copy[uri] = rows.num_rows
    if not pieces:
        return {"files": [], "store": None, "pages": {}}
    table = pa.concat_tables(pieces).sort_by(S.PAGE_ID)
    ids = table[S.PAGE_ID].to_pylist()
    files = []
    if S.IMAGE_URI in table.column_names and table[S.IMAGE_URI].null_count < table.num_rows:
        base = store.uri.rstrip("/") + "/"
        folder = image_folder(f"{unit_id}-dup", ids)
        uris, total = [], 0
        for pid, old in zip(ids, table[S.IMAGE_URI].to_pylist()):
            if old is None or not old.startswith(base + IMAGES_PREFIX + "/"):
                uris.append(old)
                continue
            data = store.read_bytes(old[len(base):])
            key = f"{folder}{pid}.{old.rsplit('.', 1)[-1]}"
            store.write_bytes(key, data)
            uris.append(base + key)
            total += len(data)
        i = table.schema.get_field_index(S.IMAGE_URI)
        table = table.set_column(i, S.IMAGE_URI, pa.array(uris, pa.string()))
        files.append({"key": folder, "docs": sorted(per_copy), "rows": sum(1 for u in uris if u), "bytes": total,
                      "kind": "images"})
    key = part_key(PAGES_PREFIX, f"{unit_id}-dup", ids)
    size = parquet.write(key, table)
    files.append({"key": key, "docs": sorted(per_copy), "rows": table.num_rows, "bytes": size})
    result = None
    if writer is not None:
        writer.open()
        try:
            result = writer.write(unit_id, table)
        finally:
            writer.close()
    return {"files": files, "store": result, "pages": per_copy}


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
        duplicates = self._copy_duplicates(unit_id, info, files)
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
            self.vectors.commit(unit_id, [p["store"] for p in parts if p.get("store")]
                                + ([duplicates["store"]] if duplicates.get("store") else []), replaces)
            checkpoint("store_committed")
        self.ledger.commit({
            "unit_id": unit_id,
            "run_id": self.run_id,
            "docs": [{"uri": d["uri"], "doc_id": d["doc_id"], "version": d["version"], "status": d["status"],
                      "n_pages": d["n_pages"], **{k: d[k] for k in ("content_hash", "duplicate_of") if d.get(k)}}
                     for d in info["docs"]],
            "files": [{"key": f["key"], "docs": f["docs"]} for f in files],
            "rewrites": rewrites,
            "superseded": superseded,
        })
        checkpoint("committed")
        self.suspects.uris -= uris  # their writer deleted other versions; the ledger knows them now
        self._retired += [k for rw in rewrites for k in (rw["old"], *rw.get("images", ()))]
        self.publish()
        pages_key = PAGES_PREFIX + "/"
        return {"pages": sum(f["rows"] for f in files if f["key"].startswith(pages_key)),
                "bytes": sum(f["bytes"] for f in files if f["key"].startswith(pages_key)),
                "quarantine": quarantine, "superseded": len(superseded), "files": files,
                "duplicates": duplicates["pages"], "deferred": duplicates["deferred"],
                "hashes": [h for p in parts for h in p.get("hashes", ())]}

    def _copy_duplicates(self, unit_id: str, info: dict, files: list[dict]) -> dict:
        """Index the unit's duplicates (documents the render stage found with the same bytes as a
        committed one, or as one before them in the unit): their pages copied from the canonical
        document's shards (``copy_duplicates``), their files added to ``files``. A duplicate whose
        canonical has gone meanwhile is left out of the record: the next run renders it."""
        dups = [d for d in info["docs"] if d["status"] == "duplicate"]
        if not dups:
            return {"pages": {}, "deferred": 0}
        from pipelines.out.ledger import content_key

        state = self.ledger.state
        copies: dict[str, list] = {}
        for d in dups:
            canonical = d.get("duplicate_of") or state.holder_of(content_key(d["content_hash"]))
            d["duplicate_of"] = canonical
            if canonical:
                copies.setdefault(canonical, []).append((d["uri"], d["version"]))
        pages_key = PAGES_PREFIX + "/"
        keys = sorted({f["key"] for f in files if f["key"].startswith(pages_key) and set(f["docs"]) & set(copies)}
                      | {k for k in state.files_holding(set(copies)) if k.startswith(pages_key)})
        writer = self.vectors.writer() if self.vectors is not None else None
        done = self._run(copy_duplicates, self.store, writer, keys, copies, unit_id) if copies else {
            "files": [], "store": None, "pages": {}}
        files += done["files"]
        deferred = 0
        for d in dups:
            n = done["pages"].get(d["uri"], 0)
            if n:
                d.update(status="indexed", n_pages=n)
                info["n_pages"] += n
            else:
                info["docs"].remove(d)
                deferred += 1
        checkpoint("duplicates_copied")
        return {**done, "deferred": deferred}

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
        self._retired += [k for rw in rewrites for k in (rw["old"], *rw.get("images", ()))]
        self.publish()
        return removed
