"""The accelerator stages: each runs one model's forward passes and nothing else.

``EmbedPages`` runs the multi-vector model over rendered pages and hands its float32 output on
(``mv_raw``, with where the image patches sit); pooling, encodings and the Arrow columns of the
layouts are the CPU stage ``EncodePages`` (operators/encode.py), so the accelerator never waits
on a core. ``EmbedSinglePages`` (a single-vector VLM, ``sv:<model>``) and ``EmbedText`` (the text
layer, ``text:<model>``) are stages of their own. Page pixels are dropped by the last stage that
needs them. Unit marker rows pass through, stamped with each stage's counters.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa

from operators import schema as S
from operators.batching import OOM, embed_with_split, token_batches
from operators.counters import Stage
from operators.models import ModelSpec, adapter_for
from operators.models.family import budget_side


def ragged_float32(vectors: list[np.ndarray], dim: int, nulls: list[bool]) -> pa.Array:
    """Ragged (n_i, dim) float32 arrays as ``list<fixed_size_list<float32, dim>>``."""
    lengths = np.array([len(v) for v in vectors], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate(vectors).astype(np.float32).ravel() if vectors else np.empty(0, np.float32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=pa.array(nulls, pa.bool_()))


def fixed_vectors(vectors: np.ndarray, dim: int, nulls: list[bool] | None = None) -> pa.Array:
    """(n, dim) float32 as ``fixed_size_list<float32, dim>``, null where ``nulls``."""
    mask = pa.array(nulls, pa.bool_()) if nulls is not None else None
    return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).ravel(), pa.float32()), dim,
                                             mask=mask)


def page_images(batch: pa.Table, rows: list[int]) -> list[np.ndarray]:
    widths, heights, pixels = batch[S.WIDTH], batch[S.HEIGHT], batch[S.PIXELS]
    return [np.frombuffer(pixels[i].as_buffer(), np.uint8).reshape(heights[i].as_py(), widths[i].as_py(), 3)
            for i in rows]


class EmbedPages(Stage):
    """Rendered pages in, the multi-vector model's raw output out (``mv_raw`` float32 plus the
    patch layout of each page). Pages are embedded in sub-batches of at most ``batch_size`` pages
    and ``max_batch_tokens`` visual tokens, smallest first; a batch that runs out of memory is
    halved down to one page, and a page that still does not fit becomes a ``page_failed`` row
    (reason ``oom``). ``keep_pixels``: a later stage (``EmbedSinglePages``) still needs them."""

    name = "embed"
    accelerator = True
    extra_counters = {"forward_s": 0.0, "deduplicated": 0}

    def __init__(self, spec: ModelSpec, batch_size: int = 8, max_batch_tokens: int | None = None,
                 keep_pixels: bool = False, dedup_pages: bool = False):
        """``dedup_pages`` (``--dedup pages``): pages of a batch with the same perceptual hash and
        size are embedded once, the others given its vectors."""
        self.spec = spec
        self.dedup_pages = dedup_pages
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max_batch_tokens  # default: batch_size pages at the full pixel budget
        self.keep_pixels = keep_pixels
        self.adapter = None
        super().__init__()

    def setup(self) -> None:
        if self.adapter is None:
            self.adapter = adapter_for(self.spec)
            self.adapter.load()
            # The devices this worker was given (Ray sets CUDA_VISIBLE_DEVICES for GPU actors).
            self.counters.labels["visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")

    @property
    def dim(self) -> int:
        return adapter_for(self.spec).dim if self.adapter is None else self.adapter.dim

    def __call__(self, batch: pa.Table) -> pa.Table:
        S.require_columns("EmbedPages", batch, [S.UNIT_ID, S.KIND, S.PAGE_ID, S.PIXELS, S.WIDTH, S.HEIGHT, S.UNIT_INFO])
        self.setup()
        self.counters.start()  # wall time counts from the first batch: set-up is start-up, not work
        t0 = self.counters.mark()
        dim = self.adapter.dim
        kinds = batch[S.KIND].to_pylist()
        page_rows = [i for i, k in enumerate(kinds) if k == S.KIND_PAGE]
        widths, heights = batch[S.WIDTH].to_pylist(), batch[S.HEIGHT].to_pylist()
        page_ids = batch[S.PAGE_ID].to_pylist()
        same = self._near_duplicates(batch, page_rows, widths, heights) if self.dedup_pages else {}
        page_rows = [i for i in page_rows if i not in same]
        tokens = [self.adapter.visual_tokens(widths[i], heights[i]) for i in page_rows]
        budget = self.max_batch_tokens or self.batch_size * self.adapter.visual_tokens(
            *budget_side(self.adapter.pixel_budget().max_pixels))
        results: dict[int, object] = {}

        def embed(items):
            return self.adapter.embed_images([im for im, _ in items], keys=[k for _, k in items])

        for batch_idx in token_batches(tokens, self.batch_size, budget):
            rows = [page_rows[j] for j in batch_idx]
            items = list(zip(page_images(batch, rows), [page_ids[i] for i in rows]))
            for i, emb in zip(rows, embed_with_split(embed, items, self.stats)):
                results[i] = emb
            self.stats["batches"] += 1
            self.stats["max_batch_pages"] = max(self.stats.get("max_batch_pages", 0), len(rows))
        for i, j in same.items():
            results[i] = results.get(j)
        self.stats["deduplicated"] += len(same)
        self.stats["pages"] += len(page_rows) + len(same)
        self.stats["forward_s"] = round(self.adapter.forward_s, 4)
        out = self._assemble(batch, kinds, results, dim)
        self.counters.busy(t0)
        return S.stamp(out, self.name, self.counters.snapshot(), self.adapter.effective_settings())

    @staticmethod
    def _near_duplicates(batch: pa.Table, page_rows: list[int], widths, heights) -> dict[int, int]:
        """Rows whose page has the perceptual hash and size of an earlier page of the batch, each
        to that page's row."""
        if S.PAGE_HASH not in batch.column_names:
            return {}
        hashes = batch[S.PAGE_HASH].to_pylist()
        first: dict[tuple, int] = {}
        same = {}
        for i in page_rows:
            key = (hashes[i], widths[i], heights[i])
            if hashes[i] is not None and key in first:
                same[i] = first[key]
            else:
                first[key] = i
        return same

    def _assemble(self, batch: pa.Table, kinds: list, results: dict, dim: int) -> pa.Table:
        n = batch.num_rows
        failed = {i for i, r in results.items() if r == OOM}
        kinds = [S.KIND_PAGE_FAILED if i in failed else k for i, k in enumerate(kinds)]
        infos = [json.dumps({"reason": OOM, "detail": "does not fit in device memory even alone"})
                 if i in failed else info for i, info in enumerate(batch[S.UNIT_INFO].to_pylist())]
        embs = [None if i in failed else results.get(i) for i in range(n)]
        nulls = [e is None for e in embs]
        empty = np.zeros((0, dim), np.float32)

        def ints(fn):
            return pa.array([fn(e) if e is not None else None for e in embs], pa.int32())

        keep = [c for c in batch.column_names if c not in (S.KIND, S.UNIT_INFO) and (c != S.PIXELS or self.keep_pixels)]
        cols = {c: batch[c] for c in keep}
        cols.update({
            S.KIND: pa.array(kinds, pa.string()),
            S.UNIT_INFO: pa.array(infos, pa.string()),
            S.MODEL: pa.array([self.adapter.name if e is not None else None for e in embs], pa.string()),
            S.N_VECTORS: ints(lambda e: len(e.vectors)),
            S.PATCH_OFFSET: ints(lambda e: e.patch_offset),
            S.N_PATCHES: ints(lambda e: e.n_patches),
            S.PATCH_GRID_H: ints(lambda e: e.grid_h),
            S.PATCH_GRID_W: ints(lambda e: e.grid_w),
            S.MV_RAW: ragged_float32([e.vectors if e is not None else empty for e in embs], dim, nulls),
        })
        return pa.table(cols)


class EmbedSinglePages(Stage):
    """A single-vector VLM (``sv:<model>``) over the same page images: the ``sv_vlm`` column.
    It sees the pixels rendered for the multi-vector model (its processor resizes them) and drops
    them afterwards."""

    name = "embed_sv"
    accelerator = True
    extra_counters = {"forward_s": 0.0}

    def __init__(self, sv_model: str, spec: ModelSpec, batch_size: int = 8):
        self.sv_model = sv_model
        self.spec = spec
        self.batch_size = max(1, batch_size)
        self.model = None
        super().__init__()

    def setup(self) -> None:
        if self.model is None:
            from operators.models.sv import sv_embedder_for

            self.model = sv_embedder_for(self.sv_model, self.spec)
            self.model.load()

    def __call__(self, batch: pa.Table) -> pa.Table:
        S.require_columns("EmbedSinglePages", batch, [S.KIND, S.PIXELS, S.WIDTH, S.HEIGHT])
        self.setup()
        self.counters.start()  # wall time counts from the first batch: set-up is start-up, not work
        t0 = self.counters.mark()
        kinds = batch[S.KIND].to_pylist()
        rows = [i for i, k in enumerate(kinds) if k == S.KIND_PAGE]
        d = self.model.dim
        vectors = np.zeros((batch.num_rows, d), np.float32)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            vectors[chunk] = self.model.embed_images(page_images(batch, chunk))
            self.stats["batches"] += 1
        self.stats["pages"] += len(rows)
        self.stats["forward_s"] = round(self.model.forward_s, 4)
        present = set(rows)
        out = batch.drop_columns([S.PIXELS]).append_column(
            pa.field(S.SV_VLM, pa.list_(pa.float32(), d)),
            fixed_vectors(vectors, d, [i not in present for i in range(batch.num_rows)]))
        self.counters.busy(t0)
        return S.stamp(out, self.name, self.counters.snapshot(), {"sv_model": self.model.effective_settings()})


def text_columns(model, texts: list, rows: list[int]) -> tuple[pa.Array, pa.Array]:
    """``sv_text`` (the page's vector) and ``text_chunks`` (its chunks' vectors) for the pages
    ``rows`` of ``texts``; null for the others (no text layer)."""
    d = model.dim
    n = len(texts)
    vectors = np.zeros((n, d), np.float32)
    chunks: list = [None] * n
    if rows:
        per_page, means = model.embed_chunks([texts[i] for i in rows])
        vectors[rows] = means
        for i, v in zip(rows, per_page):
            chunks[i] = v
    present = set(rows)
    page_col = fixed_vectors(vectors, d, [i not in present for i in range(n)])
    lengths = [len(c) if c is not None else 0 for c in chunks]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([c for c in chunks if c is not None]) if rows else np.zeros((0, d), np.float32)
    chunk_col = pa.ListArray.from_arrays(pa.array(offsets), fixed_vectors(flat, d),
                                         mask=pa.array([i not in present for i in range(n)], pa.bool_()))
    return page_col, chunk_col


class EmbedText(Stage):
    """The text layer (``text:<model>``): each page's own text (from the render stage) as a
    vector per chunk, ``text_chunks``, and their mean, ``sv_text``; pages without text get
    none (null). Needs no pixels."""

    name = "embed_text"
    accelerator = True
    extra_counters = {"forward_s": 0.0}

    def __init__(self, text_model: str, device: str = "auto"):
        self.text_model = text_model
        self.device = device
        self.model = None
        super().__init__()

    def setup(self) -> None:
        if self.model is None:
            from operators.models.text import text_embedder

            self.model = text_embedder(self.text_model, device=self.device)
            self.model.load()

    def __call__(self, batch: pa.Table) -> pa.Table:
        from operators.models.text import has_text

        S.require_columns("EmbedText", batch, [S.KIND, S.TEXT])
        self.setup()
        self.counters.start()  # wall time counts from the first batch: set-up is start-up, not work
        t0 = self.counters.mark()
        kinds, texts = batch[S.KIND].to_pylist(), batch[S.TEXT].to_pylist()
        rows = [i for i, (k, t) in enumerate(zip(kinds, texts)) if k == S.KIND_PAGE and has_text(t)]
        tf = time.perf_counter()
        page_col, chunks_col = text_columns(self.model, texts, rows)
        if rows:
            self.stats["forward_s"] = round(self.stats["forward_s"] + time.perf_counter() - tf, 4)
            self.stats["batches"] += 1
        self.stats["pages"] += len(rows)
        d = self.model.dim
        out = batch.append_column(pa.field(S.SV_TEXT, pa.list_(pa.float32(), d)), page_col)
        out = out.append_column(pa.field(S.TEXT_CHUNKS, chunks_col.type), chunks_col)
        self.counters.busy(t0)
        return S.stamp(out, self.name, self.counters.snapshot(), self.model.effective_settings())
