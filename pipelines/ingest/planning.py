"""Planning: list the source, skip committed versions, group the rest into work units."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np

from operators.faults import armed, checkpoint
from operators.io.sources import DocumentRef
from pipelines.out.ledger import STATUSES, LedgerState, hash_array
from pipelines.out.units import WorkUnit, unit_id_for


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

    def projected_pages(self, state: LedgerState) -> tuple[int, float]:
        """(pages the index holds, pages it will hold once the pending documents are in): pages
        per document as the index has them so far, 10 when it is empty."""
        docs, pages = len(state), state.pages_held()
        return pages, pages + self.pending * (pages / docs if docs and pages else 10.0)


def primed(listing: Iterable[DocumentRef]) -> Iterator[DocumentRef]:
    """The listing with its first item fetched now: a bad source fails here, not in a worker."""
    it = iter(listing)
    first = next(it, None)

    def chain():
        if first is not None:
            yield first
            yield from it

    return chain()


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


