"""End-to-end ingest on real components: local Ray, Milvus Lite, PyMuPDF, tiny ColQwen2."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import milvus_counts, read_pages, read_quarantine

from pipelines.cli import main

PAGE_TIMEOUT = "8"  # above the 2-3 s pages of test_5125/test_3450, far below test_2548's "never"


@pytest.fixture(scope="module")
def ray_run(smoke_corpus, ray_address, tmp_path_factory):
    """The SMOKE corpus through the CLI on the Ray executor, then run again over the same source."""
    out = tmp_path_factory.mktemp("ray_out")
    summaries = []
    for i in range(2):
        summary_path = out.parent / f"summary-{out.name}-{i}.json"
        rc = main(["ingest", str(smoke_corpus.root), "--out", str(out), "--executor", "ray",
                   "--ray-address", ray_address, "--page-timeout", PAGE_TIMEOUT, "--summary", str(summary_path),
                   "--unit-max-docs", "12", "--layouts", "mv-pool3,mv-int8", "--quiet"])
        assert rc == 0
        summaries.append(json.loads(summary_path.read_text()))
    return out, summaries


def test_every_good_page_indexed_exactly_once(ray_run, smoke_corpus):
    out, (first, _) = ray_run
    pages = read_pages(out)
    ids = pages["page_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a page appears twice"
    assert set(ids) == smoke_corpus.expected_page_ids()
    # Per document, the page numbers are exactly 0..n-1 of PyMuPDF's own count.
    per_doc = Counter(pages["source_uri"].to_pylist())
    assert per_doc == Counter(smoke_corpus.ok_pages)
    assert first["pages"]["indexed"] == len(ids) == first["pages"]["embedded"]
    assert first["documents"]["indexed"] == len(smoke_corpus.ok_pages)


def test_pages_schema_and_vectors(ray_run):
    out, _ = ray_run
    pages = read_pages(out)
    mv_type = pages.schema.field("mv").type
    assert mv_type == pa.list_(pa.list_(pa.float16(), 128))
    for col in ("page_id", "doc_id", "source_uri", "doc_version", "page_number", "width", "height", "model",
                "n_vectors"):
        assert col in pages.column_names
    rows = pages.slice(0, 5).to_pylist()
    for r in rows:
        assert len(r["mv"]) == r["n_vectors"] > r["n_patches"] > 0
        assert r["width"] % 28 == 0 and r["height"] % 28 == 0
        assert r["width"] * r["height"] <= 28 * 28 * 96
        assert r["model"] == "colqwen2-tiny"


def test_broken_documents_quarantined_with_reason(ray_run, smoke_corpus):
    out, (first, _) = ray_run
    q = read_quarantine(out)
    got = dict(zip(q["source_uri"].to_pylist(), q["reason"].to_pylist()))
    assert got == smoke_corpus.quarantined
    assert first["documents"]["quarantined"] == len(smoke_corpus.quarantined)
    assert {(e["source_uri"], e["reason"]) for e in first["quarantine"]} == set(smoke_corpus.quarantined.items())
    assert all(d for d in q["detail"].to_pylist())


def test_milvus_rows_match_pages(ray_run):
    out, (first, _) = ray_run
    pages = read_pages(out)
    counts = milvus_counts(out)
    assert counts["pages"] == pages.num_rows
    assert counts["patches"] == sum(pages["n_vectors"].to_pylist())
    pooled = sum(len(v) for v in pages["mv_pool3"].to_pylist())
    assert first["milvus"]["row_counts"] == {"pagemill_pages": counts["pages"], "pagemill_patches": counts["patches"],
                                             "pagemill_patches_pool3": pooled,
                                             "pagemill_patches_int8": counts["patches"]}
    # Every layout of the run went to Milvus, each in its own row-per-vector collection on Lite.
    fields = first["milvus"]["fields"]
    assert set(fields) == {"mv", "sv-mean", "mv-pool3", "mv-int8"}
    assert fields["mv-pool3"]["collection"] == "pagemill_patches_pool3" and fields["mv-pool3"]["vector_type"] == "float"
    assert first["milvus"]["mv_mode"] == "rows" and first["milvus"]["server"].startswith("Milvus Lite")


def test_summary_keys_are_stable(ray_run):
    out, (first, _) = ray_run
    for path in ("documents.seen", "documents.indexed", "documents.skipped_unchanged", "documents.quarantined",
                 "pages.indexed", "pages.embedded", "quarantine", "milvus", "outputs", "wall_s", "pages_per_s"):
        node = first
        for part in path.split("."):
            node = node[part]
    runs = sorted((out / "_runs").glob("*.json"))
    assert len(runs) == 2 and json.loads(runs[0].read_text())["run_id"] == first["run_id"]
    assert first["outputs"]["pages_bytes"] == sum(p.stat().st_size for p in (out / "pages").glob("*.parquet"))


def test_rerun_is_a_noop(ray_run):
    out, (first, second) = ray_run
    assert second["pages"]["embedded"] == 0
    assert second["documents"]["skipped_unchanged"] == second["documents"]["seen"] == first["documents"]["seen"]
    assert second["units"]["planned"] == 0
    assert milvus_counts(out)["pages"] == read_pages(out).num_rows


def test_local_executor_gives_identical_parquet(ray_run, smoke_corpus, tmp_path):
    out_ray, _ = ray_run
    out_local = tmp_path / "local"
    rc = main(["ingest", str(smoke_corpus.root), "--out", str(out_local), "--executor", "local",
               "--page-timeout", PAGE_TIMEOUT, "--unit-max-docs", "12", "--layouts", "mv-pool3,mv-int8", "--quiet"])
    assert rc == 0
    a = read_pages(out_ray).sort_by("page_id")
    b = read_pages(out_local).sort_by("page_id")
    assert a.schema.remove_metadata() == b.schema.remove_metadata()
    # Bit-identical, vectors included: same weights, same token ids, same per-page results
    # whatever the batch composition.
    assert a.equals(b)
    # Same units, same shard names: the executors commit identical files.
    assert sorted(p.name for p in (out_ray / "pages").iterdir()) == sorted(p.name for p in (out_local / "pages").iterdir())


def test_changed_document_replaces_its_pages(small_corpus, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(small_corpus.root, src)
    out = tmp_path / "out"
    args = ["ingest", str(src), "--out", str(out), "--executor", "local", "--unit-max-docs", "4", "--quiet"]
    assert main(args + ["--summary", str(tmp_path / "first.json")]) == 0
    # Into a new index nothing needs deleting: no delete by filter (a server-side query) is sent.
    assert json.loads((tmp_path / "first.json").read_text())["milvus"]["delete_calls"] == 0
    before = read_pages(out)
    # Overwrite one single-page document with a two-page one: a new version with more pages.
    docs = sorted(Counter(before["source_uri"].to_pylist()).items())
    target_uri, n_before = next((u, n) for u, n in docs if n == 1)
    donor_uri, n_donor = next((u, n) for u, n in docs if n >= 2)
    target = Path(target_uri.replace("file://", "").replace("%2B", "+"))
    donor = Path(donor_uri.replace("file://", "").replace("%2B", "+"))
    target.write_bytes(donor.read_bytes() + b"\n% changed\n")  # (not the donor's bytes: that is a duplicate)
    summary_path = tmp_path / "s.json"
    assert main(args + ["--summary", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["documents"]["replaced_versions"] == 1
    assert summary["milvus"]["delete_calls"] == 2  # the changed document's unit, in both collections
    assert summary["pages"]["embedded"] == n_donor
    after = read_pages(out)
    ids = after["page_id"].to_pylist()
    assert len(ids) == len(set(ids))
    per_doc = Counter(after["source_uri"].to_pylist())
    assert per_doc[target_uri] == n_donor
    versions = {v for u, v in zip(after["source_uri"].to_pylist(), after["doc_version"].to_pylist()) if u == target_uri}
    assert len(versions) == 1
    assert after.num_rows == before.num_rows - n_before + n_donor
    counts = milvus_counts(out)
    assert counts["pages"] == after.num_rows
    assert counts["patches"] == sum(after["n_vectors"].to_pylist())
