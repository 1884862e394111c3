"""Metrics: a real ingest pushes to a real Prometheus Pushgateway (Debian's prometheus-pushgateway,
started here) and writes node exporter's textfile; both are read back with prometheus_client's
parser and checked against the run's summary. A failed run reports its exit status and keeps the
last success time; a Pushgateway that does not answer is one warning, and the run succeeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request

import pytest
from conftest import build_corpus, free_port, read_tsv
from prometheus_client.parser import text_string_to_metric_families

from pipelines.cli import main
from pipelines.ingest.metrics import METRICS, instance_name

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory):
    """A Pushgateway on a free loopback port, for this module."""
    if not os.path.exists(PUSHGATEWAY):
        pytest.fail(f"{PUSHGATEWAY} is missing: apt-get install prometheus-pushgateway")
    port = free_port()
    log = open(tmp_path_factory.mktemp("pushgateway") / "log", "wb")
    proc = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the Pushgateway did not start (see {log.name})")
            time.sleep(0.05)  # (waiting for it to listen, with a deadline)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        return r.read().decode()


def pagemill_samples(text: str, **group) -> dict[tuple, float]:
    """(name, ((label, value), ...)) -> value of the pagemill_ samples of ``group`` (job and
    instance on a Pushgateway), its labels left out."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("pagemill_") and all(s.labels.get(k) == v for k, v in group.items()):
                out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in group)))] = s.value
    return out


def by_label(samples: dict, name: str) -> dict[str, float]:
    return {labels[0][1]: v for (n, labels), v in samples.items() if n == name}


def value(samples: dict, name: str) -> float | None:
    return samples.get((name, ()))


@pytest.fixture(scope="module")
def metered_run(pushgateway, tmp_path_factory):
    """Two one-page documents and a broken PDF through the CLI with --pushgateway and
    --metrics-textfile; the gateway watched during the run for a heartbeat's push. What the
    gateway and the file held at the end is kept (later tests change them)."""
    rows = [r for r in read_tsv("SMOKE.tsv") if r["category"] == "charts" and r["expectation"] == "ok"
            and r["pages_to_use"] == "0"][:2]
    src = tmp_path_factory.mktemp("metered_src")
    build_corpus(src, rows, with_timeout_doc=False)
    (src / "broken.pdf").write_text("meeting notes, not a PDF\n" * 20)
    out = tmp_path_factory.mktemp("metered_out")
    textfile = out.parent / "pagemill-metered.prom"
    summary_path = out.parent / "metered-summary.json"
    group = {"job": "pagemill", "instance": instance_name(str(out))}

    stop, heartbeats = threading.Event(), []

    def watch():  # a push before the end has the run's samples and no exit status yet
        while not stop.wait(0.05):
            s = pagemill_samples(scrape(pushgateway), **group)
            if value(s, "pagemill_run_duration_seconds") is not None and value(s, "pagemill_run_exit_status") is None:
                heartbeats.append(s)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.time()
    rc = main(["ingest", str(src), "--out", str(out), "--executor", "local", "--pushgateway", pushgateway,
               "--metrics-textfile", str(textfile), "--progress-interval", "0.2", "--summary", str(summary_path),
               "--quiet"])
    t1 = time.time()
    stop.set()
    watcher.join()
    return dict(rc=rc, src=src, out=out, textfile=textfile, group=group, t0=t0, t1=t1, heartbeats=heartbeats,
                summary=json.loads(summary_path.read_text()),
                gateway=pagemill_samples(scrape(pushgateway), **group),
                file=pagemill_samples(textfile.read_text()))


@pytest.mark.slow
def test_the_pushgateway_holds_what_the_summary_says(metered_run):
    r = metered_run
    s, g = r["summary"], r["gateway"]
    assert r["rc"] == 0
    assert {name for name, _ in g} <= set(METRICS)
    pages, docs = by_label(g, "pagemill_pages_total"), by_label(g, "pagemill_documents_total")
    assert pages["indexed"] == s["pages"]["indexed"] == 2
    assert docs["indexed"] == s["documents"]["indexed"] == 2
    assert docs["quarantined"] == s["documents"]["quarantined"] == 1
    assert by_label(g, "pagemill_quarantined_total") == {"open_error": 1} == {
        q["reason"]: 1 for q in s["quarantine"]}
    assert value(g, "pagemill_run_exit_status") == 0
    assert r["t0"] <= value(g, "pagemill_run_success_timestamp_seconds") <= r["t1"]
    assert s["wall_s"] <= value(g, "pagemill_run_duration_seconds") <= r["t1"] - r["t0"]
    assert value(g, "pagemill_pages_per_second") == s["pages_per_s"] > 0
    store = s["milvus"]
    assert by_label(g, "pagemill_store_rows") == store["row_counts"]
    assert by_label(g, "pagemill_store_rows_written_total") == store["rows_written"]
    assert by_label(g, "pagemill_archive_rows") == {"pagemill_pages": 2}  # the rows of a page: one
    shares = by_label(g, "pagemill_stage_busy_share")
    assert {"render", "embed", "encode", "write", "commit"} <= set(shares)
    assert shares["embed"] == s["stages"]["embed"]["utilisation"] and all(0 <= v <= 1 for v in shares.values())


@pytest.mark.slow
def test_the_textfile_holds_the_same(metered_run):
    assert metered_run["file"] == metered_run["gateway"]
    assert not [p for p in metered_run["textfile"].parent.iterdir() if p.name.startswith("pagemill-metered.prom.")]


@pytest.mark.slow
def test_the_heartbeat_pushed_before_the_end(metered_run):
    assert metered_run["heartbeats"], "no push before the end of the run"
    first = metered_run["heartbeats"][0]
    assert value(first, "pagemill_run_success_timestamp_seconds") is None  # a first run: none yet


@pytest.mark.slow
def test_a_failed_run_reports_its_status_and_keeps_the_last_success(metered_run, pushgateway):
    from operators.io.store import LocalStore
    from pipelines.out.lock import RunLock

    r = metered_run
    success = value(pagemill_samples(scrape(pushgateway), **r["group"]), "pagemill_run_success_timestamp_seconds")
    in_file = value(pagemill_samples(r["textfile"].read_text()), "pagemill_run_success_timestamp_seconds")
    assert success is not None and in_file is not None
    args = ["ingest", str(r["src"]), "--out", str(r["out"]), "--executor", "local", "--pushgateway", pushgateway,
            "--metrics-textfile", str(r["textfile"]), "--quiet"]
    holder = RunLock(LocalStore(r["out"]), "run-elsewhere", lease_s=60)
    holder.acquire()  # the job fails inside, once it has the index open: exit 1
    try:
        assert main(args) == 1
    finally:
        holder.release()
    for code, extra in ((1, []), (2, ["--layouts", "no-such-layout"])):  # a refused option: exit 2
        if extra:
            assert main(args + extra) == 2
        g = pagemill_samples(scrape(pushgateway), **r["group"])
        f = pagemill_samples(r["textfile"].read_text())
        assert value(g, "pagemill_run_exit_status") == value(f, "pagemill_run_exit_status") == code
        assert value(g, "pagemill_run_success_timestamp_seconds") == success
        assert value(f, "pagemill_run_success_timestamp_seconds") == in_file


@pytest.mark.slow
def test_an_unreachable_pushgateway_is_a_warning(metered_run, tmp_path, capsys):
    r = metered_run
    textfile = tmp_path / "again.prom"
    rc = main(["ingest", str(r["src"]), "--out", str(r["out"]), "--executor", "local", "--pushgateway",
               f"http://127.0.0.1:{free_port()}", "--metrics-textfile", str(textfile), "--quiet"])
    assert rc == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning: metrics not written" in line]
    assert len(warnings) == 1 and "Pushgateway" in warnings[0]
    f = pagemill_samples(textfile.read_text())
    assert value(f, "pagemill_run_exit_status") == 0
    assert by_label(f, "pagemill_documents_total")["unchanged"] == r["summary"]["documents"]["seen"] == 3


@pytest.mark.parametrize("flag, given, key", [("--pushgateway", "pushgateway:9091", "pushgateway"),
                                              ("--pushgateway", "http://user:hunter22@gw:9091", "pushgateway"),
                                              ("--metrics-textfile", "metrics.txt", "metrics_textfile")])
def test_a_bad_metrics_option_is_one_line(flag, given, key, tmp_path, capsys):
    rc = main(["ingest", str(tmp_path), "--out", str(tmp_path / "out"), flag, given, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"config error: {key}: " in err[0]
    assert "hunter22" not in err[0]
    assert not (tmp_path / "out").exists()
