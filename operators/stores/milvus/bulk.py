"""Milvus' bulk import: rows staged as Parquet files (in a collection's schema) where the server
reads them, then one import task per file, waited for and checked against the files' row counts.

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


def import_staged(client, stage, collections: list[str], timeout_s: float = 600.0) -> dict[str, int]:
    """Import every file staged under ``<collection>/`` in ``stage`` (one task per file), wait,
    and return rows imported per collection, checked against the files' own row counts."""
    base = stage_base(stage)
    tasks, expected = [], {c: 0 for c in collections}
    for c in collections:
        for obj in stage.list(c):
            if not obj.key.endswith(".parquet"):
                continue
            rows = pq.ParquetFile(io.BytesIO(stage.read_bytes(obj.key))).metadata.num_rows
            tasks.append(start_import(client, c, base + obj.key))
            expected[c] += rows
    bulk_wait(client, tasks, timeout_s)
    counts = wait_for_counts(client, expected, timeout_s)
    if counts != expected:
        raise MilvusError(f"bulk import: Milvus holds {counts}, the staged files {expected}")
    return counts


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
