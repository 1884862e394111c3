"""Embed rendered pages with a model adapter; page pixels are dropped as soon as they are embedded."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa

from operators import schema as S
from operators.batching import OOM, embed_with_split, token_batches
from operators.fde import FdeParams
from operators.layouts import DEFAULT_LAYOUTS, Layout, LayoutEncoder, extra_layouts, fields_for, parse_layouts
from operators.models import ModelSpec, adapter_for


def _budget_side(max_pixels: int) -> tuple[int, int]:
    side = int(max_pixels ** 0.5)
    return side, side


def text_field(dim: int) -> pa.Field:
    return pa.field(S.SV_TEXT, pa.list_(pa.float32(), dim))


def sv_vlm_field(dim: int) -> pa.Field:
    return pa.field(S.SV_VLM, pa.list_(pa.float32(), dim))


def layout_fields(layouts: list[Layout], dim: int, fde: FdeParams) -> list[pa.Field]:
    return [f for lay in extra_layouts(layouts) for f in fields_for(lay, dim, fde.dim)]


def flow_schema(dim: int, extra: list[pa.Field] | tuple = ()) -> pa.Schema:
    """Embedded pages on their way to the sinks: page columns plus the unit bookkeeping."""
    fields = [pa.field(S.UNIT_ID, pa.string()), pa.field(S.KIND, pa.string()), pa.field(S.UNIT_INFO, pa.string())]
    fields += [f.with_nullable(True) for f in S.pages_schema(dim, extra)]
    return pa.schema(fields)


def mean_vector(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised mean of a set of vectors (the page-level single vector)."""
    m = vectors.astype(np.float32).mean(axis=0)
    n = float(np.linalg.norm(m))
    return m / n if n > 0 else m


def multivector_array(vectors: list[np.ndarray], dim: int) -> pa.Array:
    """Ragged (n_i, dim) arrays as ``list<fixed_size_list<float16, dim>>`` without Python loops."""
    lengths = np.array([len(v) for v in vectors], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate(vectors).astype(np.float16).ravel() if len(vectors) else np.empty(0, np.float16)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float16()), dim)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def fixed_vector_array(vectors: np.ndarray, dim: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel(), pa.float32()), dim)


class EmbedPages:
    """Rendered pages in, embedded pages out; unit marker rows pass through untouched.

    Pages are embedded in sub-batches of ``batch_size``, grouped by similar pixel count so that
    a small page is not padded to a large one's length.
    """

    def __init__(self, spec: ModelSpec, batch_size: int = 8, layouts: list[Layout] | None = None,
                 fde: FdeParams | None = None, max_batch_tokens: int | None = None, text_model: str | None = None,
                 sv_model: str | None = None):
        self.spec = spec
        self.text_model = text_model
        self.text = None
        self.sv_model = sv_model  # sv:<...>: a second, single-vector image model on the same pages
        self.sv = None
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max_batch_tokens  # default: batch_size pages at the full pixel budget
        self.layouts = layouts or parse_layouts(list(DEFAULT_LAYOUTS))
        self.fde = fde or FdeParams()
        self.adapter = None
        self._encoder = None
        self.stats = {"pages": 0, "batches": 0, "busy_s": 0.0, "forward_s": 0.0, "layouts_s": 0.0}
        self._started: float | None = None

    def setup(self) -> None:
        if self.adapter is None:
            self.adapter = adapter_for(self.spec)
            self.adapter.load()
            self._started = time.perf_counter()
            self._encoder = LayoutEncoder(self.layouts, self.adapter.dim, self.fde)
            if self.text_model:
                from operators.text_embed import TextEmbedder

                self.text = TextEmbedder(self.text_model, device=self.spec.device)
                self.text.load()
            if self.sv_model:
                from operators.sv_models import sv_embedder_for

                self.sv = sv_embedder_for(self.sv_model, self.spec)
                self.sv.load()

    @property
    def dim(self) -> int:
        return adapter_for(self.spec).dim if self.adapter is None else self.adapter.dim

    def __call__(self, batch: pa.Table) -> pa.Table:
        S.require_columns("EmbedPages", batch, [S.UNIT_ID, S.KIND, S.PIXELS, S.WIDTH, S.HEIGHT, S.UNIT_INFO])
        self.setup()
        t0 = time.perf_counter()
        dim = self.adapter.dim
        kinds = batch[S.KIND].to_pylist()
        page_rows = [i for i, k in enumerate(kinds) if k == S.KIND_PAGE]
        widths = batch[S.WIDTH].to_pylist()
        heights = batch[S.HEIGHT].to_pylist()
        pixels = batch[S.PIXELS]
        results = {}
        tokens = [self.adapter.visual_tokens(widths[i], heights[i]) for i in page_rows]
        budget = self.max_batch_tokens or self.batch_size * self.adapter.visual_tokens(
            *_budget_side(self.adapter.pixel_budget().max_pixels))
        for batch_idx in token_batches(tokens, self.batch_size, budget):
            rows = [page_rows[j] for j in batch_idx]
            images = [
                np.frombuffer(pixels[i].as_buffer(), np.uint8).reshape(heights[i], widths[i], 3) for i in rows
            ]
            for i, emb in zip(rows, embed_with_split(self.adapter.embed_images, images, self.stats)):
                results[i] = emb
            self.stats["batches"] += 1
            self.stats["max_batch_pages"] = max(self.stats.get("max_batch_pages", 0), len(rows))
        sv_vectors = self._sv_vectors(batch, page_rows, results) if self.sv is not None else None
        self.stats["pages"] += len(page_rows)
        self.stats["forward_s"] = self.adapter.forward_s + (self.sv.forward_s if self.sv is not None else 0.0)
        out = self._assemble(batch, kinds, results, dim, sv_vectors)
        self.stats["busy_s"] += time.perf_counter() - t0
        return out

    def _stamp_markers(self, infos: list, kinds: list) -> pa.Array:
        """Marker rows carry the embedder's effective settings back to the driver (the only
        channel from an actor in a streaming dataset)."""
        wall = time.perf_counter() - self._started if self._started else 0.0
        stats = {"worker": f"{os.uname().nodename}:{os.getpid()}", **self.stats, "wall_s": round(wall, 4)}
        # The devices this worker was given (Ray sets CUDA_VISIBLE_DEVICES for GPU actors).
        settings = {**self.adapter.effective_settings(), "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    **(self.text.effective_settings() if self.text else {}),
                    **({"sv_model": self.sv.effective_settings()} if self.sv else {})}
        out = []
        for info, kind in zip(infos, kinds):
            if kind == S.KIND_UNIT and info:
                info = json.dumps({**json.loads(info), "embed_settings": settings, "embed_stats": stats})
            out.append(info)
        return pa.array(out, pa.string())

    def _sv_vectors(self, batch: pa.Table, page_rows: list[int], results: dict) -> dict[int, np.ndarray]:
        """The single-vector model's vector of every page the multi-vector model embedded."""
        widths, heights, pixels = batch[S.WIDTH].to_pylist(), batch[S.HEIGHT].to_pylist(), batch[S.PIXELS]
        rows = [i for i in page_rows if results.get(i) not in (None, OOM)]
        out = {}
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            images = [np.frombuffer(pixels[i].as_buffer(), np.uint8).reshape(heights[i], widths[i], 3) for i in chunk]
            for i, v in zip(chunk, self.sv.embed_images(images)):
                out[i] = v
        return out

    def _assemble(self, batch: pa.Table, kinds: list, results: dict, dim: int,
                  sv_vectors: dict[int, np.ndarray] | None = None) -> pa.Table:
        n = batch.num_rows
        empty = np.zeros((0, dim), np.float32)
        failed = {i for i, r in results.items() if r == OOM}
        kinds = [S.KIND_PAGE_FAILED if i in failed else k for i, k in enumerate(kinds)]
        infos = [json.dumps({"reason": OOM, "detail": "does not fit in device memory even alone"})
                 if i in failed else info for i, info in enumerate(batch[S.UNIT_INFO].to_pylist())]
        embs = [None if i in failed else results.get(i) for i in range(n)]
        page_ids = [
            S.page_id_for(u, p) if k == S.KIND_PAGE else None
            for k, u, p in zip(kinds, batch[S.SOURCE_URI].to_pylist(), batch[S.PAGE_NUMBER].to_pylist())
        ]

        def ints(fn):
            return pa.array([fn(e) if e is not None else None for e in embs], pa.int32())

        mv = multivector_array([e.vectors if e is not None else empty for e in embs], dim)
        mv = pa.ListArray.from_arrays(mv.offsets, mv.values, mask=pa.array([e is None for e in embs]))
        sv = np.stack([mean_vector(e.patch_vectors()) if e is not None else np.zeros(dim, np.float32) for e in embs])
        sv = pa.FixedSizeListArray.from_arrays(
            pa.array(sv.ravel(), pa.float32()), dim, mask=pa.array([e is None for e in embs])
        ) if n else fixed_vector_array(sv.reshape(0, dim), dim)
        cols = {
            S.UNIT_ID: batch[S.UNIT_ID],
            S.KIND: pa.array(kinds, pa.string()),
            S.UNIT_INFO: self._stamp_markers(infos, kinds),
            S.PAGE_ID: pa.array(page_ids, pa.string()),
            S.DOC_ID: batch[S.DOC_ID],
            S.SOURCE_URI: batch[S.SOURCE_URI],
            S.DOC_VERSION: batch[S.DOC_VERSION],
            S.PAGE_NUMBER: batch[S.PAGE_NUMBER],
            S.WIDTH: batch[S.WIDTH],
            S.HEIGHT: batch[S.HEIGHT],
            S.MODEL: pa.array([self.adapter.name if e is not None else None for e in embs], pa.string()),
            S.N_VECTORS: ints(lambda e: len(e.vectors)),
            S.PATCH_OFFSET: ints(lambda e: e.patch_offset),
            S.N_PATCHES: ints(lambda e: e.n_patches),
            S.PATCH_GRID_H: ints(lambda e: e.grid_h),
            S.PATCH_GRID_W: ints(lambda e: e.grid_w),
            S.TEXT: batch[S.TEXT],
            S.MV: mv,
            S.SV_MEAN: sv,
        }
        t0 = time.perf_counter()
        cols.update(self._encoder.columns(embs))  # pooling and encodings, from the float32 vectors
        self.stats["layouts_s"] += time.perf_counter() - t0
        extra = layout_fields(self.layouts, dim, self.fde)
        if self.text is not None:
            cols[S.SV_TEXT] = self._text_vectors(batch[S.TEXT].to_pylist(), embs)
            extra = [*extra, text_field(self.text.dim)]
        if self.sv is not None:
            d = self.sv.dim
            vectors = np.zeros((n, d), np.float32)
            for i, v in (sv_vectors or {}).items():
                vectors[i] = v
            cols[S.SV_VLM] = pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.ravel(), pa.float32()), d, mask=pa.array([i not in (sv_vectors or {}) for i in range(n)]))
            extra = [*extra, sv_vlm_field(d)]
        return pa.table(cols, schema=flow_schema(dim, extra))

    def _text_vectors(self, texts: list, embs: list) -> pa.Array:
        from operators.text_embed import has_text

        rows = [i for i, (t, e) in enumerate(zip(texts, embs)) if e is not None and has_text(t)]
        vectors = np.zeros((len(texts), self.text.dim), np.float32)
        if rows:
            vectors[rows] = self.text.embed_pages([texts[i] for i in rows])
        present = set(rows)
        return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), self.text.dim,
                                                 mask=pa.array([i not in present for i in range(len(texts))]))
