"""Several layouts in one pass: columns, parameters in the schema metadata, counts, fidelity."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import REPO, pagemill_cmd, read_pages

from operators.layouts.layout import parse_layout
from pipelines.cli import main


@pytest.fixture(scope="module")
def layout_run(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("layouts")
    summary = out.parent / f"{out.name}-summary.json"
    rc = main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--layouts",
               "mv-pool3,mv-rowcol,mv-int8,mv-pool2-bin,sv-fde", "--fde-reps", "4", "--fidelity-queries", "12",
               "--summary", str(summary), "--quiet"])
    assert rc == 0
    return out, json.loads(summary.read_text())


def test_layout_columns_and_recorded_parameters(layout_run):
    out, _ = layout_run
    pages = read_pages(out)
    assert pages.schema.field("mv_int8").type == pa.list_(pa.binary(128))
    assert pages.schema.field("mv_int8_scale").type == pa.list_(pa.float32())
    assert pages.schema.field("mv_pool2_bin").type == pa.list_(pa.binary(16))
    assert pages.schema.field("sv_fde").type == pa.list_(pa.float32(), 4 * 16 * 16)
    meta = json.loads(pages.schema.metadata[b"pagemill.layouts"])
    assert meta["mv-pool3"] == {"kind": "mv", "pooling": "pool", "factor": 3, "encoding": "fp16"}
    assert meta["sv-fde"]["fde_reps"] == 4 and meta["sv-fde"]["dim"] == 1024


def test_pooled_vector_counts_for_every_page(layout_run):
    out, _ = layout_run
    pages = read_pages(out)
    n = pages["n_vectors"].to_numpy()
    patches = pages["n_patches"].to_numpy()
    special = n - patches
    assert (pc.list_value_length(pages["mv_pool3"]).to_numpy() == special + (patches // 3).clip(1)).all()
    assert (pc.list_value_length(pages["mv_pool2_bin"]).to_numpy() == special + (patches // 2).clip(1)).all()
    rowcol = special + pages["patch_grid_h"].to_numpy() + pages["patch_grid_w"].to_numpy()
    assert (pc.list_value_length(pages["mv_rowcol"]).to_numpy() == rowcol).all()
    assert (pc.list_value_length(pages["mv_int8"]).to_numpy() == n).all()


@pytest.mark.slow
def test_fidelity_in_summary_and_from_the_command(layout_run):
    out, summary = layout_run
    lay = summary["layouts"]
    assert lay["mv"]["fidelity"]["recall_at_10"] == 1.0 and lay["mv"]["fidelity"]["ndcg_at_10"] == 1.0
    for name in ("mv-pool3", "mv-rowcol", "mv-int8", "mv-pool2-bin", "sv-fde", "sv-mean"):
        f = lay[name]["fidelity"]
        assert 0.0 <= f["recall_at_10"] <= 1.0 and 0.0 <= f["ndcg_at_10"] <= 1.0
    assert lay["mv-int8"]["fidelity"]["recall_at_10"] >= 0.9
    assert lay["mv-pool2-bin"]["raw_bytes_per_page"] < lay["mv"]["raw_bytes_per_page"] / 10
    r = subprocess.run(pagemill_cmd("fidelity", str(out), "--queries", "12", "--json"), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    for name, f in again["layouts"].items():
        assert f["recall_at_10"] == lay[name]["fidelity"]["recall_at_10"], name
    table = subprocess.run(pagemill_cmd("fidelity", str(out), "--queries", "12"), cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert "recall@10" in table.stdout and "mv-pool3" in table.stdout


def test_report_predicts_what_it_measures(layout_run, tmp_path, capsys):
    out, _ = layout_run
    html = tmp_path / "r" / "report.html"
    assert main(["report", str(out), "--json", "--html", str(html)]) == 0
    report = json.loads(capsys.readouterr().out)
    names = {r["layout"] for r in report["layouts"]}
    assert names == {"mv", "sv-mean", "mv-pool3", "mv-rowcol", "mv-int8", "mv-pool2-bin", "sv-fde"}
    for r in report["layouts"]:
        pq_bytes = r["parquet_bytes_per_page"]
        assert pq_bytes["predicted"] == pytest.approx(pq_bytes["measured"], rel=0.05), r["layout"]
        assert r["fidelity"] is not None and "1000000" in r["projections"]
    read_back = [r for r in report["layouts"] if "read_back" in r["milvus"]["raw_bytes_per_page"]]
    # Every layout of the run is in Milvus now, its rows read back.
    assert {r["layout"] for r in read_back} == names
    for r in read_back:
        raw = r["milvus"]["raw_bytes_per_page"]
        assert raw["predicted"] == pytest.approx(raw["read_back"], rel=0.05), r["layout"]
    # What Milvus Lite stores, from its own files: every file of the database's collections
    # counted once, in the collection it belongs to. The patch rows' Parquet holds their vectors,
    # float32 widened from fp16, which Lite's compression brings back to about 2 bytes a value.
    db = out / "milvus.db" / "collections"
    colls = {c["collection"]: c for c in report["milvus"]["collections"]}
    on_disk = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and f.suffix != ".prev")
               for p in db.iterdir()}
    assert {k: c["server_bytes"] for k, c in colls.items()} == on_disk
    patches = colls["pagemill_patches"]
    assert patches["rows"] * 128 * 2 * 0.9 <= patches["server_data_bytes"] <= patches["rows"] * 128 * 4 * 1.2
    assert patches["ratio"] == pytest.approx(patches["server_bytes"] / patches["raw_bytes"], rel=1e-3)
    assert report["index"] == "AUTOINDEX (as built)"
    # Every byte of the shards is in a layout or another column (the page text among them)
    other = report["parquet_other_columns"]
    assert other["bytes_per_page"]["text"] > 0 and other["bytes_per_page"]["page_id"] > 0
    shards = sum(p.stat().st_size for p in (out / "pages").glob("*.parquet")) / report["pages_measured"]
    columns = other["total_bytes_per_page"] + sum(r["parquet_bytes_per_page"]["measured"] for r in report["layouts"])
    assert 0.8 * shards < columns <= shards
    assert all(r["milvus"]["index_built"] == "AUTOINDEX" for r in report["layouts"])
    assert report["recommendation"]["cascade"]["stage1"] in ("sv-mean", "sv-fde")
    # charts: valid PNGs with real content
    import numpy as np
    from PIL import Image

    pngs = sorted(html.parent.glob("*.png"))
    assert len(pngs) == 2 and "report-cost-vs-pages.png" in html.read_text()
    for png in pngs:
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width >= 500 and im.height >= 300
            arr = np.asarray(im.convert("RGB"))
            assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 20 and arr.std() > 5
    assert main(["report", str(out)]) == 0
    assert "cascade:" in capsys.readouterr().out


def test_colpali_end_to_end_with_its_fixed_grid(small_corpus, tmp_path, capsys):
    out = tmp_path / "colpali"
    assert main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--model", "colpali-tiny",
                 "--layouts", "mv-rowcol,mv-pool2", "--quiet"]) == 0
    pages = read_pages(out)
    assert pages.num_rows == sum(small_corpus.ok_pages.values())
    assert set(pages["n_patches"].to_pylist()) == {64}
    assert set(pages["patch_grid_h"].to_pylist()) == {8} and set(pages["patch_offset"].to_pylist()) == {0}
    special = pages["n_vectors"].to_numpy() - 64
    assert (pc.list_value_length(pages["mv_rowcol"]).to_numpy() == special + 16).all()
    assert main(["search", "a table of numbers", "--out", str(out), "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    # no fidelity yet: the report says how to get it; pagemill fidelity saves it in OUT for the report
    assert main(["report", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(r["fidelity"] is None for r in report["layouts"])
    assert any("pagemill fidelity OUT" in n for n in report["notes"])
    assert main(["fidelity", str(out), "--queries", "4", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert len(list((out / "_fidelity").glob("*.json"))) == 1
    assert main(["report", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {r["layout"]: r["fidelity"]["recall_at_10"] for r in report["layouts"]} == \
        {k: v["recall_at_10"] for k, v in measured["layouts"].items()}


def test_a_second_single_vector_image_model_in_the_same_run(small_corpus, tmp_path, capsys):
    """ColQwen2 multi-vector and a Qwen3-VL single vector per page, in one run: each its own
    Parquet column and Milvus field; search's stage 1 on the single vector; milvus-load keeps it.
    The single vector takes encodings too (sv-vlm-bf16 at ingest, sv-vlm-int8 added from the
    archive), and a run asking for them without an sv: model is refused naming the key."""
    out = tmp_path / "sv"
    summary = tmp_path / "sv.json"
    model = "colqwen2-tiny,sv:qwen3-vl-embedding-tiny@32"
    assert main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--quiet",
                 "--model", model, "--layouts", "sv-vlm-bf16", "--summary", str(summary)]) == 0
    pages = read_pages(out)
    assert pages.schema.field("sv_vlm").type == pa.list_(pa.float32(), 32)
    vectors = np.array(pages["sv_vlm"].to_pylist(), np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the model's vector in bf16: 2 bytes a dimension, decoding back to it
    assert pages.schema.field("sv_vlm_bf16").type == pa.binary(64)
    np.testing.assert_allclose(parse_layout("sv-vlm-bf16").read_page_vectors(pages), vectors, atol=1e-2)
    s = json.loads(summary.read_text())
    assert s["milvus"]["fields"]["sv-vlm"]["collection"] == "pagemill_pages"
    assert s["milvus"]["fields"]["sv-vlm-bf16"]["dim"] == 32
    assert s["layouts"]["sv-vlm-bf16"]["bytes_per_vector"] == 64
    assert s["model"]["sv_model"]["dim"] == 32 and s["model"]["sv_model"]["pooling"] == "last-token"
    for stage1 in ("sv-vlm", "sv-vlm-bf16"):
        assert main(["search", "revenue", "--out", str(out), "--stage1", stage1, "-k", "3", "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    assert main(["report", str(out), "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["layouts"] if r["layout"] == "sv-vlm-bf16")
    assert row["dim"] == 32 and row["parquet_bytes_per_page"]["predicted"] == \
        pytest.approx(row["parquet_bytes_per_page"]["measured"], rel=0.15)
    # added later from the archive's sv_vlm column, by the CPU: what an ingest would have written
    assert main(["relayout", str(out), "--layouts", "sv-vlm-int8", "--executor", "local", "--quiet"]) == 0
    pages = read_pages(out)
    np.testing.assert_allclose(parse_layout("sv-vlm-int8").read_page_vectors(pages),
                               np.array(pages["sv_vlm"].to_pylist(), np.float32), atol=2e-2)
    lite = str(tmp_path / "reloaded.db")
    assert main(["milvus-load", str(out), "--milvus", lite, "--json"]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert loaded["fields"]["sv-vlm"]["dim"] == 32 and loaded["row_counts"]["pagemill_pages"] == pages.num_rows
    assert loaded["fields"]["sv-vlm-int8"]["dim"] == 32
    # without a single-vector model there is nothing to encode
    assert main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "none"), "--executor", "local",
                 "--quiet", "--layouts", "sv-vlm-bf16"]) == 2
    assert "layouts: sv-vlm-bf16 encode the single-vector model's page vector" in capsys.readouterr().err


def test_colmodernvbert_end_to_end_with_tiles(small_corpus, tmp_path, capsys):
    out = tmp_path / "cmvb"
    assert main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--quiet",
                 "--model", "colmodernvbert-tiny", "--layouts", "mv-pool2,mv-rowcol"]) == 0
    pages = read_pages(out)
    assert pages.num_rows == sum(small_corpus.ok_pages.values())
    n = pages["n_patches"].to_numpy()
    assert (n % 4 == 0).all() and (n >= 4).all() and set(pages["patch_offset"].to_pylist()) == {0}
    assert (pages["patch_grid_h"].to_numpy() * pages["patch_grid_w"].to_numpy() == n).all()
    assert main(["search", "revenue", "--out", str(out), "-k", "3", "--rerank", "mv-pool2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
