"""Fault injection for crash tests, one scheme for every process (driver, Ray workers).

``PAGEMILL_KILL_AT=<point>:<n>`` SIGKILLs the process the n-th time it reaches ``point``. With
``PAGEMILL_KILL_ONCE=<file>`` as well, only the first process across the cluster that gets there
dies (it creates the file exclusively), so that a restarted worker goes on. Points: ``listing``
(per listed document), ``rendered``, ``embedded`` (per unit, local executor), ``embed_call`` (per
batch in an embedding worker), ``milvus_upsert`` (per upsert request), ``lance_fragments`` (per
table a LanceDB writer wrote), ``shard_written`` and ``vectors_written`` (per write batch: its
shard, then its vector-store writes), ``rewritten``, ``store_committed`` (the store's commit of a
unit, before its ledger record) and ``committed`` (per unit commit). Unset (always, outside tests)
it costs one dict lookup.

A crash in native code is the other fault: ``PAGEMILL_RENDER_SEGFAULT=<marker>`` makes the
renderer's child die of SIGSEGV on a document whose bytes contain the marker (``<marker>:once``:
only the first time, across processes), as a PDF that crashes MuPDF would.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}
_SPEC = os.environ.get("PAGEMILL_KILL_AT")  # read once: set before a test starts the process


def armed(point: str) -> bool:
    """Whether a fault is set for ``point`` in this process (hot loops check once)."""
    return bool(_SPEC) and _SPEC.partition(":")[0] == point


def checkpoint(point: str) -> None:
    spec = _SPEC
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != int(n or 1):
        return
    once = os.environ.get("PAGEMILL_KILL_ONCE")
    if once:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def segfault_if_marked(data: bytes) -> None:
    """The renderer's child, before parsing a document: SIGSEGV if ``PAGEMILL_RENDER_SEGFAULT``
    names a marker that the document's bytes contain."""
    spec = os.environ.get("PAGEMILL_RENDER_SEGFAULT")
    if not spec:
        return
    marker, _, mode = spec.partition(":")
    if marker.encode() in data:
        if mode == "once":
            flag = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pagemill-segv-{marker}")
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGSEGV)
