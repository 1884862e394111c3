"""Planning: list the source, skip committed versions, group the rest into work units."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np

from operators.faults import armed, checkpoint
from operators.io.sources import DocumentRef, unit_docs_json
from pipelines.ingest.ledger import STATUSES, LedgerState, hash_array


@dataclass
class WorkUnit:
    unit_id: str
    docs: list[DocumentRef]
    may_hold: list[bool] | None = None  # per document: Milvus may hold rows of another version of it

    @property
    def bytes(self) -> int:
        return sum(d.size for d in self.docs)

    def may_hold_fn(self):
        flags = dict(zip((d.uri for d in self.docs), self.may_hold or [True] * len(self.docs)))
        return lambda d: flags[d.uri]

    def docs_json(self) -> str:
        return unit_docs_json(self.docs, self.may_hold)


def unit_id_for(docs: list[DocumentRef], salt: str = "") -> str:
    """Deterministic from the document versions it holds: a replayed unit writes the same keys.
    (``salt`` separates a retry of the same versions from the unit that first committed them.)"""
    h = hashlib.blake2b(digest_size=10)
    h.update(salt.encode())
    for d in sorted(docs, key=lambda d: d.uri):
        h.update(f"{d.uri}\0{d.version}\n".encode())
    return "u" + h.hexdigest()


@dataclass
class PlanCounts:
    seen: int = 0
    skipped_unchanged: int = 0
    pending: int = 0
    pending_bytes: int = 0
    retried: int = 0
    deferred: int = 0  # new or changed documents a --retry-quarantined run leaves for a normal run
    seen_keys: list | None = None  # filled (arrays of document keys) when --delete-missing needs what still exists

    def seen_key_array(self) -> np.ndarray:
        return np.unique(np.concatenate(self.seen_keys)) if self.seen_keys else np.zeros(0, np.uint64)


RETRYABLE = ("quarantined", "partial")
_RETRY_CODES = {STATUSES.index(s) for s in RETRYABLE}
LOOKUP_CHUNK = 1024  # listed documents classified against the ledger at once (vectorised)


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


def plan_units(
    listing: Iterable[DocumentRef], state: LedgerState, max_docs: int, max_bytes: int, counts: PlanCounts,
    retry_quarantined: bool = False, suspects=None, salt: str = "",
) -> Iterator[WorkUnit]:
    """Yield work units of pending documents, streaming over the listing.

    A unit closes at ``max_docs`` documents or when the next document would take it past
    ``max_bytes`` (a single larger document still gets a unit of its own). With
    ``retry_quarantined`` only documents whose committed version was quarantined (or partly
    indexed) are pending, unchanged or not. Listed documents are looked up in the ledger a chunk
    at a time (hashes, then one vectorised search), so planning a listing of tens of millions
    costs seconds, not a Python object per committed document. ``suspects``: documents Milvus may
    hold rows of besides the ledger's (their writers must delete other versions).
    """
    batch: list[DocumentRef] = []
    flags: list[bool] = []
    size = 0
    salt = salt + (f"retry-{state.records}" if retry_quarantined else "")
    everything = bool(suspects and suspects.everything)
    suspect_uris = suspects.uris if suspects else set()
    kill_while_listing = armed("listing")
    for refs in _chunks(listing, LOOKUP_CHUNK):
        keys = hash_array([r.uri for r in refs])
        known, current, status = state.classify(keys, hash_array([r.version for r in refs]))
        if counts.seen_keys is not None:
            counts.seen_keys.append(keys)
        if kill_while_listing:
            for _ in refs:
                checkpoint("listing")
        counts.seen += len(refs)
        if retry_quarantined:
            retry = known & np.isin(status, list(_RETRY_CODES))
            counts.retried += int(retry.sum())
            counts.skipped_unchanged += int((~retry & current).sum())
            counts.deferred += int((~retry & ~current).sum())
            pending = np.flatnonzero(retry)
        else:
            counts.skipped_unchanged += int(current.sum())
            pending = np.flatnonzero(~current)
        for i in pending.tolist():
            ref = refs[i]
            counts.pending += 1
            counts.pending_bytes += ref.size
            if batch and (len(batch) >= max_docs or size + ref.size > max_bytes):
                yield WorkUnit(unit_id_for(batch, salt), batch, flags)
                batch, flags, size = [], [], 0
            batch.append(ref)
            flags.append(bool(everything or known[i] or ref.uri in suspect_uris))
            size += ref.size
    if batch:
        yield WorkUnit(unit_id_for(batch, salt), batch, flags)


PLAN_PART_UNITS = 1024  # units per plan file part: one read task of the run's dataset each


class PlanFile:
    """The run's work units, streamed to ``OUT/_runs/<run>/plan/part-NNNNNN.parquet`` as the
    listing is planned, so that one dataset reads the whole run in bounded memory (the driver
    keeps only the part keys)."""

    def __init__(self, store, run_id: str, units_per_part: int = PLAN_PART_UNITS):
        self.store = store
        self.prefix = f"_runs/{run_id}/plan"
        self.units_per_part = units_per_part
        self.keys: list[str] = []
        self.units = 0
        self._buf: list[WorkUnit] = []

    def add(self, unit: WorkUnit) -> None:
        self._buf.append(unit)
        self.units += 1
        if len(self._buf) >= self.units_per_part:
            self._flush()

    def close(self) -> list[str]:
        if self._buf:
            self._flush()
        return self.keys

    def _flush(self) -> None:
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"unit_id": [u.unit_id for u in self._buf], "docs": [u.docs_json() for u in self._buf]})
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        key = f"{self.prefix}/part-{len(self.keys):06d}.parquet"
        self.store.write_bytes(key, buf.getvalue())
        self.keys.append(key)
        self._buf = []

    def delete(self) -> None:
        for key in self.keys:
            self.store.delete(key)


def read_plan_part(store, key: str):
    """One part of a plan file as the render stage's input table (``unit_id``, ``docs``)."""
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(store.read_bytes(key)))
