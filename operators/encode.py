"""The CPU stage between the models and the writers: every storage layout of every page.

From the multi-vector model's float32 output (``mv_raw``) it builds the ``OUT/pages`` columns:
the archived full multi-vector ``mv`` (float16), ``sv_mean``, and each extra layout (pooling,
encodings, FDE; operators/layouts/layout.py). Layouts are computed from the archived float16 vectors
(``mv-fp32`` alone from the float32 output), so that a layout added later from the archive
(``pagemill relayout``) is bit for bit what an ingest would have written.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from operators import schema as S
from operators.counters import Stage
from operators.layouts import encodings as E
from operators.layouts.fde import FdeParams
from operators.layouts.layout import (
    DEFAULT_LAYOUTS,
    Layout,
    LayoutEncoder,
    extra_layouts,
    fields_for,
    parse_layouts,
)
from operators.models import PageEmbedding


def text_field(dim: int) -> pa.Field:
    return pa.field(S.SV_TEXT, pa.list_(pa.float32(), dim))


def text_chunks_field(dim: int) -> pa.Field:
    """One vector per chunk of the page's text (operators/models/text_layer.py ``chunk_text``), in order."""
    return pa.field(S.TEXT_CHUNKS, pa.list_(pa.list_(pa.float32(), dim)))


def text_fields(dim: int) -> list[pa.Field]:
    return [text_field(dim), text_chunks_field(dim)]


def sv_vlm_field(dim: int) -> pa.Field:
    return pa.field(S.SV_VLM, pa.list_(pa.float32(), dim))


def layout_fields(layouts: list[Layout], dim: int, fde: FdeParams, sv_dim: int | None = None) -> list[pa.Field]:
    return [f for lay in extra_layouts(layouts) for f in fields_for(lay, dim, fde.dim, sv_dim)]


def sv_vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The single-vector model's (rows, D) vectors from its ``sv_vlm`` column (zeros where a row
    has none)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = col.type.list_size
    flat = col.values.to_numpy(zero_copy_only=False)[col.offset * dim:(col.offset + len(col)) * dim]
    out = np.array(flat, np.float32).reshape(len(col), dim)
    if col.null_count:
        out[col.is_null().to_numpy(zero_copy_only=False)] = 0.0
    return out


def flow_schema(dim: int, extra: list[pa.Field] | tuple = ()) -> pa.Schema:
    """Encoded pages on their way to the writers: page columns plus the unit bookkeeping."""
    fields = [pa.field(S.UNIT_ID, pa.string()), pa.field(S.KIND, pa.string()), pa.field(S.UNIT_INFO, pa.string()),
              pa.field(S.STAGE_STATS, pa.string()), pa.field(S.PAGE_IMAGE, pa.large_binary())]
    fields += [f.with_nullable(True) for f in S.pages_schema(dim, extra)]
    return pa.schema(fields)


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised mean of a set of vectors (the page-level single vector)."""
    m = vectors.astype(np.float32).mean(axis=0)
    n = float(np.linalg.norm(m))
    return m / n if n > 0 else m


def multivector_array(vectors: list[np.ndarray], dim: int, nulls: list[bool] | None = None) -> pa.Array:
    """Ragged (n_i, dim) arrays as ``list<fixed_size_list<float16, dim>>`` without Python loops."""
    return E.ragged_array(vectors, "fp16", dim, nulls)


def page_embeddings(batch: pa.Table, dim: int) -> tuple[list[PageEmbedding | None], list[np.ndarray | None]]:
    """Each row's embedding as the archive holds it (float16-rounded, as float32), and the model's
    float32 output; None for rows without one."""
    kinds = batch[S.KIND].to_pylist()
    offsets, flat = E.read_ragged(batch[S.MV_RAW], "fp32", dim)
    meta = {c: batch[c].to_pylist() for c in (S.PATCH_OFFSET, S.N_PATCHES, S.PATCH_GRID_H, S.PATCH_GRID_W)}
    archived, raw = [], []
    rounded = flat.astype(np.float16).astype(np.float32)
    for i, kind in enumerate(kinds):
        if kind != S.KIND_PAGE:
            archived.append(None)
            raw.append(None)
            continue
        a, b = int(offsets[i]), int(offsets[i + 1])
        archived.append(PageEmbedding(rounded[a:b], meta[S.PATCH_OFFSET][i], meta[S.N_PATCHES][i],
                                      meta[S.PATCH_GRID_H][i], meta[S.PATCH_GRID_W][i]))
        raw.append(flat[a:b])
    return archived, raw


class EncodePages(Stage):
    """Embedded pages in, the pages' storage columns out (the flow schema)."""

    name = "encode"
    extra_counters = {"layouts_s": 0.0, "layout_cpu_s": {}}

    def __init__(self, dim: int, layouts: list[Layout] | None = None, fde: FdeParams | None = None,
                 text_dim: int | None = None, sv_dim: int | None = None):
        self.dim = dim
        self.layouts = layouts or parse_layouts(list(DEFAULT_LAYOUTS))
        self.fde = fde or FdeParams()
        self.text_dim = text_dim
        self.sv_dim = sv_dim
        self._encoder = None
        super().__init__()

    def extra_fields(self) -> list[pa.Field]:
        extra = layout_fields(self.layouts, self.dim, self.fde, self.sv_dim)
        if self.text_dim:
            extra.extend(text_fields(self.text_dim))
        if self.sv_dim:
            extra.append(sv_vlm_field(self.sv_dim))
        return extra

    def schema(self) -> pa.Schema:
        return flow_schema(self.dim, self.extra_fields())

    def setup(self) -> None:
        if self._encoder is None:
            from threadpoolctl import ThreadpoolController

            self._encoder = LayoutEncoder(self.layouts, self.dim, self.fde)
            self._blas = ThreadpoolController()

    def _one_blas_thread(self):
        """BLAS on one thread while pooling: a page's products are small (740 x 128), and
        OpenBLAS' threads cost twice the CPU there and are slower too (benchmarks/page_cpu.py)."""
        return self._blas.limit(limits=1, user_api="blas")

    def __call__(self, batch: pa.Table) -> pa.Table:
        S.require_columns("EncodePages", batch, [S.UNIT_ID, S.KIND, S.UNIT_INFO, S.MV_RAW, S.PATCH_OFFSET])
        self.setup()
        self.counters.start()  # wall time counts from the first batch: set-up is start-up, not work
        t0 = self.counters.mark()
        out = self.encode(batch)
        self.stats["pages"] += sum(1 for k in batch[S.KIND].to_pylist() if k == S.KIND_PAGE)
        self.stats["batches"] += 1
        self.counters.busy(t0)
        return S.stamp(out, self.name, self.counters.snapshot())

    def encode(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        c0 = time.process_time()
        archived, raw = page_embeddings(batch, self.dim)
        nulls = [e is None for e in archived]
        empty = np.zeros((0, self.dim), np.float32)
        sv = np.stack([mean_vector(e.patch_vectors()) if e is not None else np.zeros(self.dim, np.float32)
                       for e in archived]) if n else np.zeros((0, self.dim), np.float32)
        cols = {c: batch[c] for c in (S.UNIT_ID, S.KIND, S.UNIT_INFO, S.STAGE_STATS, S.PAGE_ID, S.DOC_ID, S.SOURCE_URI, S.DOC_VERSION,
                                      S.PAGE_NUMBER, S.WIDTH, S.HEIGHT, S.MODEL, S.N_VECTORS, S.PATCH_OFFSET,
                                      S.N_PATCHES, S.PATCH_GRID_H, S.PATCH_GRID_W, S.TEXT)}
        for c, t in ((S.TEXT_SOURCE, pa.string()), (S.PAGE_HASH, pa.int64()), (S.PAGE_IMAGE, pa.large_binary())):
            cols[c] = batch[c] if c in batch.column_names else pa.nulls(n, t)
        cols[S.IMAGE_URI] = pa.nulls(n, pa.string())  # the writer's, where it writes the image
        c1 = time.process_time()
        cols[S.MV] = multivector_array([e.vectors if e is not None else empty for e in archived], self.dim, nulls)
        cols[S.SV_MEAN] = pa.FixedSizeListArray.from_arrays(pa.array(sv.ravel(), pa.float32()), self.dim,
                                                            mask=pa.array(nulls, pa.bool_()))
        c2 = time.process_time()
        t = time.perf_counter()
        with self._one_blas_thread():
            sv = sv_vectors(batch[S.SV_VLM]) if self.sv_dim and S.SV_VLM in batch.column_names else None
            cols.update(self._encoder.columns(archived, raw, sv))
        self.stats["layouts_s"] += time.perf_counter() - t
        # CPU by layout, for capacity planning: reading the model's vectors and the mean count
        # as sv-mean's (the base), the full column as mv's, each extra layout as its own.
        spent = self.stats["layout_cpu_s"]
        for name, sec in (("sv-mean", c1 - c0), ("mv", c2 - c1), *self._encoder.cpu_s.items()):
            spent[name] = spent.get(name, 0.0) + sec
        self._encoder.cpu_s.clear()
        if self.text_dim:
            for f in text_fields(self.text_dim):
                cols[f.name] = batch[f.name] if f.name in batch.column_names else pa.nulls(n, f.type)
        if self.sv_dim:
            cols[S.SV_VLM] = batch[S.SV_VLM] if S.SV_VLM in batch.column_names else pa.nulls(n, sv_vlm_field(self.sv_dim).type)
        return pa.table(cols, schema=self.schema())
