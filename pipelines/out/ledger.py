"""The ledger: which document versions are committed, and which output files are live.

One small JSON object per committed work unit under ``OUT/_ledger/units/``, named
``<commit time ns>-<unit id>.json`` so that a plain listing gives commit order. Writing that
object is the commit point of a unit: its shards and vector-store rows were made durable before it.
Records are folded into a columnar snapshot (``OUT/_ledger/snapshots/<ns>/``: ``docs.parquet``,
``files.parquet``, then ``meta.json``, whose write makes the snapshot count), so that planning
reads one snapshot plus the records committed since, never a scan of the shards.

State in memory scales with the archive, not with Python objects: the snapshot's documents are
numpy columns sorted by a 64-bit key (the document id: blake2b of the URI, the same id vector-store rows
carry) with a 64-bit hash of the version, a status code, a page count and a unit index (about 25
bytes a document: 10M documents fit in ~250 MB); only documents changed since the snapshot are
Python objects (the overlay), and a long run folds them into a new snapshot as it goes. URIs and
version strings stay on disk until a rare path needs them.

A record::

    {"unit_id": ..., "run_id": ..., "committed_at": ...,
     "docs": [{"uri", "doc_id", "version", "status", "n_pages", "content_hash", "duplicate_of"}],
     "files": [{"key": "pages/<unit>-<part>.parquet", "docs": [uri, ...]}, ...],
     "rewrites": [{"old": key, "new": key | null}],  # older files rewritten without superseded docs
     "superseded": [uri, ...],                          # docs whose older version this replaces
     "deleted": [uri, ...]}                             # docs gone from the source (--delete-missing)
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators.io.store import OutputStore
from operators.stores.parquet import read_table
from pipelines.out.keys import ledger_prefix

LEDGER_PREFIX = f"{ledger_prefix(1)}/units"  # the first generation's
SNAPSHOT_PREFIX = f"{ledger_prefix(1)}/snapshots"
STATUSES = ("indexed", "partial", "quarantined")
_CODE = {s: i for i, s in enumerate(STATUSES)}
OVERLAY_FOLD = 500_000  # documents changed since the snapshot past which a run folds them into a new one


def doc_key(uri: str) -> int:
    """The document's 64-bit key: the integer of its ``doc_id`` (blake2b of the URI)."""
    return int.from_bytes(hashlib.blake2b(uri.encode("utf-8"), digest_size=8).digest(), "big")


def version_hash(version: str) -> int:
    return int.from_bytes(hashlib.blake2b(version.encode("utf-8"), digest_size=8).digest(), "big")


def hash_array(strings: list[str]) -> np.ndarray:
    """``doc_key`` / ``version_hash`` of many strings at once, as uint64."""
    digests = b"".join(hashlib.blake2b(x.encode("utf-8"), digest_size=8).digest() for x in strings)
    return np.frombuffer(digests, ">u8").astype(np.uint64)


@dataclass(slots=True)
class DocState:
    version: str | None  # None: not loaded (a snapshot document whose version string stayed on disk)
    status: str  # indexed | partial | quarantined
    n_pages: int
    unit_id: str
    uri: str | None = None
    vhash: int = 0
    chash: int = 0  # the first 8 bytes of its content hash (0: unknown, an earlier pagemill's record)


def content_key(content_hash: str | None) -> int:
    """A ``content_hash`` (hex) as the 64-bit key the ledger keeps (0 for none)."""
    return int(content_hash[:16], 16) if content_hash else 0


DOCS_SCHEMA = pa.schema([pa.field("key", pa.uint64()), pa.field("uri", pa.string()), pa.field("version", pa.string()),
                         pa.field("vhash", pa.uint64()), pa.field("status", pa.int8()), pa.field("n_pages", pa.int32()),
                         pa.field("unit_id", pa.string()), pa.field("chash", pa.uint64())])
FILES_SCHEMA = pa.schema([pa.field("key", pa.string()), pa.field("unit_id", pa.string())])


@dataclass
class LedgerState:
    """The committed state: the snapshot's columns (``base_*``), the overlay of documents
    changed since (None: deleted), and the live files with the unit whose documents they hold."""

    base_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    base_vhash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    base_status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    base_pages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    base_unit: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    base_chash: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    units: list[str] = field(default_factory=list)
    unit_index: dict[str, int] = field(default_factory=dict)
    overlay: dict[int, DocState | None] = field(default_factory=dict)
    retired_images: list[str] = field(default_factory=list)  # page images of rewritten rows, in the records
    files: dict[str, int] = field(default_factory=dict)  # live file key -> index of the unit it belongs to
    records: int = 0
    snapshot: str | None = None  # the snapshot folder the base came from (for its strings)
    store: OutputStore | None = None

    # -- lookups --------------------------------------------------------------------------------

    def _base_row(self, key: int) -> int | None:
        i = int(np.searchsorted(self.base_keys, np.uint64(key)))
        return i if i < len(self.base_keys) and int(self.base_keys[i]) == key else None

    def get(self, uri: str, with_version: bool = False) -> DocState | None:
        key = doc_key(uri)
        if key in self.overlay:
            return self.overlay[key]
        i = self._base_row(key)
        if i is None:
            return None
        version = self._base_strings([i])["version"][0] if with_version else None
        return DocState(version, STATUSES[self.base_status[i]], int(self.base_pages[i]), self.units[self.base_unit[i]],
                        uri, int(self.base_vhash[i]), int(self.base_chash[i]))

    def __contains__(self, uri: str) -> bool:
        return self.get(uri) is not None

    def __len__(self) -> int:
        added = sum(1 for k, d in self.overlay.items() if d is not None and self._base_row(k) is None)
        gone = sum(1 for k, d in self.overlay.items() if d is None and self._base_row(k) is not None)
        return len(self.base_keys) + added - gone

    def pages_held(self) -> int:
        """Pages of the documents the ledger holds (a replaced document counted once, as now)."""
        pages = int(self.base_pages.sum())
        for k, d in self.overlay.items():
            i = self._base_row(k)
            pages += (d.n_pages if d is not None else 0) - (int(self.base_pages[i]) if i is not None else 0)
        return pages

    def content_keys(self) -> np.ndarray:
        """The content keys of the documents the index holds pages of (indexed or partial), sorted
        and unique: what the render stage checks a document's bytes against (duplicates)."""
        held = np.isin(self.base_status, [_CODE["indexed"], _CODE["partial"]]) & (self.base_chash != 0)
        keys = self.base_chash[held & ~np.isin(self.base_keys, np.array(list(self.overlay), np.uint64))]
        extra = [d.chash for d in self.overlay.values()
                 if d is not None and d.chash and d.status in ("indexed", "partial") and d.n_pages]
        return np.unique(np.concatenate([keys, np.array(extra, np.uint64)]))

    def holder_of(self, chash: int, besides: str | None = None) -> str | None:
        """A committed document (its URI) with pages whose content key is ``chash``: the
        canonical copy of a duplicate (``besides``: not this one)."""
        for d in self.overlay.values():
            if d is not None and d.chash == chash and d.n_pages and d.uri != besides and d.status != "quarantined":
                return d.uri
        rows = [int(r) for r in np.flatnonzero(self.base_chash == np.uint64(chash))
                if int(self.base_keys[r]) not in self.overlay and self.base_pages[r] > 0
                and self.base_status[r] != _CODE["quarantined"]]
        uris = [u for u in self._base_strings(rows)["uri"] if u != besides] if rows else []
        return uris[0] if uris else None

    def is_current(self, uri: str, version: str) -> bool:
        d = self.get(uri)
        return d is not None and d.vhash == version_hash(version)

    def classify(self, keys: np.ndarray, vhashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a batch of listed documents: (known, current, status code; -1 unknown), vectorised
        over the snapshot's columns, the overlay taking precedence."""
        n = len(keys)
        known = np.zeros(n, bool)
        current = np.zeros(n, bool)
        status = np.full(n, -1, np.int8)
        if len(self.base_keys):
            idx = np.searchsorted(self.base_keys, keys)
            idx[idx >= len(self.base_keys)] = 0
            hit = self.base_keys[idx] == keys
            known[hit] = True
            current[hit] = self.base_vhash[idx[hit]] == vhashes[hit]
            status[hit] = self.base_status[idx[hit]]
        if self.overlay:
            for j, k in enumerate(keys.tolist()):
                if k in self.overlay:
                    d = self.overlay[k]
                    known[j] = d is not None
                    current[j] = d is not None and d.vhash == int(vhashes[j])
                    status[j] = _CODE[d.status] if d is not None else -1
        return known, current, status

    def base_rows(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key in the snapshot's columns, -1 where it has none."""
        if not len(self.base_keys):
            return np.full(len(keys), -1, np.int64)
        idx = np.searchsorted(self.base_keys, keys)
        idx[idx >= len(self.base_keys)] = 0
        return np.where(self.base_keys[idx] == keys, idx, -1)

    def _base_strings(self, rows: list[int]) -> dict[str, list]:
        """URI and version strings of some snapshot rows, read from the snapshot (rare paths)."""
        local = self.store.local_path(f"{self.snapshot}/docs.parquet")
        table = read_table(local or self.store.read_bytes(f"{self.snapshot}/docs.parquet"), columns=["uri", "version"])
        take = pa.array(rows, pa.int64())
        return {"uri": table["uri"].take(take).to_pylist(), "version": table["version"].take(take).to_pylist()}

    def iter_docs(self) -> Iterator[tuple[str, DocState]]:
        """Every committed document (URI and state), streaming over the snapshot (for deletes of
        documents gone from the source, and status)."""
        if self.snapshot and len(self.base_keys):
            key = f"{self.snapshot}/docs.parquet"
            pf = pq.ParquetFile(self.store.local_path(key) or io.BytesIO(self.store.read_bytes(key)))
            for batch in pf.iter_batches(batch_size=65536):
                cols = [batch.column(i).to_pylist() for i in range(7)]
                chash = batch.column("chash").to_pylist() if "chash" in batch.schema.names else [0] * batch.num_rows
                for key, uri, version, vh, st, n, unit, ch in zip(*cols, chash):
                    if key in self.overlay:
                        continue
                    yield uri, DocState(version, STATUSES[st], n, unit, uri, vh, ch or 0)
        for d in self.overlay.values():
            if d is not None:
                yield d.uri, d

    def empty(self) -> bool:
        return not len(self.base_keys) and all(d is None for d in self.overlay.values())

    def missing(self, seen_keys: np.ndarray) -> list[str]:
        """URIs of committed documents whose keys are not in ``seen_keys`` (gone from the source)."""
        rows = np.flatnonzero(~np.isin(self.base_keys, seen_keys))
        rows = [int(r) for r in rows if int(self.base_keys[r]) not in self.overlay]
        out = self._base_strings(rows)["uri"] if rows else []
        seen = set(seen_keys.tolist()) if len(self.overlay) else set()
        out += [d.uri for k, d in self.overlay.items() if d is not None and k not in seen]
        return sorted(out)

    # -- files ----------------------------------------------------------------------------------

    def _unit(self, unit_id: str) -> int:
        i = self.unit_index.get(unit_id)
        if i is None:
            i = self.unit_index[unit_id] = len(self.units)
            self.units.append(unit_id)
        return i

    def files_holding(self, uris: set[str]) -> list[str]:
        """Live files of the units that committed these documents (a unit's parts: some may not
        hold a given document; rewrites skip what has nothing to drop)."""
        units = set()
        for uri in uris:
            d = self.get(uri)
            if d is not None:
                units.add(self.unit_index[d.unit_id])
        return sorted(k for k, u in self.files.items() if u in units)

    def live_files(self) -> set[str]:
        return set(self.files)

    # -- replay ---------------------------------------------------------------------------------

    def apply(self, rec: dict) -> None:
        unit = self._unit(rec["unit_id"])
        for rw in rec.get("rewrites", []):
            self.retired_images += rw.get("images", ())  # (deleted after the commit; again at a start)
            owner = self.files.pop(rw["old"], unit)
            if rw.get("new"):
                self.files[rw["new"]] = owner
        for f in rec.get("files", []):
            self.files[f["key"]] = unit
        for d in rec["docs"]:
            self.overlay[doc_key(d["uri"])] = DocState(d["version"], d["status"], d.get("n_pages", 0), rec["unit_id"],
                                                       d["uri"], version_hash(d["version"]),
                                                       content_key(d.get("content_hash")))
        for uri in rec.get("deleted", []):
            self.overlay[doc_key(uri)] = None
        self.records += 1


class Ledger:
    def __init__(self, store: OutputStore, generation: int = 1):
        self.store = store
        self.generation = generation
        self.prefix = ledger_prefix(generation)
        self.units_prefix = f"{self.prefix}/units"
        self.snapshot_prefix = f"{self.prefix}/snapshots"
        self.state = LedgerState(store=store)
        self.pending_records: list[str] = []

    def _snapshots(self) -> list[str]:
        """Complete snapshots (their meta.json written), oldest first."""
        return sorted(o.key.rsplit("/", 1)[0] for o in self.store.list(self.snapshot_prefix)
                      if o.key.endswith("/meta.json") and o.key.count("/") == self.snapshot_prefix.count("/") + 2)

    def load(self) -> LedgerState:
        """The newest snapshot, then the unit records committed after it, in commit order."""
        state, after = LedgerState(store=self.store), ""
        snapshots = self._snapshots()
        if snapshots:
            state, after = self._load_snapshot(snapshots[-1])
        else:
            legacy = [o.key for o in self.store.list(self.snapshot_prefix)
                      if o.key.endswith(".json") and o.key.count("/") == self.snapshot_prefix.count("/") + 1]
            if legacy:  # a JSON snapshot written by an earlier pagemill: replayed as one record
                snap = json.loads(self.store.read_bytes(max(legacy)))
                state, after = _from_json_snapshot(snap, self.store), snap["last_record"]
        self.pending_records = []
        for obj in self.store.list(self.units_prefix):
            name = obj.key.rsplit("/", 1)[-1]
            if not obj.key.endswith(".json") or name <= after:
                continue  # folded into the snapshot (a compaction that died before deleting it)
            state.apply(json.loads(self.store.read_bytes(obj.key)))
            self.pending_records.append(obj.key)
        self.state = state
        return state

    def _open(self, key: str):
        local = self.store.local_path(key)
        return local if local else io.BytesIO(self.store.read_bytes(key))

    def _load_snapshot(self, folder: str) -> tuple[LedgerState, str]:
        """The snapshot's numeric columns, read one row group at a time into preallocated arrays
        (the URIs and version strings stay on disk)."""
        meta = json.loads(self.store.read_bytes(f"{folder}/meta.json"))
        pf = pq.ParquetFile(self._open(f"{folder}/docs.parquet"))
        n = pf.metadata.num_rows
        state = LedgerState(base_keys=np.empty(n, np.uint64), base_vhash=np.empty(n, np.uint64),
                            base_status=np.empty(n, np.int8), base_pages=np.empty(n, np.int32),
                            base_unit=np.empty(n, np.int32), base_chash=np.zeros(n, np.uint64),
                            records=int(meta["records"]), snapshot=folder, store=self.store)
        pos = 0
        with_chash = "chash" in pf.schema_arrow.names  # (a snapshot of an earlier pagemill has none)
        for rg in range(pf.metadata.num_row_groups):
            t = pf.read_row_group(rg, columns=["key", "vhash", "status", "n_pages", "unit_id"]
                                  + (["chash"] if with_chash else []))
            m = t.num_rows
            if with_chash:
                state.base_chash[pos:pos + m] = t["chash"].fill_null(0).to_numpy()
            state.base_keys[pos:pos + m] = t["key"].to_numpy()
            state.base_vhash[pos:pos + m] = t["vhash"].to_numpy()
            state.base_status[pos:pos + m] = t["status"].to_numpy()
            state.base_pages[pos:pos + m] = t["n_pages"].to_numpy()
            units = t["unit_id"].combine_chunks().dictionary_encode()
            local = np.array([state._unit(u) for u in units.dictionary.to_pylist()], np.int32)
            state.base_unit[pos:pos + m] = local[units.indices.to_numpy()] if len(local) else 0
            pos += m
            del t, units
        files = read_table(self._open(f"{folder}/files.parquet"))
        for key, unit in zip(files["key"].to_pylist(), files["unit_id"].to_pylist()):
            state.files[key] = state._unit(unit)
        del files
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages otherwise
        return state, meta["last_record"]

    def compact(self) -> int:
        """Fold the records since the snapshot into a new snapshot and delete them: planning then
        reads one snapshot plus what was committed since. Works from the state in memory (which
        replays every record); memory stays bounded (the old snapshot is merged in row groups).
        Returns the records folded."""
        if not self.pending_records:
            return 0
        state = self.state
        folder = f"{self.snapshot_prefix}/{time.time_ns():020d}"
        self.store.write_bytes(f"{folder}/docs.parquet", _merged_docs(state))
        buf = io.BytesIO()
        pq.write_table(pa.table({"key": list(state.files), "unit_id": [state.units[u] for u in state.files.values()]},
                                schema=FILES_SCHEMA), buf, compression="zstd")
        self.store.write_bytes(f"{folder}/files.parquet", buf.getvalue())
        last = self.pending_records[-1].rsplit("/", 1)[-1]
        self.store.write_bytes(f"{folder}/meta.json", json.dumps({
            "last_record": last, "records": state.records, "docs": len(state), "files": len(state.files),
            "written_at": time.time()}).encode())  # the snapshot's commit point
        for key in self.pending_records:
            self.store.delete(key)
        for obj in self.store.list(self.snapshot_prefix):
            if not obj.key.startswith(folder + "/"):
                self.store.delete(obj.key)  # keep only the newest snapshot
        folded = len(self.pending_records)
        self.pending_records = []
        fresh, _ = self._load_snapshot(folder)
        self.state = fresh
        return folded

    def commit(self, record: dict) -> str:
        """Write the record (the unit's commit point) and fold it into the in-memory state."""
        record = dict(record, committed_at=time.time())
        key = f"{self.units_prefix}/{time.time_ns():020d}-{record['unit_id']}.json"
        self.store.write_bytes(key, json.dumps(record, sort_keys=True).encode())
        self.state.apply(record)
        self.pending_records.append(key)
        if len(self.state.overlay) >= OVERLAY_FOLD:
            self.compact()  # a long backfill: fold as it goes, so the overlay stays small
        return key

    def record_key(self, name: str) -> str:
        return f"{self.prefix}/{name}.json"

    def load_record(self, name: str) -> dict | None:
        """A record a vector store asked the ledger to keep (``<prefix>/<name>.json``), or None."""
        key = self.record_key(name)
        return json.loads(self.store.read_bytes(key)) if self.store.exists(key) else None

    def save_record(self, name: str, data: dict | None) -> None:
        """Keep a store's record durably (None: remove it)."""
        key = self.record_key(name)
        if data is not None:
            self.store.write_bytes(key, json.dumps(data, sort_keys=True).encode())
        elif self.store.exists(key):
            self.store.delete(key)

    def delete_all(self) -> None:
        """Remove this generation's ledger (a retired index after a reindex swapped it out)."""
        for obj in self.store.list(self.prefix):
            if self.generation > 1 or not obj.key.startswith("_ledger/g"):
                self.store.delete(obj.key)

    def orphans(self, prefixes: tuple[str, ...], also_live: set[str] | frozenset = frozenset()) -> list[str]:
        """Files under ``prefixes`` that no committed record makes live (left by a crash).
        ``also_live``: files another generation's ledger holds (during a reindex)."""
        live = self.state.files
        out = []
        for prefix in prefixes:
            for o in self.store.list(prefix):
                folder = o.key.rsplit("/", 1)[0] + "/"  # a part's folder of images is live as a whole
                if (o.key not in live and o.key not in also_live and folder not in live and folder not in also_live
                        and not o.key.rsplit("/", 1)[-1].startswith("_")):
                    out.append(o.key)
        return out


def _overlay_table(state: LedgerState, keys: list[int]) -> pa.Table:
    docs = [state.overlay[k] for k in keys]
    return pa.table({"key": pa.array(keys, pa.uint64()), "uri": [d.uri for d in docs],
                     "version": [d.version for d in docs], "vhash": pa.array([d.vhash for d in docs], pa.uint64()),
                     "status": pa.array([_CODE[d.status] for d in docs], pa.int8()),
                     "n_pages": pa.array([d.n_pages for d in docs], pa.int32()), "unit_id": [d.unit_id for d in docs],
                     "chash": pa.array([d.chash for d in docs], pa.uint64())},
                    schema=DOCS_SCHEMA)


def _merged_docs(state: LedgerState) -> bytes:
    """The snapshot's documents with the overlay applied, sorted by key, as Parquet; the old
    snapshot is read one row group at a time."""
    changed = np.array(sorted(state.overlay), np.uint64)
    live = [k for k in changed.tolist() if state.overlay[k] is not None]
    buf = io.BytesIO()
    writer = pq.ParquetWriter(buf, DOCS_SCHEMA, compression="zstd")
    pos = 0  # next overlay document (by key) not yet written
    if state.snapshot and len(state.base_keys):
        key = f"{state.snapshot}/docs.parquet"
        pf = pq.ParquetFile(state.store.local_path(key) or io.BytesIO(state.store.read_bytes(key)))
        for batch in pf.iter_batches(batch_size=262144):
            table = pa.Table.from_batches([batch])
            if "chash" not in table.column_names:  # an earlier pagemill's snapshot
                table = table.append_column("chash", pa.array(np.zeros(table.num_rows, np.uint64)))
            table = table.cast(DOCS_SCHEMA)
            keys = table["key"].to_numpy()
            top = int(keys[-1]) if len(keys) else 0
            table = table.filter(pa.array(~np.isin(keys, changed)))
            end = pos
            while end < len(live) and live[end] <= top:
                end += 1
            if end > pos:
                table = pa.concat_tables([table, _overlay_table(state, live[pos:end])]).sort_by("key")
                pos = end
            writer.write_table(table)
    if pos < len(live):
        writer.write_table(_overlay_table(state, live[pos:]))
    writer.close()
    return buf.getvalue()


def _from_json_snapshot(snap: dict, store: OutputStore) -> LedgerState:
    state = LedgerState(store=store)
    for uri, (version, status, n_pages, unit_id) in snap["docs"].items():
        state.overlay[doc_key(uri)] = DocState(version, status, n_pages, unit_id, uri, version_hash(version))
        state._unit(unit_id)
    for key, uris in snap["file_docs"].items():
        owners = {state.overlay[doc_key(u)].unit_id for u in uris if state.overlay.get(doc_key(u))}
        state.files[key] = state._unit(min(owners) if owners else "legacy")
    state.records = snap["records"]
    return state
