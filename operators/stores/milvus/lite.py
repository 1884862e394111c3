"""Milvus Lite's memory: it holds its collections in the memory of the process that opened the
database file (the driver).

benchmarks.memory measures the driver memory it adds per page against the raw bytes of the rows
it holds: 990 KB per page added for 70.9 KB of raw rows (colqwen2-tiny, mv + sv-mean, 251 ->
1,004 pages, driver RSS 542 -> 1,256 MiB; the same runs against a server: 245 -> 249 MiB).
Larger runs may amortise some of it (a 9,010-page run was seen at 0.41 MB a page); the warning
uses what was measured.
"""

from __future__ import annotations

from operators.humanize import human_bytes

LITE_MEMORY_FACTOR = 14.0
ROW_KEY_BYTES = 120  # a row's keys beside its vector (page id, version, patch id), about


def lite_memory_bytes(pages: float, lite_raw_bytes_per_page: float) -> float:
    """The driver memory Milvus Lite needs to hold ``pages`` (raw bytes of its rows per page)."""
    return pages * lite_raw_bytes_per_page * LITE_MEMORY_FACTOR


def lite_memory_warning(pages: float, lite_raw_bytes_per_page: float, memory_bytes: float | None = None) -> str | None:
    """One line when Milvus Lite would not fit in this machine's memory, naming the way out."""
    if memory_bytes is None:
        import psutil

        memory_bytes = psutil.virtual_memory().total
    need = lite_memory_bytes(pages, lite_raw_bytes_per_page)
    if need <= memory_bytes:
        return None
    return (f"Milvus Lite (the default: the index in this process's memory) would hold about {human_bytes(need)} for "
            f"{pages:,.0f} pages, more than this machine's {human_bytes(memory_bytes)} of memory: use LanceDB, embedded "
            f"on disk (--vectors lancedb:; README, \"LanceDB\"), or a Milvus server (--vectors http://HOST:19530)")
