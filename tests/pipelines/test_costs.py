"""The cost model against published figures, and `pagemill plan` without a run."""

from __future__ import annotations

import json

import pytest

from operators.layouts.layout import parse_layout
from pipelines.analysis.capacity import plan
from pipelines.analysis.costs import index_overhead, layout_cost, pooled_vectors
from pipelines.cli import main


def test_colpali_bf16_bytes_per_page_and_per_million():
    c = layout_cost("mv-bf16", 1030, 128)
    assert c.raw_bytes_per_page == 263_680
    assert c.raw_bytes_per_page * 1e6 / 1e9 == pytest.approx(264, abs=0.5)  # ~264 GB per million pages


def test_3b_model_3072_dims_is_about_10_tb_per_million_pages():
    for tokens in (1700, 1750, 1800):
        tb = layout_cost("mv-bf16", tokens, 3072).raw_bytes_per_page * 1e6 / 1e12
        assert 10.0 <= tb <= 11.1
    # NemoRetriever 3B's published 10.3 TB per million images, within the token-count spread
    assert layout_cost("mv-bf16", 1676, 3072).raw_bytes_per_page * 1e6 / 1e12 == pytest.approx(10.3, rel=0.01)


def test_single_vector_binary_and_pooling_figures():
    # a single-vector model's page vector is stored as --dtype asks (sv-vlm-bf16: 2 bytes a value),
    # float32 without one (sv_vlm as pagemill writes it)
    p = plan(vectors_per_page=1, dim=2048, dtype="bf16", pages=1_000_000)
    assert p["layouts"][0]["layout"] == "sv-vlm-bf16"
    assert p["layouts"][0]["raw_bytes_per_page"] == 4096
    assert p["layouts"][0]["parquet_bytes_total"] == pytest.approx(4.1e9, rel=0.01)
    p = plan(vectors_per_page=1, dim=2048, pages=1_000_000)
    assert p["layouts"][0]["layout"] == "sv-vlm"
    assert p["layouts"][0]["raw_bytes_per_page"] == 8192
    assert p["layouts"][0]["parquet_bytes_total"] == pytest.approx(8.2e9, rel=0.01)
    assert layout_cost("mv-bin", 1030, 128).raw_bytes_per_page == 16_480
    assert 263_680 / layout_cost("mv-bin", 1030, 128).raw_bytes_per_page == 16  # 32x less than fp32
    pooled = pooled_vectors(1030, parse_layout("mv-pool3"))
    assert 1 - pooled / 1030 == pytest.approx(2 / 3, abs=0.001)


def test_index_overheads_are_ordered_sensibly():
    vec = 128 * 4
    hnsw = index_overhead("HNSW", 128, vec)[0]
    assert index_overhead("FLAT", 128, vec)[0] == vec < index_overhead("IVF_FLAT", 128, vec)[0] < hnsw
    assert index_overhead("IVF_PQ", 128, vec)[0] < index_overhead("IVF_SQ8", 128, vec)[0] < vec
    mem, disk = index_overhead("DISKANN", 128, vec)
    assert mem < vec < disk
    with pytest.raises(ValueError):
        index_overhead("SCANN2", 128, vec)


def test_plan_with_calibration_sizes_the_cluster(tmp_path, capsys):
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps({"pages_per_s": 12.5, "render_pages_per_s_per_core": 50}))
    rc = main(["plan", "--model", "colqwen2", "--pages", "20000000", "--layouts", "mv-pool3,mv-bin,sv-mean",
               "--calibration", str(calib), "--deadline", "72", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    c = out["compute"]
    assert c["gpu_hours"] == pytest.approx(20_000_000 / 12.5 / 3600, rel=1e-3)
    assert c["gpus_for_deadline"] == 7  # 444.4 GPU-hours / 72 h
    assert c["cpu_cores_per_gpu"] == 1
    names = [r["layout"] for r in out["layouts"]]
    assert names == ["mv-bf16", "mv-pool3", "mv-bin", "sv-mean"]
    assert out["layouts"][0]["milvus_memory_bytes"] > out["layouts"][0]["raw_bytes_total"]


def test_plan_table_and_errors(capsys):
    assert main(["plan", "--model", "colpali"]) == 0
    text = capsys.readouterr().out
    assert "263.7 KB" in text and "263.7 GB" in text
    assert main(["plan", "--model", "nope"]) == 2
    assert "unknown model preset" in capsys.readouterr().err
    assert main(["plan", "--model", "colpali", "--deadline", "10"]) == 2
