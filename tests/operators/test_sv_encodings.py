"""Single-vector layouts in every encoding: names, Arrow types, bytes, decoding, scoring, plan."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from operators.layouts.encodings import ENCODINGS
from operators.layouts.layout import DotScorer, LayoutError, LayoutScorer, normalise, parse_layout
from pipelines.analysis.capacity import format_plan, plan


def test_names_parse_for_every_encoding():
    for pooling in ("mean", "fde"):
        for enc in ENCODINGS:
            lay = parse_layout(f"sv-{pooling}-{enc}")
            assert (lay.kind, lay.pooling, lay.encoding) == ("sv", pooling, enc)
            assert not lay.is_multi_vector
    assert parse_layout("sv-mean-fp32") == parse_layout("sv-mean")  # the float32 base column
    assert parse_layout("sv-mean-int8").column == "sv_mean_int8"
    assert parse_layout("sv-mean-int8").scale_column == "sv_mean_int8_scale"
    assert parse_layout("sv-mean-bf16").scale_column is None
    with pytest.raises(LayoutError, match="sv-mean or sv-fde .each optionally -fp32/-fp16/-bf16/-int8/-bin"):
        parse_layout("sv-mean-int4")
    # the single-vector model's page vector: its encodings are layouts, its float32 self a column
    lay = parse_layout("sv-vlm-bf16")
    assert (lay.pooling, lay.encoding, lay.column) == ("vlm", "bf16", "sv_vlm_bf16")
    assert lay.dim(128, 1024, sv_dim=2048) == 2048 and lay.bytes_per_vector(128, 1024, 2048) == 4096
    assert lay.arrow_fields(128, 1024, 2048)[0].type == pa.binary(4096)
    for name in ("sv-vlm", "sv-vlm-fp32"):
        with pytest.raises(LayoutError, match="the sv-vlm column, written whenever --model has ,sv:MODEL"):
            parse_layout(name)


def test_arrow_types_and_bytes_per_vector():
    d = 2048
    fields = {n: parse_layout(n).arrow_fields(d, 1024) for n in ("sv-mean-fp16", "sv-mean-bf16", "sv-mean-int8",
                                                                  "sv-mean-bin", "sv-mean", "sv-fde-bf16")}
    assert fields["sv-mean-fp16"][0].type == pa.list_(pa.float16(), d)
    assert fields["sv-mean-bf16"][0].type == pa.binary(2 * d)
    assert [f.type for f in fields["sv-mean-int8"]] == [pa.binary(d), pa.float32()]
    assert fields["sv-mean-bin"][0].type == pa.binary(d // 8)
    assert fields["sv-mean"][0].type == pa.list_(pa.float32(), d)
    assert fields["sv-fde-bf16"][0].type == pa.binary(2 * 1024)
    bpv = {n: parse_layout(n).bytes_per_vector(d) for n in ("sv-mean", "sv-mean-bf16", "sv-mean-int8", "sv-mean-bin")}
    assert bpv == {"sv-mean": 8192, "sv-mean-bf16": 4096, "sv-mean-int8": 2048 + 4, "sv-mean-bin": 256}
    assert parse_layout("sv-mean-bf16").parquet_bytes_per_page(1, d) == pytest.approx(4101)


def _table(name: str, x: np.ndarray, nulls: list[bool] | None = None) -> pa.Table:
    lay = parse_layout(name)
    values, scale = lay.codec.encode(x)
    cols = {lay.column: lay.codec.fixed_array(values, x.shape[1], nulls)}
    if lay.scale_column:
        cols[lay.scale_column] = pa.array(scale, pa.float32())
    return pa.table(cols)


def test_round_trip_and_scores_against_float():
    rng = np.random.default_rng(7)
    docs = normalise(rng.standard_normal((200, 64)).astype(np.float32))
    query = rng.standard_normal((5, 64)).astype(np.float32)
    ref = LayoutScorer(parse_layout("sv-mean"), _table("sv-mean", docs), 64).scores(query)
    for name, tol in (("sv-mean-fp16", 1e-3), ("sv-mean-bf16", 1e-2), ("sv-mean-int8", 1e-2)):
        lay = parse_layout(name)
        table = _table(name, docs)
        back = lay.read_page_vectors(table)
        assert back.dtype == np.float32 and back.shape == docs.shape
        assert np.abs(back - docs).max() < tol, name
        scorer = LayoutScorer(lay, table, 64)
        assert isinstance(scorer, DotScorer)
        s = scorer.scores(query)
        assert np.abs(s - ref).max() < tol * 10, name
        top = set(np.argsort(-ref)[:10])
        assert len(top & set(np.argsort(-s)[:10])) >= (10 if name == "sv-mean-fp16" else 8), name
    # binary decodes to +-1: the float query against the signs
    lay = parse_layout("sv-mean-bin")
    back = lay.read_page_vectors(_table("sv-mean-bin", docs))
    np.testing.assert_array_equal(back, np.where(docs > 0, 1.0, -1.0))


def test_null_rows_keep_their_place():
    x = np.arange(24, dtype=np.float32).reshape(3, 8) / 24
    for name in ("sv-mean-fp16", "sv-mean-bf16", "sv-mean-bin"):
        t = _table(name, x, [False, True, False])
        assert t[parse_layout(name).column].null_count == 1
        assert parse_layout(name).read_page_vectors(t).shape == (3, 8)


def test_plan_honours_dtype_for_a_single_vector_model():
    p = plan(vectors_per_page=1, dim=2048, dtype="bf16", pages=1_000_000)
    row = p["layouts"][0]
    assert row["layout"] == "sv-vlm-bf16" and row["raw_bytes_per_page"] == 4096
    assert row["parquet_bytes_total"] / 1e6 == pytest.approx(4101, rel=0.001)  # ~4.1 KB a page
    assert "(computed in bf16, stored bf16)" in format_plan(p)
    # without --dtype: as pagemill stores it unless asked, float32
    assert plan(vectors_per_page=1, dim=2048, pages=1_000_000)["layouts"][0]["raw_bytes_per_page"] == 8192
    p = plan(vectors_per_page=1, dim=2048, dtype="int8", pages=1_000_000, layouts=["sv-mean-bin", "sv-fde-int8"])
    assert {r["layout"]: r["raw_bytes_per_page"] for r in p["layouts"]} == {"sv-vlm-int8": 2052, "sv-mean-bin": 256}
    assert "(computed in bf16, stored int8)" in format_plan(p)
    p = plan(preset="qwen3-vl-embedding-2b", dtype="fp16", pages=1000)
    assert p["layouts"][0]["layout"] == "sv-vlm-fp16" and p["layouts"][0]["raw_bytes_per_page"] == 4096
    lance = plan(vectors_per_page=1, dim=2048, dtype="bf16", pages=1000, store="lancedb", index="NONE")
    assert lance["layouts"][0]["raw_bytes_per_page"] == 4096
