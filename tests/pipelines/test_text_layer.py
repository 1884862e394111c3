"""The text layer: chunks in Milvus with BM25 (Milvus Lite) and dense vectors, fused; real PDFs,
the real MiniLM weights, a real Milvus Lite."""

from __future__ import annotations

import json
import re

import pytest
from conftest import milvus_counts, read_pages

from operators.models.text_layer import CHARS, bm25_text, chunk_text
from pipelines.analysis.fidelity import sentences
from pipelines.cli import main


def _search(capsys, out, query: str, *extra: str) -> list[dict]:
    assert main(["search", query, "--out", str(out), "--rerank", "none", "-k", "3", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)["results"]


def _unique_sentences(pages) -> list[tuple[str, str]]:
    """(page_id, a sentence of that page no other page has), for the pages with prose."""
    texts = pages["text"].to_pylist()
    flat = [" ".join((t or "").split()) for t in texts]
    out = []
    for i, t in enumerate(texts):
        unique = [x for x in sentences(t) if sum(x in f for f in flat) == 1]
        if unique:
            out.append((pages["page_id"][i].as_py(), max(unique, key=len)))
    return out


def test_chunks_cover_the_text_and_unspaced_scripts_become_bigrams():
    words = [f"w{i}" for i in range(400)]
    chunks = chunk_text(" ".join(words))
    assert [len(c.split()) for c in chunks] == [150, 150, 150]
    assert set(" ".join(chunks).split()) == set(words)  # every word in a chunk; overlaps repeat a few
    assert chunks[1].split()[0] == "w125"  # 25 words shared with the chunk before
    assert chunk_text("") == [] and chunk_text(None) == []
    assert all(len(c) <= CHARS for c in chunk_text("中" * 3000))  # no spaces: cut by characters
    assert bm25_text("Tokyo 東京タワー 서울 ok") == "Tokyo 東京 京タ タワ ワー 서울 ok"
    assert bm25_text("نص عربي") == "نص عربي"  # Arabic is spaced: as it is


def test_text_rows_are_chunks_with_their_vectors(text_indexed):
    pages = read_pages(text_indexed)
    chunks = pages["text_chunks"].to_pylist()
    texts = pages["text"].to_pylist()
    with_text = [i for i, c in enumerate(chunks) if c is not None]
    assert with_text and any(c is None for c in chunks)  # scans: no text, no chunks
    assert all(len(chunks[i]) == len(chunk_text(texts[i])) for i in with_text)
    assert milvus_counts(text_indexed, names=("text",))["text"] == sum(len(chunks[i]) for i in with_text)


def test_status_expects_a_row_per_chunk(text_indexed, capsys):
    assert main(["status", str(text_indexed), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["healthy"], status["problems"]
    assert status["milvus"]["pagemill_text"]["rows"] == status["milvus"]["pagemill_text"]["expected"] > 0


def test_a_copied_sentence_finds_its_page_first_by_bm25_and_the_fusion_says_its_lists(text_indexed, capsys):
    pages = read_pages(text_indexed)
    picked = _unique_sentences(pages)
    assert len(picked) >= 8
    for page_id, sentence in picked[:8]:
        assert _search(capsys, text_indexed, sentence, "--stage1", "text-bm25")[0]["page_id"] == page_id, sentence
    page_id, sentence = picked[0]
    top = _search(capsys, text_indexed, sentence, "--stage1", "text")[0]
    assert top["page_id"] == page_id and top["lists"] == ["text-bm25", "text-dense"]
    dense = _search(capsys, text_indexed, sentence, "--stage1", "text-dense")
    assert all(r["lists"] == ["text-dense"] for r in dense)
    # the lexical list alone, through the fusion: the same order as text-bm25
    bm25_only = _search(capsys, text_indexed, sentence, "--stage1", "text", "--text-weights", "dense=0")
    assert [r["page_id"] for r in bm25_only] == [r["page_id"] for r in _search(capsys, text_indexed, sentence,
                                                                                  "--stage1", "text-bm25")]


def test_cjk_and_arabic_phrases_find_their_pages(text_indexed, capsys):
    pages = read_pages(text_indexed)
    texts = pages["text"].to_pylist()
    flat = ["".join((t or "").split()) for t in texts]
    found = {}
    for script, pattern in (("japanese", r"[\u3040-\u30ff\u4e00-\u9fff]{8,}"), ("arabic", r"[\u0600-\u06ff ]{25,}")):
        for i, t in enumerate(texts):
            runs = [r.strip() for r in re.findall(pattern, t or "")]
            runs = [r for r in runs if sum("".join(r.split()) in f for f in flat) == 1]
            if runs:
                phrase = max(runs, key=len)[:12 if script == "japanese" else 40]
                found[script] = (pages["page_id"][i].as_py(), phrase)
                break
    assert set(found) == {"japanese", "arabic"}
    for page_id, phrase in found.values():
        results = _search(capsys, text_indexed, phrase, "--stage1", "text-bm25")
        assert results and results[0]["page_id"] == page_id, phrase


def test_text_weights_are_checked(text_indexed, capsys):
    assert main(["search", "x", "--out", str(text_indexed), "--stage1", "text", "--text-weights", "bm25=a"]) == 2
    assert "--text-weights" in capsys.readouterr().err
    assert main(["search", "x", "--out", str(text_indexed), "--stage1", "text", "--text-weights",
                 "bm25=0,dense=0"]) == 2


def test_hybrid_results_say_which_lists_found_them(text_indexed, capsys):
    results = _search(capsys, text_indexed, "Walden pond and the woods", "--hybrid")
    assert results and all(r["lists"] and set(r["lists"]) <= {"sv-mean", "text-bm25", "text-dense"} for r in results)
    assert any("text-bm25" in r["lists"] for r in results)


def test_report_and_plan_cost_the_text_layer(text_indexed, capsys):
    pages = read_pages(text_indexed)
    chunks = [len(c) for c in pages["text_chunks"].to_pylist() if c is not None]
    assert main(["report", str(text_indexed), "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["text_layer"]
    assert t["chunks_per_page"] == pytest.approx(sum(chunks) / pages.num_rows)
    assert t["bm25"] and t["milvus"]["rows"] == sum(chunks)
    # measured: the rows' bytes and Milvus Lite's own files for the collection (BM25 index included)
    assert t["milvus"]["server_bytes_per_page"] > t["milvus"]["raw_bytes_per_page"] > 0
    assert t["milvus"]["raw_bytes_per_page"] == pytest.approx(t["predicted"]["milvus_raw_bytes_per_page"], rel=0.5)
    assert main(["plan", "--model", "colqwen2", "--layouts", "text", "--pages", "1M", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["layouts"] if r["layout"] == "text")
    assert row["vectors_per_page"] == 3.0 and row["milvus_disk_bytes"] > row["raw_bytes_total"] > 3 * 384 * 4 * 1e6


def test_fidelity_reports_the_text_layers_recall_of_the_source_page(text_indexed, capsys):
    from operators.io.store import LocalStore
    from operators.models import ModelSpec
    from pipelines.analysis.fidelity import measure_fidelity

    assert main(["fidelity", str(text_indexed), "--queries", "8", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["text_layer"]
    assert t["searched"] == "Milvus" and t["queries"] == 8
    assert set(t["lists"]) == {"text", "text-bm25", "text-dense"}
    assert t["lists"]["text-bm25"]["recall_at_1"] >= 0.75 and t["lists"]["text"]["recall_at_10"] >= 0.75
    # without Milvus: dense only, exactly over the pages, and said
    exact = measure_fidelity(LocalStore(text_indexed), ModelSpec(name="colqwen2-tiny", weights="random"), None, None, 8,
                             text_model="all-MiniLM-L6-v2")["text_layer"]
    assert exact["searched"] == "parquet" and set(exact["lists"]) == {"text-dense", "text-page-mean"} and exact["note"]
    assert exact["lists"]["text-dense"]["recall_at_10"] >= 0.75


def test_milvus_load_rebuilds_the_text_layer_from_the_archive(text_indexed, capsys):
    before = milvus_counts(text_indexed, names=("text",))["text"]
    assert main(["milvus-load", str(text_indexed), "--recreate", "--json"]) == 0
    capsys.readouterr()
    assert milvus_counts(text_indexed, names=("text",))["text"] == before
    page_id, sentence = _unique_sentences(read_pages(text_indexed))[0]
    assert _search(capsys, text_indexed, sentence, "--stage1", "text-bm25")[0]["page_id"] == page_id


def test_a_writer_for_the_text_layer_alone_still_sends_the_chunk_text():
    """What an added text model sends from the workers (a subset of the plan): the chunks'
    text goes with their vectors, or Milvus would compute BM25 vectors of empty text."""
    import numpy as np
    import pyarrow as pa

    from operators.embed import fixed_vectors
    from operators.layouts.layout import parse_layouts
    from operators.stores.milvus.schema import plan_fields, server_info
    from operators.stores.milvus.writer import MilvusWriter

    text = "Copied sentences find their pages. " * 40
    n = len(chunk_text(text))
    plan = plan_fields(server_info("milvus_lite-3.2.2"), "idx", parse_layouts([]), 8, text_dim=4)
    writer = MilvusWriter("unused.db", "idx", 8, plan=plan).subset(["text"])
    assert {f.layout for f in writer.plan.fields} == {"text", "text-bm25"}
    pages = pa.table({"page_id": ["d-p000000"], "doc_id": ["d"], "doc_version": ["v"], "source_uri": ["file:///d.pdf"],
                      "page_number": [0], "text": [text],
                      "text_chunks": pa.ListArray.from_arrays(pa.array([0, n], pa.int32()),
                                                              fixed_vectors(np.ones((n, 4), np.float32), 4))})
    cols = writer.columns_for(pages)["idx_text"]
    assert cols.n == n and cols.fields["text"][1][0].startswith("Copied sentences")
    assert cols.fields["chunk_id"][1] == [f"d-p000000:{j}" for j in range(n)]


def test_an_index_built_before_chunks_keeps_its_text_layer_per_page(tmp_path):
    """An index whose NAME_text holds a vector per page (built before chunks) goes on being
    written that way, said in a note, instead of refusing every later ingest."""
    from operators.layouts.layout import parse_layouts
    from operators.stores.milvus.client import release_lite
    from operators.stores.milvus.writer import MilvusWriter

    uri = str(tmp_path / "milvus.db")
    old = MilvusWriter(uri, "idx", 8, text_dim=4, layouts=parse_layouts([]), text_per_page=True)
    assert old.setup().by_layout("text").mode == "page"
    old.close()
    later = MilvusWriter(uri, "idx", 8, text_dim=4, layouts=parse_layouts([]))
    plan = later.setup()
    try:
        assert plan.by_layout("text").field == "sv_text" and plan.by_layout("text-bm25") is None
        assert any("built before chunks" in n for n in plan.notes)
    finally:
        later.close()
        release_lite(uri)


def test_a_text_model_runs_on_a_two_cpu_ray(small_corpus, ray_address, tmp_path):
    """Three model stages and encode ask for more logical CPUs than a 2-CPU machine has: the
    requests are scaled down to fit (render keeps its share), instead of a run refused."""
    summary = tmp_path / "s.json"
    assert main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "o"), "--ray-address", ray_address,
                 "--model", "colqwen2-tiny,text:all-MiniLM-L6-v2", "--summary", str(summary), "--quiet"]) == 0
    s = json.loads(summary.read_text())
    res = s["executor_stats"]["resources"]
    assert 0 < res["cpu_requests_scaled_by"] < 1
    assert sum(x["actors"] * x["num_cpus"] for x in res["stages"].values()) <= res["cluster_cpus"]
    assert s["pages"]["indexed"] == sum(small_corpus.ok_pages.values())
