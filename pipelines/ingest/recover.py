"""What a dead run left, taken care of before a new one plans: files of units that never committed
(orphans) are removed, after the documents their page parts hold are recorded as the store's
suspects (rows the store may hold that the ledger does not know), and plan files of dead runs go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operators import schema as S
from operators.io.store import OutputStore
from operators.stores.door import Suspects, VectorStore
from operators.stores.parquet import read_table
from pipelines.out.identity import IndexState
from pipelines.out.keys import IMAGES_PREFIX, PAGES_PREFIX, QUARANTINE_PREFIX, RUNS_PREFIX
from pipelines.out.ledger import Ledger


@dataclass
class Recovery:
    ledger: Ledger  # the run's generation's, loaded
    other_live: set[str] = field(default_factory=set)  # files another generation's ledger holds
    orphans: list[str] = field(default_factory=list)  # files of units that never committed: removed
    suspects: Suspects = field(default_factory=Suspects)

    def sweep(self, out: OutputStore) -> int:
        """At a run's end (every unit committed, no writer in flight): a file no record names is
        a part that a retried write batch left under another key (a lost node's), never read by
        anyone. Removed; returns how many."""
        swept = self.ledger.orphans(ARCHIVE_PREFIXES, self.other_live)
        for key in swept:
            out.delete(key)
        return len(swept)

    def save_suspects(self, record: str | None) -> None:
        if record:
            self.ledger.save_record(record, self.suspects.to_json())

    def settle_suspects(self, record: str | None, whole_source: bool) -> None:
        """After a run over the whole source (not a --retry-quarantined one), every document has
        had a deleting commit or a resync: the unexplained rows are accounted for."""
        self.suspects.uris = {u for u in self.suspects.uris if u not in self.ledger.state}
        if whole_source:
            self.suspects.everything, self.suspects.why = False, None
        self.save_suspects(record)

    def check_unexplained_rows(self, vectors: VectorStore) -> None:
        """A store that holds rows while the ledger is empty (a collection shared with another
        output, or kept while OUT was removed): every commit deletes other versions' rows."""
        if (vectors.suspects_record and self.ledger.state.empty() and not self.suspects.everything
                and vectors.holds_rows()):
            self.suspects.everything = True
            self.suspects.why = f"{vectors.title} holds rows that the (empty) ledger does not account for"
            self.save_suspects(vectors.suspects_record)


def suspect_orphans(store: OutputStore, keys: list[str], suspects: Suspects) -> None:
    """The documents in orphan page shards (an unreadable one: suspect everything)."""

    for key in keys:
        try:
            uris = read_table(store.read_bytes(key), columns=[S.SOURCE_URI])[S.SOURCE_URI].to_pylist()
        except Exception as e:
            suspects.everything, suspects.why = True, f"an interrupted run's shard {key} is unreadable ({type(e).__name__})"
            continue
        suspects.uris.update(uris)


ARCHIVE_PREFIXES = (PAGES_PREFIX, QUARANTINE_PREFIX, IMAGES_PREFIX)  # the files units commit


def recover(out: OutputStore, generation: int, state: IndexState, vectors: VectorStore) -> Recovery:
    ledger = Ledger(out, generation)
    ledger.load()
    rec = Recovery(ledger)
    # Files another generation holds (the active index during a reindex, or the reindex's
    # during a plain run) are live too.
    for other in (state.active, state.pending, state.retired):
        if other is not None and other.generation != generation:
            theirs = Ledger(out, other.generation)
            theirs.load()
            rec.other_live |= theirs.state.live_files()
    # Files of units that never committed (the previous run died): not part of the index. Their
    # documents may have rows in the store that the ledger does not know: recorded before the
    # files go.
    rec.orphans = ledger.orphans(ARCHIVE_PREFIXES, rec.other_live)
    if vectors.suspects_record:
        rec.suspects = Suspects.from_json(ledger.load_record(vectors.suspects_record))
        if rec.orphans:
            # A unit's own page parts hold what its writers sent to the store; a rewrite (``~`` in
            # the name: an older shard without the superseded documents) sent nothing.
            suspect_orphans(out, [k for k in rec.orphans if k.startswith(PAGES_PREFIX + "/") and "~" not in k],
                            rec.suspects)
            rec.save_suspects(vectors.suspects_record)
    for key in rec.orphans:
        out.delete(key)
    for key in ledger.state.retired_images:  # a run that died between a commit and its deletes
        out.delete(key)
    for key in [o.key for o in out.list(RUNS_PREFIX) if "/plan/" in o.key]:
        out.delete(key)  # plan files of runs that died
    return rec
