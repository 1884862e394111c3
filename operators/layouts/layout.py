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
``sv-...-{enc}``   encoding suffix for a single vector: fp16, bf16, int8, bin (``sv-mean-int8``,
                   ``sv-fde-bf16``): an extra column from the same float32 vector; int8 stores
                   its scale beside it (one float a row); ``sv-mean-fp32`` is ``sv-mean``
``sv-vlm-{enc}``   the single-vector model's page vector (``--model ...,sv:MODEL``, the float32
                   ``sv_vlm`` column) in an encoding: ``sv-vlm-bf16`` is 2 bytes a dimension
=================  =========================================================================

Column names replace ``-`` with ``_`` (``mv-pool3-int8`` -> ``mv_pool3_int8``). Every layout has
a scoring function: MaxSim for multi-vector layouts (on decoded vectors; binary decodes to +-1,
the asymmetric float-query x binary-doc score), dot product for single vectors.

A layout holds its pooling (operators/layouts/pooling.py, ``Layout.pooler``) and its encoding
(operators/layouts/encodings.py, ``Layout.codec``) and answers every question about itself from them:

>>> lay = parse_layout("mv-pool3-int8")
>>> lay.vectors_per_page(1030, special=6), lay.bytes_per_vector(128), lay.scale_column
(347, 132.0, 'mv_pool3_int8_scale')
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.layouts.encodings import ENCODINGS, Encoding, encoding
from operators.layouts.fde import FdeParams
from operators.layouts.pooling import POOLINGS, Pooling, normalise  # noqa: F401  (re-exported: pipelines/index/search.py)

DEFAULT_LAYOUTS = ("mv", "sv-mean")
TEXT_LAYOUT = "text"  # the text layer's dense vectors (a row per chunk)
BM25_LAYOUT = "text-bm25"  # the text layer's lexical side, where a store has BM25
SV_VLM_LAYOUT = "sv-vlm"  # a single-vector model's page vector
_ENC = "|".join(ENCODINGS)
_MV = re.compile(rf"^mv(?:-(pool(\d+)|rowcol))?(?:-({_ENC}))?$")
_SV = re.compile(rf"^sv-(mean|fde|vlm)(?:-({_ENC}))?$")


class LayoutError(ValueError):
    pass


def of_sv_model(name: str) -> bool:
    """A name of the single-vector model's page vector: ``sv-vlm`` itself or an encoding of it."""
    return name == SV_VLM_LAYOUT or name.startswith(SV_VLM_LAYOUT + "-")


@dataclass(frozen=True)
class Layout:
    name: str
    kind: str  # "mv" | "sv"
    pooling: str | None = None  # None | "pool" | "rowcol" | "mean" | "fde"
    factor: int = 1
    encoding: str = "fp16"

    @cached_property
    def pooler(self) -> Pooling:
        return POOLINGS[self.pooling](self.factor)

    @cached_property
    def codec(self) -> Encoding:
        return encoding(self.encoding)

    @property
    def is_multi_vector(self) -> bool:
        return self.pooler.is_multi_vector

    @property
    def column(self) -> str:
        return self.name.replace("-", "_")

    @property
    def scale_column(self) -> str | None:
        return f"{self.column}_scale" if self.codec.scale_bytes else None

    def params(self, fde: FdeParams | None = None) -> dict:
        p = {"kind": self.kind, "pooling": self.pooling, "factor": self.factor, "encoding": self.encoding}
        p.update(self.pooler.params(fde))
        return p

    def dim(self, model_dim: int, fde_dim: int | None = None, sv_dim: int | None = None) -> int:
        """Elements of each stored vector (``sv_dim``: the single-vector model's, for ``sv-vlm-*``)."""
        return self.pooler.dim(model_dim, fde_dim, sv_dim)

    def arrow_fields(self, dim: int, fde_dim: int | None = None, sv_dim: int | None = None) -> list[pa.Field]:
        fields = [pa.field(self.column, self.pooler.arrow_type(self.codec, self.dim(dim, fde_dim, sv_dim)))]
        if self.scale_column:
            fields.append(pa.field(self.scale_column, self.pooler.scale_arrow_type()))
        return fields

    def read_page_vectors(self, table: pa.Table) -> np.ndarray:
        """A single-vector layout's (rows, D) float32 vectors from its column in ``table``, decoded
        (binary to +-1), for scoring and for stores that hold float vectors. D comes from the
        column's type (``fixed_size_list<_, D>`` or ``fixed_size_binary``)."""
        t = table.schema.field(self.column).type
        d = t.list_size if pa.types.is_fixed_size_list(t) else round(t.byte_width / self.codec.bytes_per_dim)
        stored = self.codec.read_fixed(table[self.column], d)
        scale = None
        if self.scale_column:
            scale = pc.fill_null(table[self.scale_column].combine_chunks(), 0.0).to_numpy(zero_copy_only=False)
        return np.asarray(self.codec.decode(stored, d, scale), np.float32).reshape(table.num_rows, d)

    # Costs

    def vectors_per_page(self, full: float, special: float = 0.0, grid: tuple[float, float] | None = None) -> float:
        """Vectors per page from the full multi-vector's count (``special``: non-patch vectors)."""
        return self.pooler.vectors_per_page(full, special, grid)

    def vector_counts(self, table: pa.Table) -> np.ndarray:
        """Vectors of each row of ``table`` in this layout."""
        return self.pooler.vector_counts(table[self.column], table.num_rows)

    def bytes_per_vector(self, dim: int, fde_dim: int | None = None, sv_dim: int | None = None) -> float:
        """Raw stored bytes of one vector (int8 includes its float32 scale)."""
        return self.codec.bytes_per_vector(self.dim(dim, fde_dim, sv_dim))

    def parquet_bytes_per_page(self, vectors_per_page: float, dim: int, fde_dim: int | None = None) -> float:
        return self.pooler.parquet_bytes(self.codec, vectors_per_page, self.dim(dim, fde_dim))

    def scorer(self, table: pa.Table, dim: int, fde: FdeParams | None = None) -> LayoutScorer:
        return LayoutScorer(self, table, dim, fde)


def parse_layout(name: str) -> Layout:
    name = name.strip()
    sv = _SV.match(name)
    if sv:  # float32 unless a suffix asks otherwise; sv-mean-fp32 is sv-mean
        pooling, enc = sv.group(1), sv.group(2) or "fp32"
        if pooling == "vlm" and enc == "fp32":
            raise LayoutError(f"layout {name!r}: the single-vector model's own float32 vectors are the sv-vlm column, "
                              f"written whenever --model has ,sv:MODEL; sv-vlm-<enc> (fp16, bf16, int8, bin) adds an "
                              f"encoded copy")
        return Layout(f"sv-{pooling}" + ("" if enc == "fp32" else f"-{enc}"), "sv", pooling, encoding=enc)
    m = _MV.match(name)
    if not m:
        suffixes = "/".join("-" + e for e in ENCODINGS)
        raise LayoutError(
            f"unknown layout {name!r}: use mv, mv-pool<F>, mv-rowcol (each optionally {suffixes}), "
            f"sv-mean or sv-fde (each optionally {suffixes}), sv-vlm-<enc> (with an sv: model)"
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


def fields_for(layout: Layout, dim: int, fde_dim: int, sv_dim: int | None = None) -> list[pa.Field]:
    return layout.arrow_fields(dim, fde_dim, sv_dim)


class LayoutEncoder:
    """Computes the extra layout columns for pages from their float32 multi-vectors."""

    def __init__(self, layouts: list[Layout], dim: int, fde: FdeParams | None = None):
        self.layouts = extra_layouts(layouts)
        self.dim = dim
        self.fde_params = fde or FdeParams()
        self._page_vector = {lay.name: lay.pooler.document_encoder(dim, self.fde_params)
                             for lay in self.layouts if not lay.is_multi_vector and lay.pooling != "vlm"}
        self.cpu_s: dict[str, float] = {}  # CPU seconds spent on each layout since it was last read

    def page_vectors(self, layout: Layout, emb, raw: np.ndarray | None = None) -> np.ndarray:
        """The (n, D) float32 vectors of one page in this layout, before encoding. ``emb`` holds
        the archived (float16-rounded) vectors, ``raw`` the model's float32 output: only the
        unpooled ``mv-fp32`` keeps what the archive cannot."""
        return layout.pooler.vectors(emb, raw, layout.codec)

    def columns(self, embs: list, raws: list | None = None, sv: np.ndarray | None = None) -> dict[str, pa.Array]:
        """``embs``: one PageEmbedding or None (a non-page row) per row; ``raws``: the model's
        float32 vectors of each row, when there are (else the archived ones serve); ``sv``: the
        single-vector model's (rows, D) vectors, for ``sv-vlm-*`` layouts."""
        raws = raws if raws is not None else [None] * len(embs)
        nulls = [e is None for e in embs]
        out: dict[str, pa.Array] = {}
        for layout in self.layouts:
            c0 = time.process_time()
            if layout.is_multi_vector:
                out.update(self._multi_vector_columns(layout, embs, raws, nulls))
            else:  # sv-fde, encoded single vectors (sv-mean is a base column)
                out.update(self._single_vector_columns(layout, embs, nulls, sv))
            self.cpu_s[layout.name] = self.cpu_s.get(layout.name, 0.0) + time.process_time() - c0
        return out

    def _single_vector_columns(self, layout: Layout, embs: list, nulls: list[bool],
                               sv: np.ndarray | None = None) -> dict[str, pa.Array]:
        if layout.pooling == "vlm":  # the single-vector model's vectors, as they are
            if sv is None:
                raise LayoutError(f"{layout.name}: no single-vector model's vectors (sv_vlm) for these pages")
            rows, dim = np.asarray(sv, np.float32), sv.shape[1]
        else:
            dim = layout.dim(self.dim, self.fde_params.dim)
            encode = self._page_vector[layout.name]
            rows = np.stack([encode(e) if e is not None else np.zeros(dim, np.float32)
                             for e in embs]).astype(np.float32) if embs else np.zeros((0, dim), np.float32)
        values, scale = layout.codec.encode(rows)
        out = {layout.column: layout.codec.fixed_array(values, dim, nulls)}
        if layout.scale_column:
            out[layout.scale_column] = pa.array(scale, pa.float32(), mask=np.asarray(nulls, bool))
        return out

    def _multi_vector_columns(self, layout: Layout, embs: list, raws: list, nulls: list[bool]) -> dict[str, pa.Array]:
        codec = layout.codec
        blocks, scales = [], []
        empty, empty_scale = codec.encode(np.zeros((0, self.dim), np.float32))
        for e, raw in zip(embs, raws):
            if e is None:
                blocks.append(empty)
                scales.append(np.zeros(0, np.float32) if empty_scale is None else empty_scale)
                continue
            values, scale = codec.encode(layout.pooler.vectors(e, raw, codec))
            blocks.append(values)
            scales.append(scale)
        out = {layout.column: codec.ragged_array(blocks, self.dim, nulls)}
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
    stored documents, read back from Parquet. ``LayoutScorer(layout, table, dim)`` is the
    layout's scorer: ``MaxSimScorer`` for a multi-vector layout, ``DotScorer`` for a single vector."""

    def __new__(cls, layout: Layout, table: pa.Table, dim: int, fde: FdeParams | None = None):
        if cls is LayoutScorer:
            cls = MaxSimScorer if layout.is_multi_vector else DotScorer
        return super().__new__(cls)

    def __init__(self, layout: Layout, table: pa.Table, dim: int, fde: FdeParams | None = None):
        self.layout = layout
        self.dim = dim

    def scores(self, query: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MaxSimScorer(LayoutScorer):
    """MaxSim on the decoded vectors (binary decodes to +-1)."""

    def __init__(self, layout: Layout, table: pa.Table, dim: int, fde: FdeParams | None = None):
        super().__init__(layout, table, dim, fde)
        codec = layout.codec
        offsets, values = codec.read_ragged(table[layout.column], dim)
        scale = None
        if layout.scale_column:
            scale = table[layout.scale_column].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        decoded = codec.decode(values, dim, scale)
        self.docs = [decoded[offsets[i]:offsets[i + 1]] for i in range(table.num_rows)]

    def scores(self, query: np.ndarray) -> np.ndarray:
        return np.array([maxsim(query, d) for d in self.docs])


class DotScorer(LayoutScorer):
    """The dot product of the query's vector (the layout's query encoding) with each page's."""

    def __init__(self, layout: Layout, table: pa.Table, dim: int, fde: FdeParams | None = None):
        super().__init__(layout, table, dim, fde)
        # decoded (binary to +-1: the float query against the signs, as for multi-vectors)
        self.matrix = layout.read_page_vectors(table)
        self._query = layout.pooler.query_encoder(dim, fde or FdeParams())

    def scores(self, query: np.ndarray) -> np.ndarray:
        return self.matrix @ self._query(query)
