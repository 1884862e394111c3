"""What each layout of a run holds: vectors per page and raw vector bytes per page."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from operators.layouts.fde import FdeParams
from operators.layouts.layout import Layout


def layout_vector_counts(table: pa.Table, layout: Layout) -> np.ndarray:
    return layout.vector_counts(table)


def bytes_per_vector(layout: Layout, dim: int, fde: FdeParams) -> float:
    """Raw stored bytes of one vector (int8 includes its float32 scale)."""
    return layout.bytes_per_vector(dim, fde.dim)


class LayoutStats:
    """Vectors per page of each layout over the run's commits, from the writers' counts."""

    def __init__(self, layouts: list[Layout], dim: int, fde: FdeParams, sv_dim: int | None = None):
        self.layouts = layouts
        self.dim = dim
        self.fde = fde
        self.sv_dim = sv_dim  # the single-vector model's, for sv-vlm-* layouts
        self.pages = 0
        self.vectors: dict[str, int] = {lay.name: 0 for lay in layouts}

    def add_counts(self, info: dict, parts: list[dict]) -> None:
        for p in parts:
            n = sum(p["docs"].values())
            self.pages += n
            for lay in self.layouts:
                # a single-vector layout has one per page; the writers count a multi-vector's
                self.vectors[lay.name] += p.get("vectors", {}).get(lay.column, 0) if lay.is_multi_vector else n

    def summary(self) -> dict:
        out = {}
        for lay in self.layouts:
            bpv = lay.bytes_per_vector(self.dim, self.fde.dim, self.sv_dim)
            mean = self.vectors[lay.name] / self.pages if self.pages else 0.0
            out[lay.name] = {
                "column": lay.column,
                "params": lay.params(self.fde),
                "pages": self.pages,
                "vectors_per_page": round(mean, 3),
                "bytes_per_vector": bpv,
                "raw_bytes_per_page": round(mean * bpv, 1),
            }
        return out
