"""Milvus' bulk import: rows staged as Parquet files (in a collection's schema) where the server
reads them, gathered into few import files a collection, one import task each, waited for and
checked against the rows sent.

Few files, not one a unit: Milvus 2.3's data node runs import tasks one at a time and looks at a
running task every 2 s (hard-coded), so each task costs at least 2 s whatever its size. A backfill
of 10,000 units into 5 collections as one file a unit and collection would wait 28 hours on those
checks alone; gathered into files of about ``IMPORT_FILE_BYTES`` it waits seconds.

Two users: an ingest's first load (``--milvus-bulk-dir``: the writers stage each part's rows
instead of upserting, and the driver imports everything at the end of the run; a run killed
before the import leaves the load pending, recorded in the ledger, and the next run with the
option finishes it) and the rebuild from the archive (``milvus-load --bulk-dir``).
"""

from __future__ import annotations

import io
import time

import pyarrow as pa
import pyarrow.parquet as pq

from operators.stores.milvus.private import bulk_insert, bulk_insert_state
from operators.stores.milvus.schema import MilvusError

PENDING_RECORD = "milvus_bulk"  # the ledger record of a first load staged and not yet imported
GATHERED = "_import"  # where a first load's gathered import files are written, beside the units' files
# A collection's rows held in memory until they reach this many Arrow bytes, then staged as one
# import file (its Parquet is smaller); a file overshoots it by at most the last table added. Milvus 2.3 takes files up to 16 GiB (common.ImportMaxFileSize).
IMPORT_FILE_BYTES = 128 << 20


def stage_base(stage) -> str:
    """The path prefix the Milvus server reads a staged file under: absolute on its local
    storage, or the key in the bucket it uses."""
    return str(stage.root) + "/" if hasattr(stage, "root") else getattr(stage, "prefix", "")


def stage_table(stage, key: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    stage.write_bytes(key, buf.getvalue())


def bulk_wait(client, tasks: list[int], timeout_s: float = 600.0) -> int:
    """Wait for import tasks (``client``: a connected ``MilvusClientBase``); returns rows
    imported. A failed task fails with its reason."""
    deadline = time.monotonic() + timeout_s
    pending, rows = list(tasks), 0
    while pending:
        state = client._guard("bulk import state", bulk_insert_state, client.client, pending[0])
        if state.state_name == "Completed":
            rows += int(state.row_count)
            pending.pop(0)
            continue
        if state.state_name == "Failed":
            raise MilvusError(f"Milvus bulk import of {state.infos.get('files')} failed: "
                              f"{state.infos.get('failed_reason', '')[:300]}")
        if time.monotonic() > deadline:
            raise MilvusError(f"Milvus bulk import still {state.state_name} after {timeout_s:.0f}s")
        time.sleep(0.5)
    return rows


def start_import(client, collection: str, path: str) -> int:
    return client._guard("bulk import", bulk_insert, client.client, collection, [path], client.conn.timeout_s)


def wait_for_counts(client, expected: dict[str, int], timeout_s: float = 300.0) -> dict[str, int]:
    """Imported segments count once the server has sealed and loaded them: the collections'
    counts, once they reach ``expected`` or the time is up."""
    deadline = time.monotonic() + timeout_s
    counts = {c: client.count(c) for c in expected}
    while counts != expected and time.monotonic() < deadline:
        time.sleep(1.0)
        counts = {c: client.count(c) for c in expected}
    return counts


class Imports:
    """One load's import tasks: each collection's tables gathered in memory until they reach
    ``max_bytes``, then staged under ``prefix/<collection>/`` as one file and handed to the server (which
    imports while more is gathered)."""

    def __init__(self, client, stage, prefix: str, collections: list[str], max_bytes: int | None = None):
        self.client, self.stage, self.prefix = client, stage, prefix
        self.max_bytes = IMPORT_FILE_BYTES if max_bytes is None else max_bytes
        self.base = stage_base(stage)
        self.held: dict[str, list[pa.Table]] = {c: [] for c in collections}
        self.expected = {c: 0 for c in collections}
        self.tasks: list[int] = []
        self.keys: list[str] = []

    def add(self, collection: str, table: pa.Table) -> None:
        held = self.held[collection]
        held.append(table)
        if sum(t.nbytes for t in held) >= self.max_bytes:
            self.send(collection)

    def send(self, collection: str) -> None:
        """Stage what is held of ``collection`` as one file and start its import."""
        held, self.held[collection] = self.held[collection], []
        if not held:
            return
        table = pa.concat_tables(held)
        key = f"{self.prefix}/{collection}/part-{len(self.keys):05d}.parquet"
        stage_table(self.stage, key, table)
        self.keys.append(key)
        self.tasks.append(start_import(self.client, collection, self.base + key))
        self.expected[collection] += table.num_rows

    def wait(self, timeout_s: float = 600.0) -> tuple[int, dict[str, int]]:
        """Send what is held, wait for every task; returns rows imported and the collections'
        counts, checked against the rows sent."""
        for c in self.held:
            self.send(c)
        imported = bulk_wait(self.client, self.tasks, timeout_s)
        counts = wait_for_counts(self.client, self.expected, timeout_s)
        if counts != self.expected:
            raise MilvusError(f"bulk import: Milvus holds {counts}, the staged files {self.expected}")
        return imported, counts


def import_staged(client, stage, collections: list[str], timeout_s: float = 600.0) -> dict[str, int]:
    """Import every file staged under ``<collection>/`` in ``stage``, gathered into few files
    under ``GATHERED/``; returns rows imported per collection, checked against the files' own
    row counts."""
    imports = Imports(client, stage, GATHERED, collections)
    try:
        for c in collections:
            for obj in stage.list(c):
                if obj.key.endswith(".parquet"):
                    imports.add(c, pq.read_table(io.BytesIO(stage.read_bytes(obj.key))))
            imports.send(c)  # one collection's rows held at a time
        return imports.wait(timeout_s)[1]
    finally:
        for key in imports.keys:
            stage.delete(key)


class FirstLoad:
    """An ingest's first load by bulk import (``--milvus-bulk-dir``), from its start to its import."""

    def __init__(self, client, bulk_dir: str, s3_options=None):
        self.client = client
        self.bulk_dir = bulk_dir
        self.s3_options = s3_options
        self.stage = None

    @staticmethod
    def refuse_pending(ledger) -> None:
        """A run without the option, while a first load is staged and not imported: Milvus lacks
        the rows of committed units."""
        pending = ledger.load_record(PENDING_RECORD)
        if pending:
            raise MilvusError(f"a first load into Milvus by bulk import is unfinished (staged in {pending['dir']}): "
                              f"run again with --milvus-bulk-dir {pending['dir']}, or load Milvus from the shards "
                              f"with pagemill milvus-load --recreate")

    def start(self, ledger, collections: list[str]) -> str:
        """Refused unless the collections are empty (import inserts; it cannot replace rows), or
        this continues a first load that an earlier run staged and never imported. Files staged
        by units that never committed (a run that died) are removed."""
        from operators.io.uris import open_store

        held = {c: n for c in collections if (n := self.client.count(c))}
        if held:
            raise MilvusError(f"--milvus-bulk-dir is for a first load, but {', '.join(f'{c} ({n} rows)' for c, n in held.items())} "
                              f"already hold rows (import inserts and cannot replace rows): drop the option to upsert, "
                              f"or rebuild with pagemill milvus-load --recreate --bulk-dir")
        self.stage = open_store(self.bulk_dir, s3_options=self.s3_options)
        for obj in self.stage.list(GATHERED):  # an earlier run's, that died before its import
            self.stage.delete(obj.key)
        committed = ledger.state.unit_index
        for c in collections:
            for obj in self.stage.list(c):
                if obj.key.rsplit("/", 1)[-1].split("-", 1)[0] not in committed:
                    self.stage.delete(obj.key)
        ledger.save_record(PENDING_RECORD, {"dir": self.bulk_dir, "pending": True})
        self.ledger = ledger
        return (f"first load by bulk import: writers stage Parquet files in {self.bulk_dir}, imported at the end of "
                f"the run")

    def finish(self, collections: list[str]) -> dict[str, int]:
        imported = import_staged(self.client, self.stage, collections)
        self.ledger.save_record(PENDING_RECORD, None)  # imported: Milvus holds every committed unit's rows
        for c in collections:
            for obj in self.stage.list(c):
                self.stage.delete(obj.key)
        return imported
