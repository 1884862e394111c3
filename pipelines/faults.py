"""Fault injection for crash tests: ``PAGEMILL_KILL_AT=<point>:<n>`` SIGKILLs this process the
n-th time it reaches ``point``. Points: ``listing`` (per listed document), ``rendered`` and
``embedded`` (per unit, local executor), ``milvus_upsert`` (per upsert batch), ``shard_written``,
``milvus_written``, ``committed`` (per unit commit). Unset (always, outside tests) it costs one
dict lookup."""

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


if os.environ.get("PAGEMILL_KILL_AT"):  # let the Milvus sink (an operator, no pipelines import) reach us
    from operators import milvus_sink as _milvus_sink

    _milvus_sink._fault_hook = checkpoint
