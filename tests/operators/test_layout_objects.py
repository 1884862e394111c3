"""Each pooling and each encoding as an object, on small hand-made inputs: what it stores, how many
vectors, how many bytes; and every layout's Arrow fields and costs agree with what the writer writes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from operators.encode import multivector_array
from operators.layouts.encodings import ENCODINGS, PARQUET_PAGE_BYTES, encoding
from operators.layouts.fde import FdeParams
from operators.layouts.layout import DotScorer, LayoutEncoder, LayoutScorer, MaxSimScorer, parse_layout
from operators.layouts.pooling import (
    POOLINGS,
    FdeVector,
    HierarchicalPooling,
    MeanVector,
    RowColPooling,
    Unpooled,
)
from operators.models import PageEmbedding
from pipelines.analysis.costs import layout_cost, pooled_vectors

# A hand-made block of 2 vectors in 8 dims: exact in every encoding but int8's rounding.
X = np.array([[1.0, -0.5, 0.25, 0.0, -1.0, 0.125, 0.75, -0.25],
              [-0.5, 0.5, -0.5, 0.5, 2.0, -2.0, 0.0, 1.0]], np.float32)

# (bytes per vector of 8 dims, stored width, Arrow type of one vector)
EXPECTED = {
    "fp32": (32.0, 8, pa.list_(pa.float32(), 8)),
    "fp16": (16.0, 8, pa.list_(pa.float16(), 8)),
    "bf16": (16.0, 8, pa.binary(16)),
    "int8": (8.0 + 4, 8, pa.binary(8)),
    "bin": (1.0, 1, pa.binary(1)),
}


def test_the_registry_holds_every_encoding_by_name():
    assert list(ENCODINGS) == ["fp32", "fp16", "bf16", "int8", "bin"]
    assert all(encoding(name).name == name for name in ENCODINGS)
    with pytest.raises(ValueError, match="unknown encoding 'int4'"):
        encoding("int4")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_encoding_round_trip_bytes_and_arrow_type(name):
    codec = ENCODINGS[name]
    bpv, width, arrow = EXPECTED[name]
    values, scale = codec.encode(X)
    assert values.shape == (2, width) and values.dtype == codec.numpy_dtype
    assert (scale is not None) == bool(codec.scale_bytes)
    assert codec.bytes_per_vector(8) == bpv == values[0].nbytes + codec.scale_bytes
    assert codec.arrow_type(8) == arrow
    decoded = codec.decode(values, 8, scale)
    assert decoded.dtype == np.float32
    if name == "bin":
        np.testing.assert_array_equal(decoded, np.where(X > 0, 1.0, -1.0))
    elif name == "int8":
        np.testing.assert_allclose(decoded, X, atol=scale.max() / 2)
    else:
        np.testing.assert_array_equal(decoded, X)  # these values are exact in every float form
    # through Arrow: two pages, the second empty, then a null row
    empty, _ = codec.encode(np.zeros((0, 8), np.float32))
    column = codec.ragged_array([values, empty, empty], 8, [False, False, True])
    assert column.type == pa.list_(arrow) and column.null_count == 1
    offsets, stored = codec.read_ragged(pa.chunked_array([column]), 8)
    assert offsets.tolist() == [0, 2, 2, 2]
    np.testing.assert_array_equal(stored, values)


def test_int8_codes_and_scales_on_the_hand_made_block():
    codes, scale = ENCODINGS["int8"].encode(X)
    np.testing.assert_allclose(scale, [1 / 127, 2 / 127])
    assert codes[0].tolist() == [127, -64, 32, 0, -127, 16, 95, -32]  # round half to even: 63.5 -> 64


def test_milvus_vector_types_by_preference():
    from operators.stores.milvus.schema import vtype_for
    from pipelines.analysis.costs import milvus_index, milvus_vector_bytes

    have_all = ("float", "float16", "binary", "int8")
    assert {n: vtype_for(n, have_all) for n in ENCODINGS} == {
        "fp32": "float", "fp16": "float16", "bf16": "float16", "int8": "int8", "bin": "binary"}
    assert {n: vtype_for(n, ("float", "float16")) for n in ENCODINGS} == {
        "fp32": "float", "fp16": "float16", "bf16": "float16", "int8": "float16", "bin": "float"}
    assert {vtype_for(n, ("float",)) for n in ENCODINGS} == {"float"}  # Milvus Lite
    binary, int8 = parse_layout("mv-bin"), parse_layout("mv-int8")
    assert milvus_index(binary, "HNSW") == "BIN_IVF_FLAT" and milvus_index(binary, "flat") == "BIN_FLAT"
    assert milvus_index(int8, "HNSW") == "HNSW"
    assert milvus_vector_bytes(binary, 128, lite=False) == 16 and milvus_vector_bytes(binary, 128, lite=True) == 512


def _page(grid_h=2, grid_w=3, special=2, dim=8, seed=0):
    """2 special vectors, then a 2x3 grid of patches, then nothing."""
    v = np.random.default_rng(seed).standard_normal((special + grid_h * grid_w, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return PageEmbedding(v, special, grid_h * grid_w, grid_h, grid_w)


@pytest.mark.parametrize("pooling,factor,count", [(Unpooled, 1, 8), (HierarchicalPooling, 2, 5),
                                                  (HierarchicalPooling, 3, 4), (HierarchicalPooling, 7, 3),
                                                  (RowColPooling, 1, 7)])
def test_pooling_vector_count_on_a_tiny_grid(pooling, factor, count):
    page = _page()
    pooler = POOLINGS[pooling.name](factor)
    assert type(pooler) is pooling and pooler.is_multi_vector
    out = pooler.vectors(page, None, ENCODINGS["fp16"])
    assert out.shape == (count, 8)
    np.testing.assert_array_equal(out[:2], page.vectors[:2])  # the special vectors, kept first
    assert pooler.vectors_per_page(8, special=2, grid=(2, 3)) == count


def test_unpooled_keeps_the_float32_output_only_for_an_encoding_that_keeps_it():
    page, raw = _page(), np.full((8, 8), 0.3, np.float32)
    assert Unpooled().vectors(page, raw, ENCODINGS["fp32"]) is raw
    assert Unpooled().vectors(page, raw, ENCODINGS["int8"]) is page.vectors


def test_single_vector_poolings():
    page, fde = _page(), FdeParams(reps=2, bits=2, proj_dim=4)
    mean, fdev = MeanVector(), FdeVector()
    assert not mean.is_multi_vector and mean.vectors_per_page(8, 2) == fdev.vectors_per_page(8, 2) == 1.0
    assert (mean.dim(8, fde.dim), fdev.dim(8, fde.dim)) == (8, 32)
    doc = mean.document_encoder(8, fde)(page)
    expected = page.vectors[2:].mean(axis=0)
    np.testing.assert_allclose(doc, expected / np.linalg.norm(expected), rtol=1e-6)
    np.testing.assert_allclose(mean.query_encoder(8, fde)(X), (X.sum(axis=0)) / np.linalg.norm(X.sum(axis=0)),
                               rtol=1e-6)
    assert fdev.document_encoder(8, fde)(page).shape == (32,)
    assert fdev.params(fde) == {"fde_reps": 2, "fde_bits": 2, "fde_proj_dim": 4, "fde_seed": 42, "dim": 32}
    assert mean.params(fde) == {}


ALL_LAYOUTS = [f"mv{pool}{enc}" for pool in ("", "-pool2", "-rowcol") for enc in ("", *(f"-{e}" for e in ENCODINGS))]
ALL_LAYOUTS += ["sv-mean", "sv-fde"]


@pytest.mark.parametrize("name", ALL_LAYOUTS)
def test_every_layout_agrees_with_what_the_writer_writes(name):
    dim, fde = 8, FdeParams(reps=2, bits=2, proj_dim=4)
    lay = parse_layout(name)
    assert lay.column == name.replace("-", "_") and lay.pooler.name == lay.pooling and lay.codec.name == lay.encoding
    assert lay.pooler.kind == lay.kind and lay.is_multi_vector == (lay.kind == "mv")
    pages = [_page(seed=1), _page(grid_h=3, grid_w=3, seed=2)]
    if name == "mv":  # the base columns, written by EncodePages
        cols = {lay.column: multivector_array([p.vectors for p in pages], dim)}
    elif name == "sv-mean":  # (here through its pooling)
        encode = lay.pooler.document_encoder(dim, fde)
        rows = np.stack([encode(p) for p in pages])
        cols = {lay.column: pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel(), pa.float32()), dim)}
    else:
        cols = LayoutEncoder([lay], dim, fde).columns(pages)
    fields = lay.arrow_fields(dim, fde.dim)
    assert [(f.name, f.type) for f in fields] == [(c, a.type) for c, a in cols.items()]
    assert lay.scale_column == (fields[1].name if len(fields) > 1 else None)
    table = pa.table(cols)
    counts = lay.vector_counts(table)
    assert counts.tolist() == [lay.vectors_per_page(len(p.vectors), 2, (p.grid_h, p.grid_w)) for p in pages]
    # raw bytes per vector: the stored buffers, scales included
    column = cols[lay.column]
    stored = (lay.codec.read_ragged(column, dim)[1] if lay.is_multi_vector else column.flatten().to_numpy()).nbytes
    if lay.scale_column:
        stored += cols[lay.scale_column].flatten().to_numpy().nbytes
    assert lay.bytes_per_vector(dim, fde.dim) * counts.sum() == stored
    cost = layout_cost(lay, float(counts[0]), dim, fde=fde)
    assert cost.bytes_per_vector == lay.bytes_per_vector(dim, fde.dim)
    assert cost.dim == lay.dim(dim, fde.dim) == (fde.dim if name == "sv-fde" else dim)
    assert cost.raw_bytes_per_page == counts[0] * cost.bytes_per_vector
    assert cost.parquet_bytes_per_page >= cost.raw_bytes_per_page + PARQUET_PAGE_BYTES
    assert cost.milvus_rows_per_page == (counts[0] if lay.is_multi_vector else 1.0)
    assert pooled_vectors(8, lay, 2, (2, 3)) == counts[0]
    scorer = LayoutScorer(lay, table, dim, fde)
    assert isinstance(scorer, MaxSimScorer if lay.is_multi_vector else DotScorer)
    assert scorer.scores(X).shape == (2,)


def test_params_are_the_recorded_ones():
    fde = FdeParams(reps=4)
    assert parse_layout("mv-pool3-int8").params(fde) == {"kind": "mv", "pooling": "pool", "factor": 3, "encoding": "int8"}
    assert parse_layout("sv-mean").params(fde) == {"kind": "sv", "pooling": "mean", "factor": 1, "encoding": "fp32"}
    assert parse_layout("sv-fde").params(fde) == {"kind": "sv", "pooling": "fde", "factor": 1, "encoding": "fp32",
                                                  "fde_reps": 4, "fde_bits": 4, "fde_proj_dim": 16, "fde_seed": 42,
                                                  "dim": 1024}
    assert parse_layout("sv-fde").params() == {"kind": "sv", "pooling": "fde", "factor": 1, "encoding": "fp32"}
