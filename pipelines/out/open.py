"""An existing output root, opened to read (search, report, fidelity, status, quarantine, the
rebuild command): nothing is created, and a path that is not one fails with one line."""

from __future__ import annotations

import os

from operators.errors import UsageError
from operators.io.store import OutputStore
from operators.io.uris import open_store
from pipelines.out.keys import LEDGER, LOCK_KEY, PAGES_PREFIX


def open_output(uri: str, s3_options=None, first_run: bool = False) -> OutputStore:
    """``first_run``: an OUT whose first run is under way (nothing committed yet) is opened too
    (``status`` says so); for the other commands it is one line."""
    store = open_store(uri, s3_options, create=False)
    local = store.local_path("")
    if local is not None and not os.path.isdir(local):
        raise UsageError(f"{uri}: no such folder (the --out of a pagemill ingest)")
    if not store.list(LEDGER) and not store.list(PAGES_PREFIX):
        holder = first_run_holder(store)
        if holder is not None:
            if first_run:
                return store
            raise UsageError(f"{uri}: {holder}; nothing is committed yet: try again once it has committed a unit "
                             f"(pagemill status {uri} follows it)")
        raise UsageError(f"{uri} is not the output of a pagemill ingest (no _ledger/ or pages/ in it): check the path")
    return store


def first_run_holder(store: OutputStore) -> str | None:
    """``a first run is under way (run R on host H, pid P, lease until T)`` when OUT holds a live
    run's lock and no commit yet; else None."""
    import json
    import time

    if not store.exists(LOCK_KEY) or store.list(LEDGER):
        return None
    try:
        lock = json.loads(store.read_bytes(LOCK_KEY))
    except (ValueError, OSError):
        return None
    if lock.get("expires_at", 0) < time.time():
        return None
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(lock["expires_at"]))
    return (f"a first run is under way (run {lock.get('run_id')} on host {lock.get('host')}, pid {lock.get('pid')}, "
            f"lease until {until})")
