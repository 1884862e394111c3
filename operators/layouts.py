"""Storage layouts: named combinations of pooling and encoding, each a Parquet column.

Names (``--layouts``, comma-separated):

=================  =========================================================================
``mv``             the full multi-vector, float16 (always written: the reference)
``mv-pool{F}``     hierarchical token pooling of the patches by factor F (2, 3, 4, ...)
``mv-rowcol``      one vector per patch row and per patch column (needs the patch grid)
``...-{enc}``      encoding suffix for any multi-vector layout: fp32, fp16, bf16, int8, bin
                   (``mv-int8``, ``mv-pool3-bin``); int8 stores a per-vector scale beside it
``sv-mean``        mean of the patch vectors, L2-normalised, float32 (always written)
``sv-fde``         MUVERA fixed-dimensional encoding of the multi-vector, float32
=================  =========================================================================

Column names replace ``-`` with ``_`` (``mv-pool3-int8`` -> ``mv_pool3_int8``). Every layout has
a scoring function: MaxSim for multi-vector layouts (on decoded vectors; binary decodes to +-1,
the asymmetric float-query x binary-doc score), dot product for single vectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from operators import encodings as E
from operators.fde import FdeEncoder, FdeParams
from operators.pooling import hierarchical_pool, normalise, rowcol_pool

DEFAULT_LAYOUTS = ("mv", "sv-mean")
_MV = re.compile(r"^mv(?:-(pool(\d+)|rowcol))?(?:-(fp32|fp16|bf16|int8|bin))?$")


class LayoutError(ValueError):
    pass


@dataclass(frozen=True)
class Layout:
    name: str
    kind: str  # "mv" | "sv"
    pooling: str | None = None  # None | "pool" | "rowcol" | "mean" | "fde"
    factor: int = 1
    encoding: str = "fp16"

    @property
    def column(self) -> str:
        return self.name.replace("-", "_")

    @property
    def scale_column(self) -> str | None:
        return f"{self.column}_scale" if self.encoding == "int8" and self.kind == "mv" else None

    def params(self, fde: FdeParams | None = None) -> dict:
        p = {"kind": self.kind, "pooling": self.pooling, "factor": self.factor, "encoding": self.encoding}
        if self.pooling == "fde" and fde is not None:
            p.update(fde_reps=fde.reps, fde_bits=fde.bits, fde_proj_dim=fde.proj_dim, fde_seed=fde.seed, dim=fde.dim)
        return p


def parse_layout(name: str) -> Layout:
    name = name.strip()
    if name == "sv-mean":
        return Layout(name, "sv", "mean", encoding="fp32")
    if name == "sv-fde":
        return Layout(name, "sv", "fde", encoding="fp32")
    m = _MV.match(name)
    if not m:
        raise LayoutError(
            f"unknown layout {name!r}: use mv, mv-pool<F>, mv-rowcol (each optionally -fp32/-fp16/-bf16/-int8/-bin), "
            f"sv-mean or sv-fde"
        )
    pooled, factor, enc = m.group(1), m.group(2), m.group(3) or "fp16"
    if factor is not None and int(factor) < 1:
        raise LayoutError(f"layout {name!r}: pool factor must be >= 1")
    pooling = "pool" if factor else ("rowcol" if pooled == "rowcol" else None)
    return Layout(name, "mv", pooling, int(factor or 1), enc)


def parse_layouts(spec: str | list[str] | tuple[str, ...]) -> list[Layout]:
    names = [n for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    layouts = {lay.name: lay for lay in map(parse_layout, [*DEFAULT_LAYOUTS, *names])}
    return list(layouts.values())


def extra_layouts(layouts: list[Layout]) -> list[Layout]:
    """Layouts beyond the two base columns that every run writes."""
    return [lay for lay in layouts if lay.name not in DEFAULT_LAYOUTS]


def fields_for(layout: Layout, dim: int, fde_dim: int) -> list[pa.Field]:
    if layout.kind == "sv":
        return [pa.field(layout.column, pa.list_(pa.float32(), fde_dim if layout.pooling == "fde" else dim))]
    fields = [pa.field(layout.column, pa.list_(E.arrow_type(layout.encoding, dim)))]
    if layout.scale_column:
        fields.append(pa.field(layout.scale_column, pa.list_(pa.float32())))
    return fields


class LayoutEncoder:
    """Computes the extra layout columns for pages from their float32 multi-vectors."""

    def __init__(self, layouts: list[Layout], dim: int, fde: FdeParams | None = None):
        self.layouts = extra_layouts(layouts)
        self.dim = dim
        self.fde_params = fde or FdeParams()
        self._fde = FdeEncoder(dim, self.fde_params) if any(x.pooling == "fde" for x in self.layouts) else None

    def page_vectors(self, layout: Layout, emb, raw: np.ndarray | None = None) -> np.ndarray:
        """The (n, D) float32 vectors of one page in this layout, before encoding. ``emb`` holds
        the archived (float16-rounded) vectors, ``raw`` the model's float32 output: only the
        unpooled ``mv-fp32`` keeps what the archive cannot."""
        v = emb.vectors
        if raw is not None and layout.pooling is None and layout.encoding == "fp32":
            return raw
        if layout.pooling == "pool":
            return hierarchical_pool(v, emb.patch_offset, emb.n_patches, layout.factor)
        if layout.pooling == "rowcol":
            return rowcol_pool(v, emb.patch_offset, emb.n_patches, emb.grid_h, emb.grid_w)
        return v

    def columns(self, embs: list, raws: list | None = None) -> dict[str, pa.Array]:
        """``embs``: one PageEmbedding or None (a non-page row) per row; ``raws``: the model's
        float32 vectors of each row, when there are (else the archived ones serve)."""
        raws = raws if raws is not None else [None] * len(embs)
        nulls = [e is None for e in embs]
        out: dict[str, pa.Array] = {}
        for layout in self.layouts:
            if layout.kind == "sv":  # sv-fde (sv-mean is a base column)
                dim = self._fde.dim
                rows = np.stack([self._fde.encode_document(e.vectors) if e is not None else np.zeros(dim, np.float32)
                                 for e in embs]) if embs else np.zeros((0, dim), np.float32)
                out[layout.column] = pa.FixedSizeListArray.from_arrays(
                    pa.array(rows.ravel(), pa.float32()), dim, mask=pa.array(nulls))
                continue
            blocks, scales = [], []
            empty, empty_scale = E.encode_block(np.zeros((0, self.dim), np.float32), layout.encoding)
            for e, raw in zip(embs, raws):
                if e is None:
                    blocks.append(empty)
                    scales.append(np.zeros(0, np.float32) if empty_scale is None else empty_scale)
                    continue
                values, scale = E.encode_block(self.page_vectors(layout, e, raw), layout.encoding)
                blocks.append(values)
                scales.append(scale)
            out[layout.column] = E.ragged_array(blocks, layout.encoding, self.dim, nulls)
            if layout.scale_column:
                offsets = np.concatenate([[0], np.cumsum([len(s) for s in scales])]).astype(np.int32)
                flat = np.concatenate(scales) if scales else np.zeros(0, np.float32)
                out[layout.scale_column] = pa.ListArray.from_arrays(
                    pa.array(offsets), pa.array(flat, pa.float32()), mask=pa.array(nulls))
        return out


# ---------------------------------------------------------------------------------------------
# Scoring


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Late-interaction score: for every query vector, its best dot product in the document."""
    if len(doc) == 0:
        return float("-inf")
    return float((query @ doc.T).max(axis=1).sum())


class LayoutScorer:
    """Scores queries (float multi-vectors from the model's query path) against one layout's
    stored documents, read back from Parquet."""

    def __init__(self, layout: Layout, table: pa.Table, dim: int, fde: FdeParams | None = None):
        self.layout = layout
        self.dim = dim
        col = table[layout.column]
        if layout.kind == "sv":
            self.matrix = np.asarray(col.combine_chunks().flatten().to_numpy(zero_copy_only=False),
                                     np.float32).reshape(table.num_rows, -1)
            self._fde = FdeEncoder(dim, fde or FdeParams()) if layout.pooling == "fde" else None
            return
        offsets, values = E.read_ragged(col, layout.encoding, dim)
        scale = None
        if layout.scale_column:
            scale = table[layout.scale_column].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        decoded = E.decode_block(values, layout.encoding, dim, scale)
        self.docs = [decoded[offsets[i]:offsets[i + 1]] for i in range(table.num_rows)]

    def scores(self, query: np.ndarray) -> np.ndarray:
        if self.layout.kind == "sv":
            if self._fde is not None:
                q = self._fde.encode_query(query)
            else:
                q = normalise(query.astype(np.float32).sum(axis=0))
            return self.matrix @ q
        return np.array([maxsim(query, d) for d in self.docs])
