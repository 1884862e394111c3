"""An index that knows what it holds: layouts added from the archive, a model change refused then
re-embedded with --reindex through a crash, a text model added later, status on a healthy, a
crashed and a half-reindexed OUT, and readers that see only committed shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from conftest import REPO, pagemill_cmd

from pipelines.cli import main

BASE = ["--executor", "local", "--unit-max-docs", "2", "--quiet"]


def ingest(src, out, *extra, expect=0) -> dict:
    summary = out.parent / f"{out.name}-{len(list(out.parent.glob(out.name + '-*.json')))}.json"
    assert main(["ingest", str(src), "--out", str(out), *BASE, "--summary", str(summary), *extra]) == expect
    return json.loads(summary.read_text()) if expect == 0 else {}


def committed_pages(out: Path) -> pa.Table:
    """OUT/pages read through the manifest, the way the README tells readers to."""
    files = json.loads((out / "pages" / "_manifest.json").read_text())["files"]
    return ds.dataset([str(out / f) for f in files], format="parquet").to_table().sort_by("page_id")


def milvus_rows(out: Path, collection: str = "pagemill") -> dict[str, int]:
    from pymilvus import MilvusClient

    from operators.stores.milvus.client import release_lite

    c = MilvusClient(str(out / "milvus.db"))
    try:
        return {n: int(c.query(n, filter="", output_fields=["count(*)"])[0]["count(*)"]) for n in sorted(c.list_collections())}
    finally:
        c.close()
        release_lite(str(out / "milvus.db"))


@pytest.fixture(scope="module")
def src(small_corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("id-src")
    shutil.copytree(small_corpus.root, d, dirs_exist_ok=True)
    return d


def test_layouts_added_to_an_index_come_from_the_archive(src, tmp_path):
    """--layouts on an existing index: no model runs; the new columns equal a fresh ingest's
    with those layouts, and so do the Milvus rows."""
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    ingest(src, out)
    added = ingest(src, out, "--layouts", "mv-rowcol,mv-pool2-bin,sv-fde")
    assert added["pages"]["embedded"] == 0 and added["pages"]["relayouted"] == added["pages"]["relayouted"] > 0
    assert added["index"]["added"] == ["mv-rowcol", "mv-pool2-bin", "sv-fde"]
    ingest(src, fresh, "--layouts", "mv-rowcol,mv-pool2-bin,sv-fde")
    a, b = committed_pages(out), committed_pages(fresh)
    assert a.num_rows == b.num_rows == added["pages"]["relayouted"]
    for col in ("mv_rowcol", "mv_pool2_bin", "sv_fde", "mv", "sv_mean"):
        assert a[col].equals(b[col]), col  # bit for bit
    # Milvus: the same rows per layout (an sv layout added to an existing page collection gets
    # its own collection: a collection cannot gain a field)
    rows_a, rows_b = milvus_rows(out), milvus_rows(fresh)
    assert rows_a.pop("pagemill_sv_fde") == rows_b["pagemill_pages"]
    assert {k: v for k, v in rows_b.items()} == rows_a
    # the index knows, and a plain run afterwards has nothing to do
    again = ingest(src, out)
    assert again["pages"]["embedded"] == again["pages"]["relayouted"] == 0
    assert set(json.loads((out / "_index.json").read_text())["active"]["layouts"]) == {
        "mv", "sv-mean", "mv-rowcol", "mv-pool2-bin", "sv-fde"}
    # a layout removed from Milvus only when asked
    dropped = ingest(src, out, "--drop-layouts", "mv-rowcol")
    assert dropped["index"]["dropped"] == ["mv-rowcol"] and "pagemill_patches_rowcol" not in milvus_rows(out)
    assert main(["relayout", str(out), "--layouts", "mv-int8", "--executor", "local", "--quiet"]) == 0
    assert "mv_int8" in committed_pages(out).column_names


@pytest.mark.slow
def test_a_model_change_is_refused_then_reindexed_through_a_crash(src, tmp_path, capsys):
    out = tmp_path / "out"
    first = ingest(src, out)
    old_pages = committed_pages(out)
    assert ingest(src, out, "--model", "colpali-tiny", expect=2) == {}
    err = capsys.readouterr().err
    assert "holds an index of colqwen2-tiny" in err and "colpali-tiny" in err
    assert "--reindex" in err and "new --out" in err
    # --reindex, killed after two units of the new generation committed
    killed = subprocess.run(pagemill_cmd("ingest", str(src), "--out", str(out), *BASE, "--model", "colpali-tiny",
                                         "--reindex"), cwd=REPO, env=dict(os.environ, PAGEMILL_KILL_AT="committed:2"),
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    state = json.loads((out / "_index.json").read_text())
    assert state["active"]["model"]["name"] == "colqwen2-tiny" and state["pending"]["model"]["name"] == "colpali-tiny"
    # During: readers see the old index whole (no page twice, no page of the new model), search works.
    during = committed_pages(out)
    assert during.equals(old_pages)
    assert set(during["model"].to_pylist()) == {"colqwen2-tiny"}
    assert main(["search", "a table", "--out", str(out), "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    status = json.loads(_status(out))
    assert status["reindex"]["documents_done"] == 4 and status["reindex"]["of"] == first["documents"]["seen"]
    # the resume finishes the new generation, swaps it in, retires the old one
    done = ingest(src, out, "--model", "colpali-tiny", "--reindex")
    assert done["index"]["swapped"] and done["index"]["generation"] == 2
    assert done["documents"]["skipped_unchanged"] == 4  # the units committed before the crash are not redone
    after = committed_pages(out)
    assert set(after["model"].to_pylist()) == {"colpali-tiny"}
    assert after["page_id"].to_pylist() == old_pages["page_id"].to_pylist()  # every page once, each new
    assert sorted(Counter(after["source_uri"].to_pylist()).items()) == sorted(Counter(old_pages["source_uri"].to_pylist()).items())
    rows = milvus_rows(out)
    assert set(rows) == {"pagemill_g2_pages", "pagemill_g2_patches"}  # the old collections are gone
    assert rows["pagemill_g2_pages"] == after.num_rows
    assert main(["search", "a table", "--out", str(out), "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    from pymilvus import MilvusClient

    from operators.stores.milvus.client import release_lite

    c = MilvusClient(str(out / "milvus.db"))
    try:  # the index's names now reach the new generation
        assert c.describe_alias("pagemill_pages")["collection_name"] == "pagemill_g2_pages"
    finally:
        c.close()
        release_lite(str(out / "milvus.db"))
    # only the new generation's files remain, and a plain run needs no --model now
    assert not any(p.name.endswith(".parquet") and p.name not in {Path(f).name for f in
                   json.loads((out / "pages" / "_manifest.json").read_text())["files"]} for p in (out / "pages").iterdir())
    assert ingest(src, out)["pages"]["embedded"] == 0


def test_a_text_model_added_later_embeds_only_the_text(src, tmp_path, capsys):
    out = tmp_path / "out"
    ingest(src, out)
    added = ingest(src, out, "--model", "colqwen2-tiny,text:all-MiniLM-L6-v2")
    assert added["pages"]["embedded"] == 0 and added["index"]["added"] == ["text"]
    pages = committed_pages(out)
    with_text = [i for i, v in enumerate(pages["sv_text"].to_pylist()) if v is not None]
    chunks = pages["text_chunks"].to_pylist()
    assert with_text and milvus_rows(out)["pagemill_text"] == sum(len(chunks[i]) for i in with_text)  # a row a chunk
    assert main(["search", "table", "--out", str(out), "--stage1", "text", "--rerank", "none", "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2
    # the chunks' text went with them: Milvus' BM25 finds a word of a page
    word = max((w for t in pages["text"].to_pylist() if t for w in t.split() if w.isalpha()), key=len)
    assert main(["search", word, "--out", str(out), "--stage1", "text-bm25", "--rerank", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"]
    # a single-vector model added later: the pages are rendered again for it, nothing else runs
    sv = ingest(src, out, "--model", "colqwen2-tiny,text:all-MiniLM-L6-v2,sv:qwen3-vl-embedding-tiny")
    assert sv["pages"]["embedded"] == 0 and sv["index"]["added"] == ["sv-vlm"]
    pages = committed_pages(out)
    assert all(v is not None for v in pages["sv_vlm"].to_pylist())
    assert pages["sv_text"].equals(committed_pages(out)["sv_text"])
    assert milvus_rows(out)["pagemill_sv_vlm"] == pages.num_rows
    assert main(["search", "table", "--out", str(out), "--stage1", "sv-vlm", "--rerank", "none", "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2


def _status(out: Path, *extra) -> str:
    r = subprocess.run(pagemill_cmd("status", str(out), "--json", *extra), cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.slow
def test_status_of_a_healthy_and_a_crashed_out(src, tmp_path):
    out = tmp_path / "out"
    ingest(src, out)
    healthy = json.loads(_status(out))
    assert healthy["healthy"] and healthy["problems"] == []
    assert healthy["documents"]["total"] == healthy["documents"]["indexed"] + healthy["documents"]["quarantined"] \
        + healthy["documents"]["partial"]
    assert all(m["rows"] == m["expected"] for m in healthy["milvus"].values() if m["expected"] is not None)
    assert healthy["quarantine"] and all(g["examples"] for g in healthy["quarantine"].values())
    assert healthy["runs"][0]["pages"]["indexed"] == healthy["pages"]
    # a crash between a unit's files and its ledger record: files no commit accounts for
    crashed = tmp_path / "crashed"
    r = subprocess.run(pagemill_cmd("ingest", str(src), "--out", str(crashed), *BASE), cwd=REPO,
                       env=dict(os.environ, PAGEMILL_KILL_AT="vectors_written:3"), capture_output=True)
    assert r.returncode == -signal.SIGKILL
    s = json.loads(_status(crashed))
    assert not s["healthy"] and s["uncommitted_files"] and "interrupted run" in s["problems"][0]
    # read-only: status created nothing and removed nothing
    assert json.loads(_status(crashed))["uncommitted_files"] == s["uncommitted_files"]
    q = subprocess.run(pagemill_cmd("quarantine", str(out), "--json"), cwd=REPO, capture_output=True, text=True)
    assert q.returncode == 0 and {r["reason"] for r in json.loads(q.stdout)} == set(healthy["quarantine"])


@pytest.mark.slow
def test_readers_see_only_committed_shards_after_a_crash_mid_rewrite(src, tmp_path, capsys):
    """A changed document: its unit's new part is written and the older shard rewritten without
    it, then the run dies before the ledger record. The report, search and fidelity must not see
    a page twice (the rewritten file and its original are both on disk)."""
    work = tmp_path / "src"
    shutil.copytree(src, work)
    out = tmp_path / "out"
    ingest(work, out)
    before = committed_pages(out)
    one = next(u for u, n in Counter(before["source_uri"].to_pylist()).items() if n == 1)
    path = Path(one.replace("file://", "").replace("%2B", "+"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a new version
    r = subprocess.run(pagemill_cmd("ingest", str(work), "--out", str(out), *BASE), cwd=REPO,
                       env=dict(os.environ, PAGEMILL_KILL_AT="rewritten:1"), capture_output=True)
    assert r.returncode == -signal.SIGKILL
    on_disk = ds.dataset(str(out / "pages"), format="parquet").to_table()
    assert on_disk.num_rows > before.num_rows  # the leftovers a glob of pages/ would show
    assert committed_pages(out).equals(before)
    assert main(["report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pages_measured"] == before.num_rows
    assert main(["search", "table", "--out", str(out), "-k", "200", "--candidates", "200", "--json"]) == 0
    ids = [r["page_id"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert len(ids) == len(set(ids)) == before.num_rows
    assert main(["fidelity", str(out), "--queries", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pages"] == before.num_rows


def test_the_readme_readers_read_exactly_the_committed_pages(src, tmp_path):
    """The README's block for pyarrow, DuckDB and Polars, run against an OUT with a crashed
    run's leftovers beside the committed shards."""
    import re

    from conftest import REPO

    out = tmp_path / "out"
    ingest(src, out)
    committed = committed_pages(out)
    r = subprocess.run(pagemill_cmd("ingest", str(src), "--out", str(out), *BASE, "--layouts", "mv-pool3"), cwd=REPO,
                       env=dict(os.environ, PAGEMILL_KILL_AT="committed:1"), capture_output=True)
    shutil.copy(next((out / "pages").glob("*.parquet")), out / "pages" / "leftover-of-a-dead-run.parquet")
    block = re.search(r"<!-- readers -->\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    scope: dict = {}
    exec(block.replace('Path("demo-out")', f"Path({str(out)!r})"), scope)  # noqa: S102 - the README's own code
    assert r.returncode in (0, -signal.SIGKILL)
    assert scope["pages"].num_rows == scope["n"] == committed.num_rows
    assert sorted(scope["per_doc"]) == sorted(Counter(committed["source_uri"].to_pylist()).items())
