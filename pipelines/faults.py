"""Fault injection for crash tests: ``PAGEMILL_KILL_AT=<point>:<n>`` SIGKILLs this process the
n-th time it reaches ``point``. Points: ``shard_written``, ``milvus_written``, ``committed``.
Unset (always, outside tests) it costs one dict lookup."""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def checkpoint(point: str) -> None:
    spec = os.environ.get("PAGEMILL_KILL_AT")
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)
