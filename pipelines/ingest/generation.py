"""A reindex's end: the new generation swapped in, the retired one cleaned up."""

from __future__ import annotations

import time

from operators.io.store import OutputStore
from operators.stores.door import VectorStore
from pipelines.out.identity import IndexState, save_state
from pipelines.out.ledger import Ledger
from pipelines.out.manifest import write_manifest


def swap_in(out: OutputStore, state: IndexState, ledger: Ledger, run_id: str) -> str:
    """A reindex run that finished has every listed document in the new generation: swap it in
    (``_index.json`` is the commit point) and point the manifest at its shards. Returns what the
    index is now."""
    state.retired, state.active, state.pending = state.active, state.pending, None
    state.history.append({"generation": state.active.generation, "swapped_at": time.time(),
                          "model": state.active.describe(), "run_id": run_id})
    save_state(out, state)
    write_manifest(out, ledger.state, state.active.generation)
    return f"reindex complete: generation {state.active.generation} ({state.active.describe()}) is the index now"


def retire(out: OutputStore, state: IndexState, ledger: Ledger, vectors: VectorStore) -> list[str]:
    """The retired generation goes: the store's names point at the new one's tables (its own go),
    then its shards and its ledger. ``ledger``: this run's. Returns notes."""
    old, new = state.retired, state.active
    notes = vectors.publish(new.collection, new.base, retired_base=old.base, generation=new.generation)
    theirs = Ledger(out, old.generation)
    theirs.load()
    live_now = ledger.state.live_files() if ledger.generation == new.generation else set()
    for key in sorted(theirs.state.live_files() - live_now):
        out.delete(key)
    theirs.delete_all()
    state.retired = None
    save_state(out, state)
    return notes
