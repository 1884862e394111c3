"""Encoded single vectors end to end: Parquet columns in their encodings, Milvus Lite and LanceDB
holding them decoded, search's stage 1 on one of them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import milvus_counts, read_pages

from operators.layouts.layout import parse_layout
from pipelines.cli import main

LAYOUTS = "sv-mean-int8,sv-mean-bf16,sv-fde-bin"


def test_encoded_single_vectors_into_milvus_lite(small_corpus, tmp_path, capsys):
    out = tmp_path / "sv-enc"
    summary = tmp_path / "sv-enc.json"
    assert main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--quiet",
                 "--layouts", LAYOUTS, "--fde-reps", "2", "--summary", str(summary)]) == 0
    pages = read_pages(out)
    dim = pages.schema.field("sv_mean").type.list_size
    assert pages.schema.field("sv_mean_int8").type == pa.binary(dim)
    assert pages.schema.field("sv_mean_int8_scale").type == pa.float32()
    assert pages.schema.field("sv_mean_bf16").type == pa.binary(2 * dim)
    assert pages.schema.field("sv_fde_bin").type.byte_width > 0
    # the encoded columns decode back to the float32 mean (sv_mean)
    ref = np.array(pages["sv_mean"].to_pylist(), np.float32)
    np.testing.assert_allclose(parse_layout("sv-mean-bf16").read_page_vectors(pages), ref, atol=1e-2)
    np.testing.assert_allclose(parse_layout("sv-mean-int8").read_page_vectors(pages), ref, atol=1e-2)
    s = json.loads(summary.read_text())
    for name in LAYOUTS.split(","):
        assert s["milvus"]["fields"][name]["vector_type"] == "float", name
    assert any(n.startswith(f"{LAYOUTS.replace(',', ', ')}: stored as FLOAT_VECTOR, decoded") for n in s["milvus"]["notes"])
    counts = milvus_counts(out, names=("pages",))
    assert counts["pages"] == pages.num_rows
    assert main(["search", "revenue", "--out", str(out), "--stage1", "sv-mean-int8", "--rerank", "none",
                 "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    assert main(["fidelity", str(out), "--queries", "4", "--json"]) == 0
    fidelity = json.loads(capsys.readouterr().out)["layouts"]
    assert fidelity["sv-mean-bf16"]["recall_at_10"] == fidelity["sv-mean"]["recall_at_10"]
    assert main(["report", str(out), "--json"]) == 0
    report = {r["layout"]: r for r in json.loads(capsys.readouterr().out)["layouts"]}
    for name in LAYOUTS.split(","):
        pq_bytes = report[name]["parquet_bytes_per_page"]
        assert pq_bytes["predicted"] == pytest.approx(pq_bytes["measured"], rel=0.1), name


def test_encoded_single_vectors_into_lancedb(small_corpus, tmp_path, capsys):
    out = tmp_path / "sv-lance"
    assert main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--quiet",
                 "--vectors", "lancedb:", "--layouts", "sv-mean-int8,sv-mean-bf16"]) == 0
    pages = read_pages(out)
    assert pages.schema.field("sv_mean_bf16").type == pa.binary(2 * pages.schema.field("sv_mean").type.list_size)
    import lancedb

    table = lancedb.connect(str(out / "lancedb")).open_table("pagemill_pages").to_arrow()
    assert table.num_rows == pages.num_rows
    assert pa.types.is_fixed_size_list(table.schema.field("sv_mean_int8").type)
    assert main(["search", "revenue", "--out", str(out), "--stage1", "sv-mean-bf16", "--rerank", "none",
                 "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
