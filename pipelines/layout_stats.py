"""What each layout of a run holds: vectors per page and raw vector bytes per page."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from operators import encodings as E
from operators.fde import FdeParams
from operators.layouts import Layout


def layout_vector_counts(table: pa.Table, layout: Layout) -> np.ndarray:
    if layout.kind == "sv":
        return np.ones(table.num_rows, np.int64)
    return pa.compute.list_value_length(table[layout.column]).to_numpy(zero_copy_only=False).astype(np.int64)


def bytes_per_vector(layout: Layout, dim: int, fde: FdeParams) -> float:
    """Raw stored bytes of one vector (int8 includes its float32 scale)."""
    if layout.kind == "sv":
        return (fde.dim if layout.pooling == "fde" else dim) * 4.0
    return dim * E.BYTES_PER_DIM[layout.encoding] + E.SCALE_BYTES.get(layout.encoding, 0)


class LayoutStats:
    def __init__(self, layouts: list[Layout], dim: int, fde: FdeParams):
        self.layouts = layouts
        self.dim = dim
        self.fde = fde
        self.counts: dict[str, list[np.ndarray]] = {lay.name: [] for lay in layouts}

    def add(self, pages: pa.Table) -> None:
        if pages.num_rows:
            for lay in self.layouts:
                self.counts[lay.name].append(layout_vector_counts(pages, lay))

    def summary(self) -> dict:
        out = {}
        for lay in self.layouts:
            counts = np.concatenate(self.counts[lay.name]) if self.counts[lay.name] else np.zeros(0)
            bpv = bytes_per_vector(lay, self.dim, self.fde)
            mean = float(counts.mean()) if len(counts) else 0.0
            out[lay.name] = {
                "column": lay.column,
                "params": lay.params(self.fde),
                "pages": int(len(counts)),
                "vectors_per_page": round(mean, 3),
                "bytes_per_vector": bpv,
                "raw_bytes_per_page": round(mean * bpv, 1),
            }
        return out
