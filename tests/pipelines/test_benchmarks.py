"""The benchmarks' procedures, run tiny on this CPU so that they keep working (the figures come
from their full runs: README.md, "Performance" and "On a GPU")."""

from __future__ import annotations

import re
import sys

from conftest import CORPUS


def rows(table: str) -> dict[str, list[str]]:
    """A Markdown table's body rows (after the header's rule) by their first cell: the other cells."""
    out, body = {}, False
    for line in table.splitlines():
        if line.startswith("|---"):
            body = True
        elif body and line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[cells[0]] = cells[1:]
        else:
            body = False
    return out


def ratio(cell: str) -> float:
    return float(cell.rstrip("×"))


def test_gpu_benchmark_measures_model_alone_and_pipeline(ray_address, capsys):
    from benchmarks import gpu

    table = gpu.main(["--corpus", str(CORPUS), "--model", "colqwen2-tiny", "--docs", "8", "--batch-size", "4",
                      "--calibration-pages", "4", "--ray-address", ray_address])

    def value(label: str) -> float:
        return float(re.search(rf"\| {re.escape(label)}[^|]* \| ([0-9.]+) \|", table).group(1))

    alone, steady = value("model alone (calibrate), pages/s"), value("pipeline steady state")
    assert alone > 0 and steady > 0
    # the table prints pages/s to 0.1: the ratio of the printed values is off by that rounding at most
    assert abs(value("pipeline ÷ model alone") - steady / alone) <= 0.01 + steady / alone * (0.05 / alone + 0.05 / steady)
    assert 0 < value("accelerator busy") <= 1
    assert "CPU cores per GPU: no GPU" in table and "run's own diagnosis: bottleneck: " in table


def test_pool_benchmark_runs_colpali_engines_own_pooler_on_the_same_pages(capsys):
    """colpali-engine's HierarchicalTokenPooler (the benchmark extra, installed --no-deps), at its
    default and with a thread per core, on every page pagemill pools; its package's models are
    never imported."""
    import os

    from benchmarks import pool

    table = pool.main(["--pages", "4", "--patches", "60", "--factor", "3", "--repeat", "1"])
    r = rows(table)
    cores = os.cpu_count() or 1
    default = next(k for k in r if "HierarchicalTokenPooler" in k and "num_workers=None" in k)
    threads = next(k for k in r if "HierarchicalTokenPooler" in k and f"num_workers={cores}`" in k)
    ours = float(r["pagemill `hierarchical_pool`"][0])
    for k in (default, threads):
        assert abs(ratio(r[k][1]) - ours / float(r[k][0])) < 0.02 * ratio(r[k][1]) + 0.01
    assert f"colpali-engine {pool.colpali_pooler_class()[1]} " in default
    assert re.search(rf"pagemill ÷ colpali-engine: [0-9.]+× its default, [0-9.]+× with num_workers={cores}", table)
    assert "4 pages x 60 patches" in table and "median of 1 interleaved runs" in table
    # both pool every page to at most 60 // 3 vectors of 128 dims (the benchmark asserts it)
    assert re.search(r"sanity: 4 pages pooled by both; .*\(at most max\(1, 60 // 3\) = 20\), dim 128 both", table)
    assert "colpali_engine" not in sys.modules and "colpali_engine.models" not in sys.modules


def test_render_benchmark_has_pdf2image_at_the_output_size(capsys):
    from benchmarks import render

    table = render.main(["--corpus", str(CORPUS), "--docs", "3", "--repeat", "1"])
    r = rows(table)
    assert list(r)[1:] == ["pdf2image 200 DPI + resize (the ColPali tutorial recipe)",
                           "pdf2image at the output size (`size=(w, h)`)",
                           "bare PyMuPDF `get_pixmap` loop (the floor, no deadline)"]
    assert all(float(v[0]) > 0 for v in r.values())
    assert "Render: 3 documents" in table and "median of 1 interleaved runs" in table


def test_archives_benchmark_sets_ocr_and_page_images_beside_rendering(capsys):
    from benchmarks import archives

    table = archives.main(["--corpus", str(CORPUS), "--docs", "1", "--repeat", "1", "--tokens", "96"])
    lines = [line for line in table.splitlines() if line.startswith("| scanned")]
    assert len(lines) == 3
    alone, ocr, images = ([c.strip() for c in line.strip("|").split("|")] for line in lines)
    assert alone[3] == "1.00×" and alone[5] == "0"
    assert int(ocr[5]) >= 1 and float(ocr[4]) > 0  # the scan was read by Tesseract
    assert float(images[6]) > 0 and float(images[7]) > 0


def test_pipeline_benchmark_measures_steady_state_between_first_and_last_commit(ray_address, capsys):
    from benchmarks import pipeline

    table = pipeline.main(["--corpus", str(CORPUS), "--docs", "40", "--unit-docs", "1", "--ray-address", ray_address])
    r = rows(table)
    wall = r["pagemill end to end (Ray executor), wall clock"]
    steady = r["pagemill end to end, steady state (first to last commit; pages after the first unit)"]
    # the pages committed after the first unit, over the measured window between the first and the last commit
    assert 0 < int(steady[0]) < int(wall[0]) and 0 < float(steady[1]) < float(wall[1])
    assert "steady state: not measured" not in table
    assert "naive loop (pdf2image, one page at a time, Parquet at the end)" in r


def test_text_benchmark_ranks_the_same_queries_every_way(capsys):
    from benchmarks import text

    table = text.main(["--corpus", str(CORPUS), "--pages", "12", "--queries", "3"])
    r = rows(table)
    assert list(r) == list(text.METHODS) and all(len(v) == 4 and all(c.endswith("%") for c in v) for v in r.values())
    assert re.search(r"Text layer: 12 pages \(\d+ documents.*\d+ chunks; \d+ verbatim sentences", table)
    assert re.search(r"Target for the fusion \(verbatim top-3 >= 90%, top-1 >= 80%\): (met|NOT met)", table)


def test_page_cpu_benchmark_sets_each_stage_and_a_plain_insert_side_by_side(capsys):
    """Every CPU stage in ms a page with its share, pagemill's store write beside pymilvus'
    insert of the same rows (the same count), and each change's before and after."""
    from benchmarks import page_cpu

    table = page_cpu.main(["--corpus", str(CORPUS), "--pages", "6"])
    body = rows(table)
    assert {"render", "encode", "write"} <= set(body)
    assert all(float(body[s][0]) > 0 for s in ("render", "encode", "write"))
    ours, plain = body["pagemill's store write"], body["pymilvus `MilvusClient.insert`"]
    assert ours[0] == plain[0] and int(ours[0].replace(",", "")) > 6 * 770  # mv + mv-pool3 + a page row, a page
    assert float(plain[3]) > 0
    assert {"pixels column (pa.array -> one buffer)", "mv-pool3, BLAS threads (default -> 1)"} <= set(body)
