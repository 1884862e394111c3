"""The cascade search against brute force, and the calibration profile feeding the planner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import index_store, read_pages

from operators.io.store import LocalStore
from operators.layouts.layout import LayoutScorer, parse_layout
from operators.models import ModelSpec, adapter_for
from pipelines.cli import main
from pipelines.index.search import search

QUERY = "revenue by region and quarter"


@pytest.fixture(scope="module")
def indexed(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    assert main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--layouts", "mv-int8",
                 "--quiet"]) == 0
    return out


def _brute_force(out, k=10):
    pages = read_pages(out)
    q = adapter_for(ModelSpec()).embed_queries([QUERY])[0]
    scores = LayoutScorer(parse_layout("mv"), pages, 128).scores(q)
    order = np.argsort(-scores, kind="stable")[:k]
    return [pages["page_id"][int(i)].as_py() for i in order], pages.num_rows


@pytest.mark.parametrize("vectors_from", ["parquet", "milvus"])
def test_cascade_equals_brute_force_when_candidates_cover_the_corpus(indexed, vectors_from):
    expected, n_pages = _brute_force(indexed)
    vectors = index_store(indexed)
    try:
        got = search(QUERY, LocalStore(indexed), vectors, k=10, candidates=n_pages, vectors_from=vectors_from)
    finally:
        vectors.close()
    assert [r["page_id"] for r in got] == expected
    assert [r["rank"] for r in got] == list(range(1, 11))
    assert all(r["source_uri"].startswith("file://") and r["page_number"] is not None for r in got)
    scores = [r["score"] for r in got]
    assert scores == sorted(scores, reverse=True)


def test_patch_stage1_and_json_output(indexed, capsys):
    assert main(["search", QUERY, "--out", str(indexed), "--stage1", "patches", "--rerank", "mv-int8", "-k", "5",
                 "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 5 and results[0]["rank"] == 1
    assert main(["search", QUERY, "--out", str(indexed), "--rerank", "none", "-k", "3"]) == 0
    assert "page_id" in capsys.readouterr().out
    assert main(["search", QUERY, "--out", str(indexed), "--rerank", "sv-mean"]) == 2


def test_calibrate_profile_feeds_the_planner(small_corpus, tmp_path, capsys):
    """Calibrated on the user's sample (real PDFs, quarantined ones counted), planned for the
    same model; a profile of another model is refused, a synthetic one named."""
    profile_path = tmp_path / "calib.json"
    assert main(["calibrate", str(small_corpus.root), "--model", "colqwen2-tiny", "--pages", "4", "--batch-size", "2",
                 "--out", str(profile_path)]) == 0
    capsys.readouterr()
    profile = json.loads(profile_path.read_text())
    assert profile["model"] == "colqwen2-tiny" and profile["pages"] == 4 and profile["dim"] == 128
    assert profile["pages_per_s"] > 0 and profile["render_pages_per_s_per_core"] > 0
    sample = profile["render_sample"]
    assert sample["source"] == str(small_corpus.root) and sample["pages"] >= 4 and sample["documents"] >= 2
    assert 96 < profile["vectors_per_page"] < 140  # 96 visual tokens at most, plus the prompt
    # what a page costs beyond rendering: Tesseract on sample pages, a page image at webp:1024
    assert profile["ocr_ms_per_page"] > 0 and 0 <= profile["ocr_fraction"] <= 1
    assert profile["page_image_bytes"] > 1000 and profile["page_image_spec"] == "webp:1024"
    assert main(["plan", "--model", "colqwen2-tiny", "--pages", "1M", "--calibration", str(profile_path),
                 "--deadline", "24", "--json"]) == 0  # every preset --model takes is one plan knows
    assert json.loads(capsys.readouterr().out)["compute"]["gpus_for_deadline"] >= 1
    assert main(["plan", "--model", "colqwen2", "--pages", "1e6", "--calibration", str(profile_path)]) == 2
    assert "measured with colqwen2-tiny, the plan is for colqwen2" in capsys.readouterr().err
    assert main(["plan", "--vectors-per-page", "110", "--dim", "128", "--pages", "1000000", "--calibration",
                 str(profile_path), "--deadline", "24", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["compute"]["gpu_hours"] == pytest.approx(1e6 / profile["pages_per_s"] / 3600, rel=1e-2)
    assert any("ran on cpu, not a GPU" in n for n in plan["notes"])
    # no sample: refused with the way out; --synthetic works and the plan names it
    assert main(["calibrate", "--model", "colqwen2-tiny"]) == 2
    assert "pagemill calibrate SOURCE" in capsys.readouterr().err
    synthetic = tmp_path / "synthetic.json"
    assert main(["calibrate", "--synthetic", "--model", "colqwen2-tiny", "--pages", "2", "--batch-size", "2",
                 "--out", str(synthetic)]) == 0
    capsys.readouterr()
    assert main(["plan", "--vectors-per-page", "110", "--dim", "128", "--calibration", str(synthetic), "--json"]) == 0
    assert any("synthetic page" in n for n in json.loads(capsys.readouterr().out)["notes"])


def test_text_layer_sentence_finds_its_page(text_indexed, capsys):
    from pipelines.analysis.fidelity import sentences

    pages = read_pages(text_indexed)
    texts = pages["text"].to_pylist()
    with_text = [i for i, t in enumerate(texts) if len(sentences(t)) >= 2]
    assert len(with_text) >= 8
    assert any(v is None for v in pages["sv_text"].to_pylist())  # the scans: no text vector
    hits = 0
    flat = [" ".join((t or "").split()) for t in texts]
    for i in with_text[:8]:
        # a sentence of this page that no other page contains (running headers repeat)
        unique = [x for x in sentences(texts[i]) if sum(x in f for f in flat) == 1]
        sentence = max(unique, key=len)
        assert main(["search", sentence, "--out", str(text_indexed), "--stage1", "text", "--rerank", "none", "-k", "3",
                     "--json"]) == 0
        results = json.loads(capsys.readouterr().out)["results"]
        hits += results[0]["page_id"] == pages["page_id"][i].as_py()
    assert hits == 8
    assert main(["search", "a sentence", "--out", str(text_indexed), "--hybrid", "-k", "5", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 5


def test_corpus_filter_needs_an_index_with_a_partition_key(indexed, capsys):
    assert main(["search", QUERY, "--out", str(indexed), "--corpus", "acme"]) == 2
    assert "no corpus field" in capsys.readouterr().err


def test_equal_scores_rank_by_page_id_whatever_order_they_came_in():
    """Identical pages score the same; their order must not depend on the server's."""
    from pipelines.index.search import reciprocal_rank_fusion

    assert [p for p, _ in reciprocal_rank_fusion([("b", 1.0), ("a", 0.5)], [("a", 1.0), ("b", 0.5)])] == ["a", "b"]
    assert [p for p, _ in reciprocal_rank_fusion([("a", 1.0), ("b", 0.5)], [("b", 1.0), ("a", 0.5)])] == ["a", "b"]
