"""The ledger: which document versions are committed, and which output files are live.

One small JSON object per committed work unit under ``OUT/_ledger/units/``, named
``<commit time ns>-<unit id>.json`` so that a plain listing gives commit order. Writing that
object is the commit point of a unit: its shards and Milvus rows were made durable before it.
Reading the ledger costs a listing plus these small objects, never a scan of the shards.

A record::

    {"unit_id": ..., "run_id": ..., "committed_at": ...,
     "docs": [{"uri", "doc_id", "version", "status", "n_pages"}],
     "files": [{"key": "pages/<unit>.parquet", "docs": [uri, ...]}, ...],
     "rewrites": [{"old": key, "new": key | null}],  # older files rewritten without superseded docs
     "superseded": [uri, ...]}                          # docs whose older version this replaces
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from operators.store import OutputStore

LEDGER_PREFIX = "_ledger/units"
SNAPSHOT_PREFIX = "_ledger/snapshots"
SUSPECTS_KEY = "_ledger/milvus_suspects.json"


@dataclass
class DocState:
    version: str
    status: str  # indexed | partial | quarantined
    n_pages: int
    unit_id: str


@dataclass
class LedgerState:
    docs: dict[str, DocState] = field(default_factory=dict)
    file_docs: dict[str, set[str]] = field(default_factory=dict)  # live file key -> docs inside
    units: set[str] = field(default_factory=set)
    records: int = 0

    def apply(self, rec: dict) -> None:
        superseded = set(rec.get("superseded", []))
        for rw in rec.get("rewrites", []):
            inside = self.file_docs.pop(rw["old"], set())
            if rw.get("new"):
                self.file_docs[rw["new"]] = inside - superseded
        for f in rec.get("files", []):
            self.file_docs[f["key"]] = set(f["docs"])
        for d in rec["docs"]:
            self.docs[d["uri"]] = DocState(d["version"], d["status"], d.get("n_pages", 0), rec["unit_id"])
        for uri in rec.get("deleted", []):
            self.docs.pop(uri, None)
        self.units.add(rec["unit_id"])
        self.records += 1

    def to_snapshot(self) -> dict:
        return {"docs": {u: [d.version, d.status, d.n_pages, d.unit_id] for u, d in self.docs.items()},
                "file_docs": {k: sorted(v) for k, v in self.file_docs.items()}, "units": sorted(self.units),
                "records": self.records}

    @classmethod
    def from_snapshot(cls, snap: dict) -> LedgerState:
        state = cls()
        state.docs = {u: DocState(*v) for u, v in snap["docs"].items()}
        state.file_docs = {k: set(v) for k, v in snap["file_docs"].items()}
        state.units = set(snap["units"])
        state.records = snap["records"]
        return state

    def files_holding(self, uris: set[str]) -> list[str]:
        return sorted(k for k, inside in self.file_docs.items() if inside & uris)

    def is_current(self, uri: str, version: str) -> bool:
        d = self.docs.get(uri)
        return d is not None and d.version == version


@dataclass
class MilvusSuspects:
    """Documents whose Milvus rows the ledger cannot vouch for.

    Milvus rows of a document come from its commits, and the ledger records every commit, with
    one exception: a commit that died after its Milvus writes and before its ledger record. Its
    shard was written before Milvus, so it is an orphan at the next start, and its documents are
    recorded here (durably, before the orphans are deleted) until they are committed again or,
    unchanged since their last commit, resynced from their shards. A commit deletes other
    versions' rows only for documents the ledger or this list names: for the rest Milvus holds
    nothing, and a delete by filter costs a query on the server. ``everything`` makes every
    commit delete: set when an orphan cannot be read, or when Milvus holds rows that an empty
    ledger cannot account for (a collection shared with another output, or one kept while
    ``OUT`` was removed).
    """

    uris: set[str] = field(default_factory=set)
    everything: bool = False
    why: str | None = None

    def may_hold(self, uri: str, state: LedgerState) -> bool:
        return self.everything or uri in state.docs or uri in self.uris

    def to_json(self) -> dict:
        return {"uris": sorted(self.uris), "everything": self.everything, "why": self.why}


class Ledger:
    def __init__(self, store: OutputStore):
        self.store = store
        self.state = LedgerState()
        self.pending_records: list[str] = []

    def load(self) -> LedgerState:
        """The newest snapshot, then the unit records committed after it, in commit order."""
        state, after = LedgerState(), ""
        snapshots = [o.key for o in self.store.list(SNAPSHOT_PREFIX) if o.key.endswith(".json")]
        if snapshots:
            snap = json.loads(self.store.read_bytes(max(snapshots)))
            state, after = LedgerState.from_snapshot(snap), snap["last_record"]
        self.pending_records = []
        for obj in self.store.list(LEDGER_PREFIX):
            name = obj.key.rsplit("/", 1)[-1]
            if not obj.key.endswith(".json") or name <= after:
                continue  # folded into the snapshot (a compaction that died before deleting it)
            state.apply(json.loads(self.store.read_bytes(obj.key)))
            self.pending_records.append(obj.key)
        self.state = state
        return state

    def compact(self) -> int:
        """Fold the unit records into one snapshot and delete them: planning then reads one
        object plus what was committed since. Returns the records folded."""
        self.load()
        if not self.pending_records:
            return 0
        last = self.pending_records[-1].rsplit("/", 1)[-1]
        snap = {**self.state.to_snapshot(), "last_record": last, "written_at": time.time()}
        self.store.write_bytes(f"{SNAPSHOT_PREFIX}/{time.time_ns():020d}.json", json.dumps(snap).encode())
        for key in self.pending_records:
            self.store.delete(key)
        for obj in self.store.list(SNAPSHOT_PREFIX)[:-1]:  # keep only the newest snapshot
            self.store.delete(obj.key)
        folded = len(self.pending_records)
        self.pending_records = []
        return folded

    def commit(self, record: dict) -> str:
        """Write the record (the unit's commit point) and fold it into the in-memory state."""
        record = dict(record, committed_at=time.time())
        key = f"{LEDGER_PREFIX}/{time.time_ns():020d}-{record['unit_id']}.json"
        self.store.write_bytes(key, json.dumps(record, sort_keys=True).encode())
        self.state.apply(record)
        self.pending_records.append(key)
        return key

    def load_suspects(self) -> MilvusSuspects:
        if not self.store.exists(SUSPECTS_KEY):
            return MilvusSuspects()
        d = json.loads(self.store.read_bytes(SUSPECTS_KEY))
        return MilvusSuspects(set(d.get("uris", [])), bool(d.get("everything")), d.get("why"))

    def save_suspects(self, suspects: MilvusSuspects) -> None:
        if suspects.uris or suspects.everything:
            self.store.write_bytes(SUSPECTS_KEY, json.dumps(suspects.to_json(), sort_keys=True).encode())
        elif self.store.exists(SUSPECTS_KEY):
            self.store.delete(SUSPECTS_KEY)

    def orphans(self, prefixes: tuple[str, ...]) -> list[str]:
        """Files under ``prefixes`` that no committed record makes live (left by a crash)."""
        live = set(self.state.file_docs)
        out = []
        for prefix in prefixes:
            out += [o.key for o in self.store.list(prefix) if o.key not in live]
        return out
