"""Capacity planning from every CPU stage: what calibrate measures per stage, how plan sizes a
fleet from it, and the CPU savings the measurement showed (pixels column, one BLAS thread,
cached triangle indices) keeping their outputs exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from pipelines.analysis.capacity import plan
from pipelines.analysis.sizing import STORE_ROWS_PER_S, fleet
from pipelines.cli import main


def test_calibrate_measures_every_cpu_stage(small_corpus, tmp_path, capsys):
    """The stage pass runs the real stages on the sample (the model's simulation feeding them):
    render, encode by layout, Parquet and the store's writes, each in ms of CPU per page."""
    out = tmp_path / "calib.json"
    assert main(["calibrate", str(small_corpus.root), "--model", "colqwen2-tiny", "--pages", "2", "--batch-size", "2",
                 "--layouts", "mv-pool3,mv-bin", "--out", str(out)]) == 0
    assert "the CPU stages on" in capsys.readouterr().err
    profile = json.loads(out.read_text())
    cpu = profile["cpu_ms_per_page"]
    assert profile["stage_model"].startswith("sim:colqwen2-tiny@") and profile["stage_pages"] >= 2
    assert cpu["render"] > 0 and cpu["write"] > 0
    by_layout = cpu["encode_by_layout"]
    assert set(by_layout) == {"mv", "sv-mean", "mv-pool3", "mv-bin"}
    assert by_layout["mv-pool3"] > by_layout["mv-bin"]  # Ward clustering against sign bits
    assert sum(by_layout.values()) <= cpu["encode"] * 1.05  # the layouts are inside the stage's clock
    assert set(cpu["write_parts"]) == {"parquet", "store"}
    store = profile["store_write"]
    # a row per vector of each multi-vector layout (mv, mv-pool3, mv-bin), and one per page
    assert store["store"] == "milvus" and store["rows_per_page"] > 2 * profile["vectors_per_page"]
    assert store["rows_per_s"] > 0 and "store_server" not in profile  # Milvus Lite: no server's figure


def calibration(**cpu) -> dict:
    return {"model": "colqwen2", "pages_per_s": 50.0, "ocr_fraction": 0.0,
            "cpu_ms_per_page": {"render": 24.0, "encode": 12.0, "write": 8.0,
                                "encode_by_layout": {"mv": 0.5, "sv-mean": 0.5, "mv-pool3": 10.0},
                                "write_parts": {"parquet": 4.0, "store": 4.0}, **cpu},
            "store_write": {"store": "milvus", "rows_per_s": 9000.0, "pages_per_s": 100.0}}


def test_plan_sizes_cores_from_the_sum_of_the_stages():
    p = plan(preset="colqwen2", pages=1_000_000, layouts=["mv-pool3"], calibration=calibration())
    f = p["fleet"]
    assert f["cpu_ms_per_page"] == {"render": 24.0, "encode": 11.0, "write": 8.0}
    assert f["cpu_cores_per_gpu"] == math.ceil(50 * 43 / 1000) == p["compute"]["cpu_cores_per_gpu"]
    assert sum(f["cpu_share"].values()) == pytest.approx(1.0, abs=0.01) and f["cpu_share"]["render"] > 0.5
    # a writer per 100 pages/s of the store's wall plus Parquet: 14 ms a page at 50 pages/s
    assert f["writer_ms_per_page"] == 14.0 and f["writers"] == 1
    # Milvus rows: every vector of mv and mv-pool3, and a page row
    mv = {r["layout"]: r["vectors_per_page"] for r in p["layouts"]}
    assert f["store"]["rows_per_page"] == pytest.approx(mv["mv-bf16"] + mv["mv-pool3"] + 1, abs=0.1)
    assert f["store"]["figure"].startswith("assumed")  # Lite's rate is not a data node's
    assert f["binding"] == "gpu" and f["pages_per_s"] == 50.0
    # a layout the calibration did not measure is named, not guessed
    p = plan(preset="colqwen2", pages=1_000_000, layouts=["mv-rowcol"], calibration=calibration())
    assert any("mv-rowcol not in the calibration" in n for n in p["notes"])


def test_plan_says_which_resource_binds_first():
    cal = calibration()
    few_cores = plan(preset="colqwen2", layouts=["mv-pool3"], calibration=cal, fleet={"gpus": 2, "cpus": 4})["fleet"]
    # 4 CPUs for 2 GPUs: 2 model actors, 2 encoders and a writer leave one render actor (the
    # executor's default), 24 ms a page: it binds before the cores' sum (4 / 43 ms)
    assert few_cores["actors"] == {"embed": 2, "encode": 2, "write": 1, "render": 1}
    assert few_cores["binding"] == "cpu" and few_cores["bottleneck_stage"] == "render"
    assert few_cores["pages_per_s"] == pytest.approx(1000 / 24, abs=0.06)
    wide = plan(preset="colqwen2", layouts=["mv-pool3"], calibration=cal, fleet={"gpus": 1, "cpus": 16})["fleet"]
    assert wide["actors"]["render"] == 14 and wide["binding"] == "gpu"  # 14 x 1000 / 24 ms >> 50 pages/s
    one_node = plan(preset="colqwen2", layouts=["mv-pool3"], calibration=cal,
                    fleet={"gpus": 8, "store_nodes": 1, "store_rows_per_s": 20_000})["fleet"]
    assert one_node["binding"] == "store" and one_node["store"]["figure"].startswith("given")
    assert one_node["pages_per_s"] == pytest.approx(20_000 / one_node["store"]["rows_per_page"], abs=0.06)
    assert one_node["store"]["data_nodes"] == math.ceil(8 * 50 * one_node["store"]["rows_per_page"] / 20_000)
    # a calibration against a server: its measured rows/s sizes the data nodes
    served = plan(preset="colqwen2", layouts=["mv-pool3"], calibration={**cal, "store_server": True})["fleet"]
    assert served["store"]["rows_per_s_per_data_node"] == 9000.0 and served["store"]["figure"].startswith("measured")
    lance = plan(preset="colqwen2", layouts=["mv-pool3"], calibration=cal, store="lancedb", index="NONE")["fleet"]
    assert lance["store"]["rows_per_page"] == 1.0 and lance["store"]["rows_per_s_per_writer"] == STORE_ROWS_PER_S["lancedb"]
    # Parquet parts, ledger records and page images are the object store's PUTs
    images = plan(preset="colqwen2", layouts=["mv-pool3"], calibration=cal, page_images="webp:1024")["fleet"]
    assert images["object_store"]["puts_per_page"] == pytest.approx(1 + 1 / 64 + 1 / 256, rel=1e-3)


def test_plan_fleet_options_are_checked(capsys, tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(calibration()))
    assert main(["plan", "--calibration", str(path), "--cpus", "0"]) == 2
    assert "--cpus: a positive number" in capsys.readouterr().err
    assert main(["plan", "--calibration", str(path), "--layouts", "mv-pool3", "--gpus", "2", "--cpus", "3"]) == 0
    text = capsys.readouterr().out
    assert "binds first: cpu" in text and "render 56%" in text


def test_fleet_without_stage_costs_keeps_the_render_only_plan():
    old = {"model": "colqwen2", "pages_per_s": 50.0, "render_pages_per_s_per_core": 25.0}
    p = plan(preset="colqwen2", calibration=old)
    assert "fleet" not in p and p["compute"]["cpu_cores_per_gpu"] == 2  # ceil(50 / 25)
    assert fleet(calibration(), p["layouts"], pages=p["pages"], store="milvus", gpus=1)["cpu_ms_per_page"]["encode"] == 1.0  # mv and sv-mean only


def test_pixels_column_is_the_arrow_array_of_the_same_bytes():
    from operators.render import large_binary_column

    blobs = [b"", b"abc", bytes(range(256)) * 3, b"\x00"]
    col = large_binary_column(blobs)
    assert col.equals(pa.array(blobs, pa.large_binary())) and col.to_pylist() == blobs


def test_condensed_distances_are_the_reference_ones():
    from operators.layouts.pooling import condensed_cosine_distances, normalise

    rng = np.random.default_rng(3)
    for n in (2, 7, 300):
        x = rng.standard_normal((n, 16)).astype(np.float32)
        v = normalise(x)
        reference = np.clip(1.0 - (v @ v.T)[np.triu_indices(n, k=1)], 0.0, None).astype(np.float64)
        assert np.array_equal(condensed_cosine_distances(x), reference)
