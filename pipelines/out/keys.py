"""Every key of an output root (``OUT``), declared once.

::

    OUT/pages/<unit>-<part>.parquet       committed page shards (the archive; ``~<job>`` rewrites)
    OUT/pages/_manifest.json              the active index's committed shards, for readers
    OUT/quarantine/<unit>-<part>.parquet  what could not be indexed, with reasons
    OUT/images/<unit>-<part>/<page>.webp  page images (--page-images), a folder per part, committed with it
    OUT/_ledger/units/*.json              one record per committed unit (the commit point)
    OUT/_ledger/snapshots/<ns>/           the records folded into columns
    OUT/_ledger/g<N>/...                  the ledger of generation N (a --reindex beside the active one)
    OUT/_ledger/<store>_*.json            what a vector store asks the ledger to remember
    OUT/_index.json                       the index identity
    OUT/_runs/<run>.json, <run>.log       run summaries and logs; _runs/<run>/plan/ a run's plan file
    OUT/_fidelity/<model>.json            the latest fidelity measurement
    OUT/_lock.json                        the running job's lease
"""

import uuid
from datetime import datetime, timezone

from operators.stores.parquet import IMAGES_PREFIX, PAGES_PREFIX, QUARANTINE_PREFIX

LEDGER = "_ledger"
INDEX_KEY = "_index.json"
LOCK_KEY = "_lock.json"
RUNS_PREFIX = "_runs"
FIDELITY_PREFIX = "_fidelity"
MANIFEST_KEY = f"{PAGES_PREFIX}/_manifest.json"


def ledger_prefix(generation: int = 1) -> str:
    """Where a generation's ledger lives: ``_ledger`` for the first index of an OUT, and
    ``_ledger/g<N>`` for the one a ``--reindex`` builds beside it."""
    return LEDGER if generation <= 1 else f"{LEDGER}/g{generation}"


def new_run_id() -> str:
    """``20261203T120029Z-4576cc``: sorts by start time, unique per run."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_summary_key(run_id: str) -> str:
    return f"{RUNS_PREFIX}/{run_id}.json"


def run_log_key(run_id: str) -> str:
    return f"{RUNS_PREFIX}/{run_id}.log"


def plan_prefix(run_id: str) -> str:
    return f"{RUNS_PREFIX}/{run_id}/plan"


def is_archive_file(key: str) -> bool:
    """A page or quarantine shard (not a manifest, not a temporary file)."""
    return key.startswith((PAGES_PREFIX + "/", QUARANTINE_PREFIX + "/")) and not key.rsplit("/", 1)[-1].startswith("_")


__all__ = ["FIDELITY_PREFIX", "INDEX_KEY", "LEDGER", "IMAGES_PREFIX", "LOCK_KEY", "MANIFEST_KEY", "PAGES_PREFIX", "QUARANTINE_PREFIX",
           "RUNS_PREFIX", "is_archive_file", "ledger_prefix", "new_run_id", "plan_prefix", "run_log_key", "run_summary_key"]
