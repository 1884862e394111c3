"""Shared fixtures: the real corpus, a real local Ray cluster, helpers to read outputs back.

Services are started once per test session (per worker: see SERVER_MODULES) on 127.0.0.1 and
stopped at the end.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds
import pymupdf
import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PAGEMILL_CORPUS", REPO.parent / "shared" / "corpus"))
TIMEOUT_DOC = "pathological/pymupdf__test_2548.pdf"
# What EXPECT.tsv's outcomes must become in OUT/quarantine.
REASON_FOR = {"open_error": "open_error", "zero_pages": "zero_pages", "needs_password(known)": "encrypted",
              "needs_password(unknown)": "encrypted", "timeout(>90s render)": "render_timeout"}
TRUNCATE_OVER = 3  # documents with more pages are copied with only SMOKE's pages_to_use


# What makes a test slow: a fixture that starts a real cluster or server, or a module whose tests
# kill and rerun jobs in subprocesses, run benchmarks, or run an outside engine on every test
# (Tesseract's OCR over scans, Prometheus' promtool). They are marked ``slow``, so that
# ``python -m pytest -m "not slow"`` is the developer's loop; CI runs everything.
SLOW_FIXTURES = {"ray_address", "milvus_server", "s3_endpoint", "two_nodes", "text_on_ray"}
SLOW_MODULES = {"test_resume", "test_rayjob_path", "test_benchmarks", "test_gpu_pinning", "test_fleet",
                "test_milvus_server", "test_s3_ingest", "test_archives", "test_alerts"}


# With ``-n 2`` the suite runs on two workers (pytest-xdist): on its own it keeps about
# one of two cores busy, waiting on servers, subprocesses and Ray. A module's tests run on one worker
# (its module fixtures are built once), and the modules that use the Milvus server share one: the
# server's embedded etcd takes fixed ports, so one server runs at a time. (xdist's own
# ``--dist loadgroup`` cannot do this under pytest 9: it renames items through an attribute pytest
# no longer reads.)
SERVER_MODULES = {"tests/infra/test_rayjob_path.py", "tests/pipelines/test_fleet.py",
                  "tests/pipelines/test_milvus_server.py"}


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByModuleServerTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "milvus-server" if module in SERVER_MODULES else module

    return ByModuleServerTogether(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures or item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        module = item.nodeid.split("::", 1)[0]
        if "milvus_server" in fixtures and module not in SERVER_MODULES:
            raise pytest.UsageError(f"{module} uses the Milvus server: add it to SERVER_MODULES in tests/conftest.py "
                                    f"(its tests must run on the server's worker)")


def pytest_configure(config):
    from pipelines.cli import fork_safe_grpc

    # Ray starts its workers at niceness 15 (RAY_worker_niceness), below every other process of
    # the session: on a busy machine (two workers of this suite, a CI host's other jobs) the
    # actors of a Ray test then get a sliver of a core. A local ingest of four PDFs next to two
    # busy loops took 233 s so, and 30 s at niceness 0. Ray's processes here (the session's, the
    # fleet's clusters, the ones pagemill starts in subprocesses) compete as equals.
    os.environ.setdefault("RAY_worker_niceness", "0")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two workers on two cores: torch in a worker (and the pagemill processes it starts) takes
        # one thread, as Ray's actors do, rather than two that contend with the other worker's.
        os.environ.setdefault("OMP_NUM_THREADS", "1")

    fork_safe_grpc()  # this process starts Ray nodes (a fork each) while its Milvus channels are open
    if not CORPUS.is_dir():
        raise pytest.UsageError(f"the shared corpus is missing at {CORPUS} (set PAGEMILL_CORPUS)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_tsv(name: str) -> list[dict]:
    with open(CORPUS / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def count_pages(path: Path) -> int:
    """Independent page count: PyMuPDF directly, not through pagemill."""
    with pymupdf.open(path) as doc:
        return doc.page_count


@dataclass
class Corpus:
    root: Path
    ok_pages: dict[str, int]  # file URI -> expected page count
    quarantined: dict[str, str]  # file URI -> expected reason

    def expected_page_ids(self) -> set[str]:
        from operators.schema import page_id_for

        return {page_id_for(uri, i) for uri, n in self.ok_pages.items() for i in range(n)}


def build_corpus(dest: Path, rows: list[dict], with_timeout_doc: bool) -> Corpus:
    """Copy corpus files (long documents cut to SMOKE's pages_to_use) and record expectations."""
    ok, quarantined = {}, {}
    for row in rows:
        src = CORPUS / row["file"]
        out = dest / row["file"]
        out.parent.mkdir(parents=True, exist_ok=True)
        exp = row["expectation"]
        if exp in ("ok", "ok_repaired") and row.get("pages_to_use") and count_pages(src) > TRUNCATE_OVER:
            with pymupdf.open(src) as doc:
                doc.select([int(p) for p in row["pages_to_use"].split(",")])
                doc.save(out, garbage=1)
        else:
            shutil.copyfile(src, out)
        if exp in ("ok", "ok_repaired"):
            ok[out.resolve().as_uri()] = count_pages(out)
        else:
            quarantined[out.resolve().as_uri()] = REASON_FOR[exp]
    if with_timeout_doc:
        out = dest / TIMEOUT_DOC
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / TIMEOUT_DOC, out)
        quarantined[out.resolve().as_uri()] = "render_timeout"
    return Corpus(dest, ok, quarantined)


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory) -> Corpus:
    """Every SMOKE.tsv file plus the never-finishing render, as a folder of PDFs."""
    return build_corpus(tmp_path_factory.mktemp("smoke"), read_tsv("SMOKE.tsv"), with_timeout_doc=True)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Corpus:
    """A dozen SMOKE files of several kinds (good, encrypted, broken), for the many-run tests."""
    rows = read_tsv("SMOKE.tsv")
    picked = [r for r in rows if r["category"] in ("tables", "charts", "scanned")][:9]
    picked += [r for r in rows if r["expectation"] != "ok"][:3]
    return build_corpus(tmp_path_factory.mktemp("small"), picked, with_timeout_doc=False)


TEXT_LAYER_DOCS = ("/text/", "/papers/", "/tables/", "/scanned/", "platexsheet", "al-Jahiz")


@pytest.fixture(scope="session")
def text_indexed(smoke_corpus, tmp_path_factory):
    """SMOKE's text-bearing documents (English prose, papers, tables, scans; a Japanese and an
    Arabic one) indexed with the real MiniLM weights on the text layer, in Milvus Lite."""
    from pipelines.cli import main

    src = tmp_path_factory.mktemp("text_src")
    for uri in smoke_corpus.ok_pages:
        path = uri.replace("file://", "").replace("%2B", "+")
        if any(k in path for k in TEXT_LAYER_DOCS):
            shutil.copy(path, src)
    out = tmp_path_factory.mktemp("text_out")
    assert main(["ingest", str(src), "--out", str(out), "--executor", "local", "--model",
                 "colqwen2-tiny,text:all-MiniLM-L6-v2", "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """One real local Ray cluster (head node, 2 CPUs, no GPUs) for the whole session."""
    port = free_port()
    temp_dir = tmp_path_factory.mktemp("ray")
    # Loopback-only test cluster: no token auth (the drivers in this session and in CLI
    # subprocesses join it by address alone).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
           "--include-dashboard=false", f"--temp-dir={temp_dir}", "--object-store-memory=1000000000",
           "--disable-usage-stats"]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    yield address
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    finally:
        stop_ray_under(temp_dir)


def stop_ray_under(temp_dir: Path) -> None:
    """Stop the Ray processes started with ``--temp-dir=temp_dir`` and their children, not every
    Ray on the machine (``ray stop --force`` would also stop another session's cluster)."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(temp_dir) in arg for arg in proc.info["cmdline"] or ()):
            mine.append(proc)
    procs = {p.pid: p for p in mine}
    for p in mine:
        try:
            procs.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    for p in procs.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def read_pages(out: Path):
    """OUT/pages read the way a user would: a plain pyarrow dataset."""
    return ds.dataset(str(out / "pages"), format="parquet").to_table()


def read_quarantine(out: Path):
    return ds.dataset(str(out / "quarantine"), format="parquet").to_table()


def milvus_counts(out: Path, collection: str = "pagemill", names: tuple[str, ...] = ("pages", "patches")) -> dict[str, int]:
    from pymilvus import MilvusClient

    from operators.stores.milvus.client import release_lite

    client = MilvusClient(str(out / "milvus.db"))
    try:
        return {c: int(client.query(f"{collection}_{c}", filter="", output_fields=["count(*)"],
                                    consistency_level="Strong")[0]["count(*)"]) for c in names}
    finally:
        client.close()
        release_lite(str(out / "milvus.db"))  # another process may open the file next


def index_store(out: Path, uri: str | None = None, base: str = "pagemill", **options):
    """The vector store of an OUT (its Milvus Lite file, or ``uri``), its tables discovered, as the
    commands open it."""
    from operators.stores import open_vectors
    from pipelines.options import store_options

    store = open_vectors(uri or str(out / "milvus.db"), store_options(options), out=str(out))
    store.discover(base)
    return store


def pagemill_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *args]


def run_pagemill(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600):
    """``pagemill ARGS`` in a process of its own (SIGKILL tests need one), its output captured."""
    r = subprocess.run(pagemill_cmd(*args), cwd=REPO, env=dict(os.environ, **(env or {})), capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def read_only(folder: Path, *cmd: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``pagemill CMD`` with ``folder`` mounted read-only (a private mount namespace: a read-only
    bind mount refuses writes to root too)."""
    inner = " ".join(f"'{c}'" for c in (sys.executable, "-m", "pipelines.cli", *cmd))
    script = f"mount --bind '{folder}' '{folder}' && mount -o remount,bind,ro '{folder}' '{folder}' && exec {inner}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------------
# S3: moto's server mode over HTTP on 127.0.0.1 (a real S3 API, not the in-process mock).

S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "AKIATESTPAGEMILL0001", "AWS_SECRET_ACCESS_KEY": "pagemill-test-secret-value-0001",
               "AWS_DEFAULT_REGION": "us-east-1"}
# Set before any Ray cluster starts, so that Ray workers inherit them like pods inherit theirs.
os.environ.update(S3_TEST_ENV)
for _var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
    os.environ.pop(_var, None)


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def upload_folder(client, root: Path, bucket: str, prefix: str) -> dict[str, str]:
    """Upload every file under root; returns local file URI -> s3 URI."""
    mapping = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = prefix + path.relative_to(root).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            mapping[path.resolve().as_uri()] = f"s3://{bucket}/{key}"
    return mapping


# ------------------------------------------------------------------------------------------
# Milvus: a real standalone server (PyPI `milvus`, 2.3.x) with TLS and authentication.


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    from milvus_server import start_milvus_server

    server = start_milvus_server(tmp_path_factory.mktemp("milvus-server"), free_port)
    try:
        yield server
    finally:
        server.stop()
