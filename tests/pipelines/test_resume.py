"""Crash and resume: SIGKILL the driver, run again, end with the same index as a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import REPO, milvus_counts, pagemill_cmd, read_pages

# The model is the simulated accelerator (colqwen2-tiny's shapes, vectors deterministic per page):
# what these tests pin is the ledger, the shards and the store, and a pagemill process that imports
# no torch starts in a second, not five. (Crashes and resumes with real checkpoints: test_lancedb's
# at each point, test_index_identity's reindex, test_archives'.)
ARGS = ["--executor", "local", "--unit-max-docs", "2", "--quiet", "--model", "sim:colqwen2-tiny"]


@pytest.fixture(scope="module")
def clean_run(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    subprocess.run(pagemill_cmd("ingest", str(small_corpus.root), "--out", str(out), *ARGS), check=True, cwd=REPO)
    return out


def _same_index(out, clean):
    a, b = read_pages(out), read_pages(clean)
    ids = a["page_id"].to_pylist()
    assert len(ids) == len(set(ids)), "duplicate pages after resume"
    assert set(ids) == set(b["page_id"].to_pylist())
    assert milvus_counts(out) == milvus_counts(clean)


def _ledger_records(out):
    d = out / "_ledger" / "units"
    return len(list(d.glob("*.json"))) if d.is_dir() else 0


def test_sigkill_midway_then_rerun(small_corpus, clean_run, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(pagemill_cmd("ingest", str(small_corpus.root), "--out", str(out), *ARGS), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _ledger_records(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for a state, not timing anything
    assert proc.poll() is None, "the run finished before it could be killed; use a larger corpus"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = _ledger_records(out)
    assert 2 <= committed < 6
    rerun = subprocess.run(pagemill_cmd("ingest", str(small_corpus.root), "--out", str(out), *ARGS,
                                        "--summary", str(tmp_path / "s.json")), cwd=REPO)
    assert rerun.returncode == 0
    _same_index(out, clean_run)


@pytest.mark.parametrize("point,n,committed", [
    ("listing", 5, 0),          # while listing the source (units stream: some may have committed)
    ("rendered", 3, 2),         # after the third unit rendered, before it was embedded
    ("embedded", 3, 2),         # after it was embedded, before any write
    ("milvus_upsert", 5, 2),    # in the middle of Milvus upserts
    ("shard_written", 3, 2),    # shard on disk, not committed
    ("vectors_written", 3, 2),   # shard and Milvus rows written, ledger record not
])
def test_sigkill_at_each_point_then_rerun(small_corpus, clean_run, tmp_path, point, n, committed):
    """SIGKILL of the driver at several points, then a re-run: the same pages and Milvus rows as
    an uninterrupted run, nothing twice, and only uncommitted units redone (reported)."""
    import json

    out = tmp_path / "out"
    env = dict(os.environ, PAGEMILL_KILL_AT=f"{point}:{n}")
    killed = subprocess.run(pagemill_cmd("ingest", str(small_corpus.root), "--out", str(out), *ARGS), cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL
    done = _ledger_records(out)
    if point != "listing":
        assert done == committed
    rerun = subprocess.run(pagemill_cmd("ingest", str(small_corpus.root), "--out", str(out), *ARGS,
                                        "--summary", str(tmp_path / "s.json")), cwd=REPO)
    assert rerun.returncode == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["documents"]["skipped_unchanged"] == 2 * done  # committed units are not redone
    if point in ("shard_written", "vectors_written"):
        assert summary["units"]["orphan_files_removed"] >= 1
    _same_index(out, clean_run)


def _pdf_path(uri: str):
    from pathlib import Path

    return Path(uri.replace("file://", "").replace("%2B", "+"))


def _shrink_one_of(uris, src) -> tuple[str, int]:
    """Overwrite the document of ``uris`` with the most pages by a one-page PDF of ``src``: a new
    version with fewer pages, whose stale Milvus rows upserts would not replace."""
    import shutil

    import pymupdf

    def pages(path):
        with pymupdf.open(path) as d:
            return d.page_count

    n, target = max((pages(_pdf_path(u)), u) for u in uris)
    assert n >= 2, uris
    one_page = next(p for p in sorted(src.rglob("*.pdf")) if not p.name.startswith("test_") and pages(p) == 1)
    shutil.copyfile(one_page, _pdf_path(target))
    return target, n


def _milvus_matches_parquet(out, milvus_out=None):
    pages = read_pages(out)
    counts = milvus_counts(milvus_out or out)
    assert counts == {"pages": pages.num_rows, "patches": sum(pages["n_vectors"].to_pylist())}


def test_a_document_changed_after_a_crash_between_milvus_and_the_ledger_leaves_no_stale_rows(
        small_corpus, clean_run, tmp_path):
    """Commits delete other versions' rows only for documents Milvus may hold: those the ledger
    knows and those of a commit that died after its Milvus writes. Here the second unit dies
    there, one of its documents then loses pages, and the rerun must still delete its old rows."""
    import json
    import shutil

    import pyarrow.parquet as pq

    src = tmp_path / "src"
    shutil.copytree(small_corpus.root, src)
    out = tmp_path / "out"
    args = ["ingest", str(src), "--out", str(out), *ARGS]
    killed = subprocess.run(pagemill_cmd(*args), cwd=REPO, env=dict(os.environ, PAGEMILL_KILL_AT="vectors_written:2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL and _ledger_records(out) == 1
    live = {f["key"] for p in (out / "_ledger" / "units").glob("*.json") for f in json.loads(p.read_text())["files"]}
    orphan = [p for p in (out / "pages").glob("*.parquet") if f"pages/{p.name}" not in live]
    assert len(orphan) == 1
    target, n_old = _shrink_one_of(set(pq.read_table(orphan[0])["source_uri"].to_pylist()), src)
    rerun = subprocess.run(pagemill_cmd(*args, "--summary", str(tmp_path / "s.json")), cwd=REPO)
    assert rerun.returncode == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["units"]["orphan_files_removed"] == 1
    assert summary["milvus"]["delete_calls"] == 2  # the suspect unit only, in both collections
    pages = read_pages(out)
    assert pages["source_uri"].to_pylist().count(target) == 1 < n_old
    _milvus_matches_parquet(out)
    assert not (out / "_ledger" / "milvus_suspects.json").exists()  # settled: the ledger knows them now


def test_milvus_rows_an_empty_ledger_cannot_explain_make_every_commit_delete(small_corpus, clean_run, tmp_path):
    """A collection kept while OUT was removed (or shared with another OUT): its rows are not in
    the ledger, so the run deletes other versions' rows for every document it commits."""
    import json
    import shutil

    src = tmp_path / "src"
    shutil.copytree(small_corpus.root, src)
    first = tmp_path / "first"
    assert subprocess.run(pagemill_cmd("ingest", str(src), "--out", str(first), *ARGS), cwd=REPO).returncode == 0
    target, n_old = _shrink_one_of(set(read_pages(first)["source_uri"].to_pylist()), src)
    second = tmp_path / "second"
    run = subprocess.run(pagemill_cmd("ingest", str(src), "--out", str(second), "--milvus", str(first / "milvus.db"),
                                      *ARGS, "--summary", str(tmp_path / "s.json")),
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "every commit deletes other versions' rows" in run.stderr
    assert json.loads((tmp_path / "s.json").read_text())["milvus"]["delete_calls"] > 0
    assert read_pages(second)["source_uri"].to_pylist().count(target) == 1 < n_old
    _milvus_matches_parquet(second, milvus_out=first)
    assert not (second / "_ledger" / "milvus_suspects.json").exists()


def test_a_document_back_at_its_committed_version_after_such_a_crash_is_resynced(small_corpus, tmp_path):
    """The dead commit wrote a new version's rows (and deleted the committed version's); then the
    file went back to the committed version, so the rerun skips it as unchanged. Milvus must end
    with the committed version's rows, upserted again from the shards."""
    import json
    import shutil

    import pymupdf

    src = tmp_path / "src"
    shutil.copytree(small_corpus.root, src)
    out = tmp_path / "out"
    args = ["ingest", str(src), "--out", str(out), *ARGS]
    assert subprocess.run(pagemill_cmd(*args), cwd=REPO).returncode == 0
    committed = read_pages(out)
    pages_of = {u: n for u, n in zip(*committed.group_by("source_uri").aggregate([("page_id", "count")]).to_pydict().values())}
    target = next(u for u, n in sorted(pages_of.items()) if n == 1)
    path = _pdf_path(target)
    original, stat = path.read_bytes(), path.stat()
    donor = next(p for p in sorted(src.rglob("*.pdf")) if p != path and p.as_uri() in pages_of and pages_of[p.as_uri()] >= 2)
    path.write_bytes(donor.read_bytes() + b"\n% changed\n")  # another version (not a duplicate of the donor)
    killed = subprocess.run(pagemill_cmd(*args), cwd=REPO, env=dict(os.environ, PAGEMILL_KILL_AT="vectors_written:1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL
    path.write_bytes(original)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the committed version again (size + mtime)
    with pymupdf.open(path) as d:
        assert d.page_count == 1
    rerun = subprocess.run(pagemill_cmd(*args, "--summary", str(tmp_path / "s.json")), cwd=REPO)
    assert rerun.returncode == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["pages"]["embedded"] == 0 and summary["milvus"]["pages_resynced"] == 1
    assert read_pages(out).num_rows == committed.num_rows
    _milvus_matches_parquet(out)
    assert not (out / "_ledger" / "milvus_suspects.json").exists()
