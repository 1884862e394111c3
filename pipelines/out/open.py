"""An existing output root, opened to read (search, report, fidelity, status, quarantine, the
rebuild command): nothing is created, and a path that is not one fails with one line."""

from __future__ import annotations

import os

from operators.errors import UsageError
from operators.io.store import OutputStore
from operators.io.uris import open_store
from pipelines.out.keys import LEDGER, PAGES_PREFIX


def open_output(uri: str, s3_options=None) -> OutputStore:
    store = open_store(uri, s3_options, create=False)
    local = store.local_path("")
    if local is not None and not os.path.isdir(local):
        raise UsageError(f"{uri}: no such folder (the --out of a pagemill ingest)")
    if not store.list(LEDGER) and not store.list(PAGES_PREFIX):
        raise UsageError(f"{uri} is not the output of a pagemill ingest (no _ledger/ or pages/ in it): check the path")
    return store
