"""Which Lance tables and columns hold which layouts, and the rows a unit's pages become.

One logical index (``--collection NAME``, a generation's ``base``) is two tables:

- ``NAME_pages``: one row per page: the page's keys (``page_id``, ``doc_id``, ``doc_version``,
  ``source_uri``, ``page_number``, ``corpus``) and a column per layout, as the Parquet archive has
  it: a multi-vector layout (``mv``, ``mv-pool3``, ...) as ``list<fixed_size_list<float16|float32,
  D>>``, which LanceDB searches with MaxSim (cosine: pagemill's vectors are unit length, so it is
  their inner product); a single vector (``sv-mean``, ``sv-fde``, ``sv-vlm``) as
  ``fixed_size_list<float32, D>``, searched by inner product (an encoded one, ``sv-mean-int8``,
  ``sv-fde-bf16``, ..., decoded from the archive's encoding: binary as +-1). Lance holds float16, float32 and
  float64 multi-vectors only: a bf16, int8 or binary multi-vector layout stays in the archive, and
  ingest says so in one line (it is not widened behind the user's back).
- ``NAME_text``: the text layer, one row per chunk of a page's text (``chunk_id`` =
  ``<page_id>:<index>``): the chunk's dense vector and its text as the BM25 analyzer reads it
  (``operators.models.text_layer.bm25_text``: runs of unspaced scripts as bigrams), under Lance's
  own full-text index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from operators import schema as S
from operators.layouts.layout import SV_VLM_LAYOUT, TEXT_LAYOUT, Layout
from operators.stores.door import IndexShape

PAGES, TEXT = "pages", "text"
CORPUS = "corpus"
CHUNK_ID, CHUNK_TEXT, VECTOR = "chunk_id", "text", "vector"
MULTI_ENCODINGS = {"fp16": pa.float16(), "fp32": pa.float32()}
KEY_FIELDS = (pa.field(S.PAGE_ID, pa.string(), nullable=False), pa.field(S.DOC_ID, pa.string()),
              pa.field(S.DOC_VERSION, pa.string()), pa.field(S.SOURCE_URI, pa.string()),
              pa.field(S.PAGE_NUMBER, pa.int32()), pa.field(CORPUS, pa.string()),
              pa.field(S.IMAGE_URI, pa.string()))  # the page image (--page-images), null without


@dataclass(frozen=True)
class Column:
    layout: str
    name: str  # the column, as in OUT/pages
    multi: bool  # a multi-vector (MaxSim), else one vector a page (inner product)
    dim: int
    field: pa.Field
    decode: Layout | None = None  # an encoded single vector: its float32 values decoded from the archive's


@dataclass(frozen=True)
class Plan:
    """The tables of an index and what each layout is in them."""

    base: str
    columns: tuple[Column, ...]
    text_dim: int | None
    notes: tuple[str, ...] = ()

    def table(self, name: str) -> str:
        return f"{self.base}_{name}"

    @property
    def tables(self) -> list[str]:
        return [self.table(PAGES)] + ([self.table(TEXT)] if self.text_dim else [])

    def by_layout(self, layout: str) -> Column | None:
        return next((c for c in self.columns if c.layout == layout), None)

    def pages_schema(self) -> pa.Schema:
        return pa.schema([*KEY_FIELDS, *(c.field for c in self.columns)])

    def text_schema(self) -> pa.Schema:
        return pa.schema([pa.field(CHUNK_ID, pa.string(), nullable=False), pa.field(S.PAGE_ID, pa.string()),
                          pa.field(S.DOC_ID, pa.string()), pa.field(S.DOC_VERSION, pa.string()),
                          pa.field(CORPUS, pa.string()), pa.field(CHUNK_TEXT, pa.string()),
                          pa.field(VECTOR, pa.list_(pa.float32(), self.text_dim))])

    def layouts(self) -> list[str]:
        return [c.layout for c in self.columns] + ([TEXT_LAYOUT, "text-bm25"] if self.text_dim else [])


def plan_tables(shape: IndexShape) -> Plan:
    """The tables and columns of ``shape``; notes for what Lance cannot hold."""
    columns, notes = [], []
    for lay in shape.layouts:
        if lay.is_multi_vector:
            scalar = MULTI_ENCODINGS.get(lay.encoding)
            if scalar is None:
                notes.append(f"{lay.name}: LanceDB holds float16/32 multi-vectors only (no {lay.encoding}): it stays "
                             f"in the Parquet archive, not in LanceDB (use an fp16 layout there)")
                continue
            columns.append(Column(lay.name, lay.column, True, shape.dim,
                                  pa.field(lay.column, pa.list_(pa.list_(scalar, shape.dim)))))
        else:
            d = lay.dim(shape.dim, shape.fde_dim, dict(shape.page_vectors).get(SV_VLM_LAYOUT))
            columns.append(Column(lay.name, lay.column, False, d, pa.field(lay.column, pa.list_(pa.float32(), d)),
                                  lay if lay.encoding != "fp32" else None))
    for name, d in shape.page_vectors:
        column = name.replace("-", "_")
        columns.append(Column(name, column, False, int(d), pa.field(column, pa.list_(pa.float32(), int(d)))))
    text_dim = shape.text_dim
    if text_dim and not shape.text_chunks:
        notes.append("the archive's text layer predates chunks (a vector per page): LanceDB gets no text table; "
                     "ingest into a new OUT for chunks and BM25")
        text_dim = None
    return Plan(shape.base, tuple(columns), text_dim, tuple(notes))


def page_rows(pages: pa.Table, plan: Plan, corpus: str, schema: pa.Schema) -> pa.Table:
    """The pages table's rows for these pages (the ``OUT/pages`` columns, as they are)."""
    n = pages.num_rows
    cols = {f.name: pages[f.name] if f.name in pages.column_names else pa.nulls(n, f.type)
            for f in KEY_FIELDS if f.name != CORPUS and f.name in schema.names}
    cols[CORPUS] = pa.array([corpus] * n, pa.string())
    for c in plan.columns:
        if c.name in pages.column_names and c.name in schema.names:
            cols[c.name] = pages[c.name] if c.decode is None else decoded(pages, c)
    missing = [f for f in schema if f.name not in cols]
    for f in missing:
        cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols).select(schema.names).cast(schema)


def decoded(pages: pa.Table, c: Column) -> pa.Array:
    """An encoded single vector's column as float32 vectors (null where the page has none)."""
    valid = pages[c.name].is_valid().to_numpy(zero_copy_only=False)
    flat = c.decode.read_page_vectors(pages).ravel()
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), c.dim, mask=pa.array(~valid))


def chunk_rows(pages: pa.Table, plan: Plan, corpus: str) -> pa.Table | None:
    """The text table's rows: each page's chunks (``chunk_text`` of its text) with their vectors
    from ``text_chunks`` and the text BM25 reads."""
    from operators.models.text_layer import bm25_text, chunk_text

    if not plan.text_dim or S.TEXT_CHUNKS not in pages.column_names:
        return None
    ids, docs, versions = (pages[c].to_pylist() for c in (S.PAGE_ID, S.DOC_ID, S.DOC_VERSION))
    texts, vectors = pages[S.TEXT].to_pylist(), pages[S.TEXT_CHUNKS]
    rows = {CHUNK_ID: [], S.PAGE_ID: [], S.DOC_ID: [], S.DOC_VERSION: [], CHUNK_TEXT: []}
    blocks = []
    for i, text in enumerate(texts):
        if not vectors[i].is_valid:
            continue
        block = np.asarray(vectors[i].values.flatten().to_numpy(zero_copy_only=False), np.float32)
        block = block.reshape(-1, plan.text_dim)
        chunks = chunk_text(text) or [""]
        for j, c in enumerate(chunks[:len(block)]):
            rows[CHUNK_ID].append(f"{ids[i]}:{j}")
            rows[S.PAGE_ID].append(ids[i])
            rows[S.DOC_ID].append(docs[i])
            rows[S.DOC_VERSION].append(versions[i])
            rows[CHUNK_TEXT].append(bm25_text(c))
        blocks.append(block[:len(chunks)])
    if not rows[CHUNK_ID]:
        return None
    flat = np.concatenate(blocks).astype(np.float32)
    rows[CORPUS] = [corpus] * len(rows[CHUNK_ID])
    rows[VECTOR] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), pa.float32()), plan.text_dim)
    schema = plan.text_schema()
    return pa.table({f.name: rows[f.name] for f in schema}, schema=schema)


def multi_vectors(column, dim: int) -> list[np.ndarray]:
    """A multi-vector column's values, one float32 (n, dim) array per row."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy()
    flat = np.asarray(arr.flatten().flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    base = offsets[0]
    return [flat[a - base:b - base] for a, b in zip(offsets[:-1], offsets[1:])]


__all__ = ["CHUNK_ID", "CHUNK_TEXT", "CORPUS", "PAGES", "SV_VLM_LAYOUT", "TEXT", "VECTOR", "Column", "Plan",
           "chunk_rows", "multi_vectors", "page_rows", "plan_tables"]
