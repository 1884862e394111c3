"""``OUT/pages/_manifest.json``: the committed page shards of the active index, for readers.

Readers outside pagemill (DuckDB, Polars, pyarrow) read exactly these files: a reader that globs
``pages/`` can see a crashed run's leftovers, or another generation's shards during a reindex.
pyarrow and DuckDB skip files whose names start with ``_`` when they read the folder.
"""

from __future__ import annotations

import json
import time

from operators.io.store import OutputStore
from pipelines.out.identity import active_generation
from pipelines.out.keys import MANIFEST_KEY, PAGES_PREFIX
from pipelines.out.ledger import Ledger

MANIFEST_EVERY_S = 30.0  # past MANIFEST_MAX_FILES live files, the manifest is rewritten at most this often
MANIFEST_MAX_FILES = 50_000


def write_manifest(store: OutputStore, state, generation: int) -> None:
    files = sorted(k for k in state.files if k.startswith(PAGES_PREFIX + "/"))
    store.write_bytes(MANIFEST_KEY, json.dumps({"generation": generation, "records": state.records,
                                                "written_at": time.time(), "files": files}, indent=0).encode())


def live_page_files(store: OutputStore) -> list[str]:
    """The committed page shards of the active index: the manifest (written at every commit), or
    the active generation's ledger where an earlier pagemill wrote no manifest."""
    if store.exists(MANIFEST_KEY):
        return list(json.loads(store.read_bytes(MANIFEST_KEY))["files"])
    ledger = Ledger(store, active_generation(store))
    ledger.load()
    files = sorted(k for k in ledger.state.files if k.startswith(PAGES_PREFIX + "/"))
    return files or sorted(o.key for o in store.list(PAGES_PREFIX) if o.key.endswith(".parquet"))
