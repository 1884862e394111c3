"""Numbers as people read them: bytes and counts.

>>> human_bytes(1_234_567), short_count(250_000)
('1.2 MB', '250k')
"""

from __future__ import annotations


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def short_count(n: int) -> str:
    """1000000 -> "1M"."""
    for div, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= div:
            return f"{n / div:g}{suffix}"
    return str(n)
