"""Batches by visual-token budget, and out-of-memory handling by halving.

Pages of very different sizes should not share a padded batch blindly: batches are filled in
order of size until either ``max_pages`` or ``max_tokens`` (the sum of the pages' visual tokens)
is reached. On an out-of-memory error the batch is split in half and each half retried, down to
one page; a page that still does not fit is reported as failed (``oom``) and the rest go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

OOM = "oom"


def token_batches(tokens: Sequence[int], max_pages: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, smallest pages first; a single page above ``max_tokens``
    gets a batch of its own."""
    order = sorted(range(len(tokens)), key=lambda i: tokens[i])
    batches, current, used = [], [], 0
    for i in order:
        if current and (len(current) >= max_pages or used + tokens[i] > max_tokens):
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += tokens[i]
    if current:
        batches.append(current)
    return batches


def is_oom(error: BaseException) -> bool:
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(error, (RuntimeError, MemoryError)) and "out of memory" in str(error).lower()


def _free_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def embed_with_split(embed: Callable[[list], list], items: list, stats: dict | None = None) -> list:
    """``embed(items)`` with OOM recovery: returns one result per item, or ``OOM`` for an item
    that does not fit even alone. Errors other than OOM propagate."""
    try:
        return list(embed(items))
    except Exception as e:
        if not is_oom(e):
            raise
        _free_cache()
        if stats is not None:
            stats["oom_splits"] = stats.get("oom_splits", 0) + 1
        if len(items) == 1:
            return [OOM]
        mid = len(items) // 2
        return embed_with_split(embed, items[:mid], stats) + embed_with_split(embed, items[mid:], stats)
