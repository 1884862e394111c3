"""The store door: one small protocol for where an index's vectors go and how they come back.

Every vector store implements ``VectorStore`` (the driver's and the readers' handle) and hands
out ``StoreWriter``s (what the write workers hold). The ingest job, the committer, the ledger,
the executors and the readers (search, status, report, fidelity, the rebuild command) know this
door, never a store by name; which store a URI names is ``operators.stores.open_vectors``'s
business alone.

The write contract is Ray Data's Datasink's: a writer on a worker writes a unit's pages and
returns a small result (rows per table; for a store whose writes become visible only when
committed, what to commit); the driver's ``commit`` step, just before the unit's ledger record,
makes them part of the index. A store whose writes are visible at once (Milvus) keeps a
*suspects* record in the ledger: the documents it may hold rows of that the ledger does not
know (a unit that died between its writes and its record), so that later commits delete them.

    >>> IndexShape(base="pagemill", dim=128, layouts=()).tables_prefix
    'pagemill_'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa


class VectorStoreError(Exception):
    """The store cannot be reached, refuses the index, or one of its options is wrong; one
    line that never carries a secret."""


@dataclass(frozen=True)
class IndexShape:
    """What a store holds for an index: its tables' prefix (this generation's), the model's
    dimension, every layout of the run (``operators.layouts.layout.Layout``), the page vectors of
    other models (``sv-vlm``: its dimension) and the text layer's dimension."""

    base: str
    dim: int
    layouts: tuple = ()
    fde_dim: int | None = None
    text_dim: int | None = None
    page_vectors: tuple[tuple[str, int], ...] = ()  # (layout, dim) of other models' page vectors
    corpus: str = "default"
    text_chunks: bool = True  # the text layer a row per chunk (False: a vector per page, an archive from before chunks)

    @property
    def tables_prefix(self) -> str:
        return f"{self.base}_"

    def layout_names(self) -> list[str]:
        """Every layout a store may hold: the run's, the other models' page vectors, ``text``."""
        return ([lay.name for lay in self.layouts] + [name for name, _ in self.page_vectors]
                + (["text"] if self.text_dim else []))


@dataclass
class Suspects:
    """Documents whose rows in a store the ledger cannot vouch for.

    A store's rows of a document come from its commits, and the ledger records every commit,
    with one exception where writes are visible before the commit: a unit whose writers wrote
    rows but whose ledger record never came (the run died). Its parts were written before the
    store, so they are orphans at the next start, and their documents are recorded here
    (durably, before the orphans are deleted) until they are committed again or, unchanged since
    their last commit, resynced from their shards. A commit deletes other versions' rows only for
    documents the ledger or this list names: for the rest the store holds nothing, and a delete
    by filter costs the server a query. ``everything`` makes every commit delete: set when an
    orphan cannot be read, or when the store holds rows that an empty ledger cannot account for
    (a collection shared with another output, or one kept while ``OUT`` was removed).
    """

    uris: set[str] = field(default_factory=set)
    everything: bool = False
    why: str | None = None

    def may_hold(self, uri: str, state) -> bool:
        return self.everything or uri in self.uris or uri in state

    def __bool__(self) -> bool:
        return bool(self.uris or self.everything)

    def to_json(self) -> dict | None:
        return {"uris": sorted(self.uris), "everything": self.everything, "why": self.why} if self else None

    @classmethod
    def from_json(cls, d: dict | None) -> Suspects:
        d = d or {}
        return cls(set(d.get("uris", [])), bool(d.get("everything")), d.get("why"))


@dataclass(frozen=True)
class Hit:
    page_id: str
    score: float


class StoreWriter:
    """What a write worker holds: picklable and without secrets until ``open`` (in the process
    that writes, with that process' credentials)."""

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def write(self, unit_id: str, pages: pa.Table) -> dict:
        """Write these pages (``OUT/pages`` schema) of a unit; returns a small JSON-able result
        (``rows``: rows per table; what ``VectorStore.commit`` needs, if anything)."""
        raise NotImplementedError

    def delete_other_versions(self, versions: dict[str, str | None]) -> int:
        """Rows of each ``doc_id`` whose version differs (None: every row of the document) go;
        returns the requests sent."""
        raise NotImplementedError


class VectorStore:
    """The driver's and the readers' handle on one store (one index of it: ``IndexShape.base``).

    ``name`` keys what the store reports (the summary's section, the write stage's counters);
    ``single_process``: what the store is (``"Milvus Lite"``) when its writes must happen in one
    process (a database file), so the writers run in the driver, else None; ``local``: its files
    are on the driver's machine (a folder), so writers run on the driver's node; ``suspects_record``:
    the ledger record of its suspects: the documents of a unit that died after its writes became
    visible and before its ledger record."""

    name: str  # "milvus"
    title: str  # "Milvus": the store in a sentence
    single_process: str | None = None
    suspects_record: str | None = None
    local: bool = False  # its files are on the driver's machine: the writers run there

    @property
    def label(self) -> str:
        """The store and where it is, in words (no secret): ``LanceDB at /data/idx``."""
        return self.title

    # -- the index's tables --------------------------------------------------------------------

    def prepare(self, shape: IndexShape, recreate: bool = False, fresh: bool = False) -> list[str]:
        """Connect, plan the tables and fields of ``shape`` for this store, create what is
        missing (``recreate``: drop the index's tables first; ``fresh``: the index has no commit
        yet, so tables of its name that hold nothing, left by a run that never committed, are
        made anew for this one). Fails before anything is written when the store would refuse a
        field or an index. Returns notes for the user."""
        raise NotImplementedError

    def discover(self, base: str) -> list[str]:
        """Open an existing index to read it (readers create nothing, and read a read-only one);
        notes for the user."""
        raise NotImplementedError

    def drop_layouts(self, names: list[str]) -> list[str]:
        """Layouts removed from the index: their tables go where they have their own; notes."""
        raise NotImplementedError

    def remove(self, base: str) -> list[str]:
        """Drop every table of the index ``base`` and the names it is read by: a scratch index
        nobody reads (calibrate's stage pass). Returns the tables dropped."""
        raise NotImplementedError

    def layouts(self) -> list[str]:
        """The layouts this store holds for the index."""
        raise NotImplementedError

    def check(self, shape: IndexShape) -> None:
        """What can be checked of ``shape`` before anything is connected or created (raises)."""

    def check_layouts(self, run_layouts: list[str]) -> str | None:
        """What is wrong with the store's options for a run of these layouts (naming the key)."""
        return None

    # -- a run ---------------------------------------------------------------------------------

    def start(self, ledger) -> list[str]:
        """Before the first unit (``ledger``: ``load_record``/``save_record`` and the committed
        units): finish or refuse what a dead run left; notes."""
        return []

    def writer(self, layouts: list[str] | None = None) -> StoreWriter:
        """A writer (``layouts``: only these layouts' fields, for pages the index holds already):
        in this process it shares this handle's connection; sent to a worker it opens its own."""
        raise NotImplementedError

    def commit(self, unit_id: str, results: list[dict], replaces: dict[str, str | None] | None = None) -> None:
        """Make a unit's writes (its writers' ``results``) part of the index, just before its
        ledger record. ``replaces``: the documents (``doc_id`` -> the unit's version, None when
        it has no page left) whose rows the store may hold from before: a store whose writes are
        visible only when committed deletes them here, in the same step as it adds the unit's."""

    def delete_other_versions(self, versions: dict[str, str | None]) -> int:
        """As ``StoreWriter.delete_other_versions``, from the driver."""
        raise NotImplementedError

    def finish(self, recorded: dict | None = None) -> dict | None:
        """After the last unit: what the run must still do (a bulk import, indexes, compaction);
        its report. ``recorded``: what the index recorded of the store (``record``, last run)."""
        return None

    def record(self) -> dict:
        """What ``OUT/_index.json`` keeps of the store beyond its URI (the indexes built, their
        parameters)."""
        return {}

    def flush(self) -> None:
        """Once per run, after the last write."""

    def publish(self, collection: str, base: str, retired_base: str | None, generation: int) -> list[str]:
        """A reindex swapped in: the index's names now reach this generation's tables
        (``base``); the retired generation's go. Notes."""
        return []

    def holds_rows(self) -> bool:
        """Whether the index's tables hold any row of this corpus."""
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        raise NotImplementedError

    def memory_warning(self, pages: float, pages_held: int, vectors_per_page: float, dim: int) -> str | None:
        """One line when ``pages`` would not fit where this store keeps them (``pages_held`` are in
        it now; ``vectors_per_page``: the model's multi-vector, for a store that holds nothing
        yet); None when they fit."""
        return None

    def summary(self) -> dict:
        """What the run summary says of the store."""
        raise NotImplementedError

    def pending(self, ledger) -> list[str]:
        """What the store still has to do for the index (``status`` problems)."""
        return []

    def close(self) -> None:
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------------

    def search(self, layout: str, query: np.ndarray, candidates: int, corpus: str | None = None) -> list[Hit]:
        """Stage 1: the ``candidates`` best pages for ``query`` on ``layout`` (a page-level
        layout: one query vector; a multi-vector layout: the query's vectors, pages scored by
        the sum of each query vector's best match)."""
        raise NotImplementedError

    def text_lists(self) -> dict[str, bool]:
        """The text layer's searchable lists: ``{"bm25": bool, "dense": bool}``."""
        return {"bm25": False, "dense": False}

    def text_note(self) -> str | None:
        """Why a text list is missing, in one line."""
        return None

    def search_text(self, kind: str, query, limit: int, corpus: str | None = None) -> list[Hit]:
        """The text layer's chunks, best first (``kind``: ``bm25`` with the query text, or
        ``dense`` with its vector); a page appears once per chunk found."""
        raise NotImplementedError

    def fetch(self, layout: str, page_ids: list[str]) -> dict[str, np.ndarray]:
        """A multi-vector layout's vectors of some pages, as float32."""
        raise NotImplementedError

    def expected_rows(self, pages: int, vectors: dict[str, int]) -> dict[str, int | None]:
        """Rows each table should hold, from the archive: ``pages`` committed pages and the
        vector (or chunk) counts of the columns ``count_columns`` names."""
        raise NotImplementedError

    def count_columns(self) -> list[str]:
        """``OUT/pages`` columns whose list lengths ``expected_rows`` needs."""
        return []

    def measure(self, page_ids: list[str]) -> dict:
        """What the store holds, measured: per layout its raw bytes per page read back (of
        ``page_ids``), per table its rows and the store's own bytes; the sections of ``pagemill
        report``'s measurements (Milvus': its own keys, which the cost model reads; another
        store's: ``store``, with ``kind``, which ``operators.stores.storage_lines`` formats)."""
        raise NotImplementedError

    def archive_columns(self, available: list[str]) -> list[str]:
        """The ``OUT/pages`` columns its writer reads (of those ``available``)."""
        raise NotImplementedError

    def load(self, batches, shards: int, bulk_dir: str | None = None, log=None) -> dict:
        """Load the prepared index from the archive (the rebuild command): ``batches`` yields
        (shard key, pages table, corpus) shard after shard; what was loaded."""
        raise NotImplementedError
