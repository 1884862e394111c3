"""Work units and the run's plan file: what a unit is (its documents, its deterministic id) and
how a run's units are streamed to ``OUT/_runs/<run>/plan/`` for the executors to read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from operators.io.sources import DocumentRef, unit_docs_json
from operators.stores.parquet import read_table
from pipelines.out.keys import plan_prefix


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


PLAN_PART_UNITS = 1024  # units per plan file part: one read task of the run's dataset each


class PlanFile:
    """The run's work units, streamed to ``OUT/_runs/<run>/plan/part-NNNNNN.parquet`` as the
    listing is planned, so that one dataset reads the whole run in bounded memory (the driver
    keeps only the part keys)."""

    def __init__(self, store, run_id: str, units_per_part: int = PLAN_PART_UNITS):
        self.store = store
        self.prefix = plan_prefix(run_id)
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


    return read_table(store.read_bytes(key))
