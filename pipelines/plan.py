"""Planning: list the source, skip committed versions, group the rest into work units."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from operators.sources import DocumentRef
from pipelines.faults import checkpoint
from pipelines.ledger import LedgerState


@dataclass
class WorkUnit:
    unit_id: str
    docs: list[DocumentRef]

    @property
    def bytes(self) -> int:
        return sum(d.size for d in self.docs)


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
    seen_uris: set | None = None  # filled when --delete-missing needs to know what still exists


RETRYABLE = ("quarantined", "partial")


def plan_units(
    listing: Iterable[DocumentRef], state: LedgerState, max_docs: int, max_bytes: int, counts: PlanCounts,
    retry_quarantined: bool = False,
) -> Iterator[WorkUnit]:
    """Yield work units of pending documents, streaming over the listing.

    A unit closes at ``max_docs`` documents or when the next document would take it past
    ``max_bytes`` (a single larger document still gets a unit of its own). With
    ``retry_quarantined`` only documents whose committed version was quarantined (or partly
    indexed) are pending, unchanged or not.
    """
    batch: list[DocumentRef] = []
    size = 0
    for ref in listing:
        checkpoint("listing")
        counts.seen += 1
        if counts.seen_uris is not None:
            counts.seen_uris.add(ref.uri)
        known = state.docs.get(ref.uri)
        if retry_quarantined:
            if known is None or known.status not in RETRYABLE:
                if state.is_current(ref.uri, ref.version):
                    counts.skipped_unchanged += 1
                else:
                    counts.deferred += 1
                continue
            counts.retried += 1
        elif state.is_current(ref.uri, ref.version):
            counts.skipped_unchanged += 1
            continue
        counts.pending += 1
        counts.pending_bytes += ref.size
        salt = f"retry-{state.records}" if retry_quarantined else ""
        if batch and (len(batch) >= max_docs or size + ref.size > max_bytes):
            yield WorkUnit(unit_id_for(batch, salt), batch)
            batch, size = [], 0
        batch.append(ref)
        size += ref.size
    if batch:
        yield WorkUnit(unit_id_for(batch, f"retry-{state.records}" if retry_quarantined else ""), batch)
