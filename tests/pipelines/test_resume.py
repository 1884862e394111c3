"""Crash and resume: SIGKILL the driver, run again, end with the same index as a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import REPO, milvus_counts, pagemill_cmd, read_pages

ARGS = ["--executor", "local", "--unit-max-docs", "2", "--quiet"]


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
    ("milvus_written", 3, 2),   # shard and Milvus rows written, ledger record not
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
    if point in ("shard_written", "milvus_written"):
        assert summary["units"]["orphan_files_removed"] >= 1
    _same_index(out, clean_run)
