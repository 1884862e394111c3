"""Bad input contained and replayable: passwords, retrying quarantined documents."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from conftest import CORPUS, milvus_counts, read_pages, read_quarantine

from pipelines.cli import main

ENCRYPTED = "encrypted/Unstructured-IO+unstructured__password.pdf"


def _run(src, out, *extra):
    summary = out.parent / f"{out.name}-{len(list(out.parent.glob(out.name + '-*.json')))}.json"
    assert main(["ingest", str(src), "--out", str(out), "--executor", "local", "--unit-max-docs", "3",
                 "--summary", str(summary), "--quiet", *extra]) == 0
    return json.loads(summary.read_text())


def test_retry_quarantined_after_adding_passwords(small_corpus, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(small_corpus.root, src)
    (src / "encrypted").mkdir(exist_ok=True)
    shutil.copyfile(CORPUS / ENCRYPTED, src / ENCRYPTED)
    out = tmp_path / "out"
    first = _run(src, out)
    reasons = Counter(e["reason"] for e in first["quarantine"])
    assert reasons["encrypted"] >= 1
    q_before = read_quarantine(out)
    pages_before = read_pages(out)

    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("*unstructured__password.pdf\tnot-it\n")
    again = _run(src, out, "--retry-quarantined", "--passwords", str(wrong))
    assert again["documents"]["retried"] == first["documents"]["quarantined"]
    assert again["pages"]["embedded"] == 0
    assert "wrong_password" in {e["reason"] for e in again["quarantine"]}

    fixed = _run(src, out, "--retry-quarantined", "--passwords", str(CORPUS / "PASSWORDS.tsv"))
    assert fixed["documents"]["indexed"] >= 1 and fixed["pages"]["embedded"] >= 1
    # the unlocked documents left quarantine; the others are there once each, as before
    after = Counter(read_quarantine(out)["source_uri"].to_pylist()) if any((out / "quarantine").iterdir()) else Counter()
    unlocked = set(q_before["source_uri"].to_pylist()) - set(after)
    assert any(u.endswith("unstructured__password.pdf") for u in unlocked)
    assert len(unlocked) == fixed["documents"]["indexed"]
    assert after == Counter(u for u in q_before["source_uri"].to_pylist() if u not in unlocked)
    pages = read_pages(out)
    assert pages.num_rows == pages_before.num_rows + fixed["pages"]["embedded"]
    assert len(set(pages["page_id"].to_pylist())) == pages.num_rows
    assert milvus_counts(out)["pages"] == pages.num_rows
    # a normal run afterwards has nothing to do
    assert _run(src, out)["pages"]["embedded"] == 0


def test_a_second_run_on_the_same_out_refuses(small_corpus, tmp_path, capsys):
    import time

    from operators.io.store import LocalStore
    from pipelines.out.lock import LOCK_KEY, RunLock

    out = tmp_path / "out"
    holder = RunLock(LocalStore(out), "run-elsewhere", lease_s=60)
    holder.acquire()  # held by this (live) test process
    try:
        rc = main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--quiet"])
        assert rc == 1
        err = capsys.readouterr().err
        assert "another pagemill run holds" in err and "run-elsewhere" in err
        assert not (out / "_ledger").exists()  # it refused before doing anything
    finally:
        holder.release()
    assert not (out / LOCK_KEY).exists()
    # a dead run's lock: expired lease, taken over
    stale = RunLock(LocalStore(out), "dead-run", lease_s=60)
    stale.acquire()
    stale._stop.set()  # its heartbeat stops, as a dead run's does
    lock = json.loads((out / LOCK_KEY).read_text())
    lock["expires_at"] = time.time() - 1
    (out / LOCK_KEY).write_text(json.dumps(lock))
    assert main(["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--quiet"]) == 0
    assert not (out / LOCK_KEY).exists()


@pytest.mark.slow
def test_two_processes_at_once(small_corpus, tmp_path):
    import subprocess
    import time

    from conftest import REPO, pagemill_cmd

    out = tmp_path / "out"
    # The lock is the point: no torch to import, and an accelerator of a page a second keeps the
    # first run busy for as many seconds as the corpus has pages, whatever the machine's load.
    args = ["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--quiet",
            "--model", "sim:colqwen2-tiny@1"]
    first = subprocess.Popen(pagemill_cmd(*args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / "_lock.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(pagemill_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first run ended before the second started"
    assert second.returncode == 1 and "another pagemill run holds" in second.stderr
    assert first.wait(timeout=300) == 0


def test_delete_missing_removes_pages_and_rows(small_corpus, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(small_corpus.root, src)
    out = tmp_path / "out"
    _run(src, out)
    before = read_pages(out)
    victim_uri, victim_pages = Counter(before["source_uri"].to_pylist()).most_common(1)[0]
    victim = src / victim_uri.split("/src/", 1)[1].replace("%2B", "+")
    victim.unlink()
    kept = _run(src, out)  # without the flag nothing is removed
    assert kept["documents"]["deleted"] == 0 and read_pages(out).num_rows == before.num_rows
    gone = _run(src, out, "--delete-missing")
    assert gone["documents"]["deleted"] == 1 and gone["pages"]["deleted"] == victim_pages
    after = read_pages(out)
    assert victim_uri not in set(after["source_uri"].to_pylist())
    assert after.num_rows == before.num_rows - victim_pages
    assert milvus_counts(out)["pages"] == after.num_rows
    assert milvus_counts(out)["patches"] == sum(after["n_vectors"].to_pylist())
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ingest", str(empty), "--out", str(out), "--executor", "local", "--delete-missing", "--quiet"]) == 2


def test_ledger_compaction_keeps_the_state(small_corpus, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(small_corpus.root, src)
    out = tmp_path / "out"
    first = _run(src, out, "--unit-max-docs", "2", "--ledger-compact-every", "3")
    assert first["units"]["committed"] >= 4
    assert list((out / "_ledger" / "units").glob("*.json")) == []
    assert len(list((out / "_ledger" / "snapshots").glob("*/meta.json"))) == 1
    again = _run(src, out, "--unit-max-docs", "2", "--ledger-compact-every", "3")
    assert again["pages"]["embedded"] == 0 and again["documents"]["skipped_unchanged"] == again["documents"]["seen"]
    # a change after compaction still replaces the right pages
    pages = read_pages(out)
    one = next(u for u, n in Counter(pages["source_uri"].to_pylist()).items() if n == 1)
    two = next(u for u, n in Counter(pages["source_uri"].to_pylist()).items() if n >= 2)
    path = lambda u: src / u.split("/src/", 1)[1].replace("%2B", "+")  # noqa: E731
    shutil.copyfile(path(two), path(one))
    changed = _run(src, out, "--unit-max-docs", "2", "--ledger-compact-every", "3")
    assert changed["documents"]["replaced_versions"] == 1
    after = read_pages(out)
    assert len(set(after["page_id"].to_pylist())) == after.num_rows
    assert Counter(after["source_uri"].to_pylist())[one] == Counter(pages["source_uri"].to_pylist())[two]


def _milvus_server(data_dir, port):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import wait_for_port

    proc = subprocess.Popen([str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir", str(data_dir),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc


@pytest.mark.slow
def test_milvus_server_stops_mid_run_then_comes_back(small_corpus, tmp_path):
    import subprocess
    import time

    from conftest import REPO, free_port, pagemill_cmd
    from pymilvus import MilvusClient

    port = free_port()
    data = tmp_path / "milvus-data"
    server = _milvus_server(data, port)
    uri = f"http://127.0.0.1:{port}"
    out = tmp_path / "out"
    args = ["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--unit-max-docs", "2",
            "--milvus", uri, "--milvus-timeout", "5", "--quiet"]
    try:
        run = subprocess.Popen(pagemill_cmd(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        ledger = out / "_ledger" / "units"
        deadline = time.monotonic() + 120
        while (not ledger.is_dir() or len(list(ledger.glob("*.json"))) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()
        server.wait()
        _, err = run.communicate(timeout=180)
        assert run.returncode == 1
        lines = [line for line in err.splitlines() if line.startswith("pagemill:")]
        assert len(lines) == 1 and f"Milvus at {uri}" in lines[0], err[-2000:]
        committed = len(list(ledger.glob("*.json")))
        assert 2 <= committed < 6
        server = _milvus_server(data, port)  # back, same data
        assert subprocess.run(pagemill_cmd(*args), cwd=REPO, capture_output=True, timeout=300).returncode == 0
        pages = read_pages(out)
        assert sorted(pages["page_id"].to_pylist()) == sorted(small_corpus.expected_page_ids())
        client = MilvusClient(uri)
        for name in ("pagemill_pages", "pagemill_patches"):
            client.load_collection(name)
        count = client.query("pagemill_pages", filter="", output_fields=["count(*)"], consistency_level="Strong")
        patches = client.query("pagemill_patches", filter="", output_fields=["count(*)"], consistency_level="Strong")
        client.close()
        assert count[0]["count(*)"] == pages.num_rows
        assert patches[0]["count(*)"] == sum(pages["n_vectors"].to_pylist())
    finally:
        server.kill()
        server.wait()


@pytest.mark.slow
def test_full_disk_for_out_fails_cleanly_and_resumes(small_corpus, tmp_path):
    """OUT on a real 200 KB tmpfs: the run stops with one line when the disk is full, commits
    nothing half-way, and after the filesystem grows a re-run completes with the same result."""
    import subprocess

    from conftest import REPO, pagemill_cmd

    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(out)], check=True)
    try:
        args = ["ingest", str(small_corpus.root), "--out", str(out), "--executor", "local", "--unit-max-docs", "2",
                "--milvus", str(tmp_path / "m.db"), "--quiet"]
        r = subprocess.run(pagemill_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 1
        lines = [line for line in r.stderr.splitlines() if line.startswith("pagemill:")]
        assert len(lines) == 1 and "No space left on device" in lines[0], r.stderr[-1500:]
        records = list((out / "_ledger" / "units").glob("*.json"))
        for rec in records:  # every committed unit's files are whole and readable
            for f in json.loads(rec.read_text())["files"]:
                import pyarrow.parquet as pq

                pq.read_table(out / f["key"])
        assert not list(out.rglob(".*.tmp"))  # no partial temp files left behind
        subprocess.run(["mount", "-o", "remount,size=50m", str(out)], check=True)
        assert subprocess.run(pagemill_cmd(*args), cwd=REPO, capture_output=True, timeout=300).returncode == 0
        pages = read_pages(out)
        assert sorted(pages["page_id"].to_pylist()) == sorted(small_corpus.expected_page_ids())
    finally:
        subprocess.run(["umount", "-l", str(out)])
