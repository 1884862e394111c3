"""LanceDB, Milvus Lite and a Milvus 2.3.5 server side by side on the same pages, in one run:
write rate, the driver's peak memory at 1x and 4x the pages, bytes on disk per page and layout,
search latency and the recall of each store's multi-vector search against exact MaxSim.

    python -m benchmarks.stores [--corpus DIR] [--pages 500] [--search-pages 400] [--queries 40]

Writes and memory: whole documents of the dev corpus (``--pages``, and four copies of them under
other names: 4x) rendered at 100,352 pixels (128 patches a page: cheap on two cores, the preset's
shapes otherwise) and embedded by ``sim:colqwen2`` into ``mv`` + ``mv-pool3`` + ``sv-mean``, one
``pagemill ingest`` subprocess a store and size on a Ray cluster started apart from the driver
(writes on the workers where the store allows; Milvus Lite writes in the driver, its database is
a file of the driver's). A sampler reads the driver process' RSS every 0.1 s. Bytes on disk are
``pagemill report``'s measurements of the 4x runs (each store's files, listed: LanceDB's folder,
Milvus Lite's collection folders, the server's binlogs and index files).

Search: ``--search-pages`` pages indexed with ``colqwen2-tiny`` (random weights, the real
architecture: query vectors from the model's query path), loaded from the same archive into each
store; ``--queries`` sentences of the pages' text as queries. The reference is exact MaxSim over
every page of the archive. Stage 1 asks each store for 100 candidates on ``mv`` (LanceDB: MaxSim
over the multi-vector column, exact or through its index; Milvus: each query vector's nearest
patch rows, pages ranked by the sum of their best hits); the rerank fetches those candidates'
vectors from the store and scores them exactly. recall@10: the share of the exact top 10 in the
store's top 10.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.fleet import DEFAULT_CORPUS, REPO, ray_cluster, sample_pages
from benchmarks.memory import peak_rss_of

MAX_PIXELS = "100352"
LAYOUTS = ("mv", "mv-pool3", "sv-mean")
LANCE_SETTINGS = (("exact (no index)", None), ("IVF_PQ, defaults", "mv=IVF_PQ"),
                  ("IVF_PQ, 32 sub-vectors", "mv=IVF_PQ:num_sub_vectors=32"),
                  ("IVF_HNSW_SQ, defaults", "mv=IVF_HNSW_SQ"))


def _server_args(server) -> list[str]:
    from milvus_server import ROOT_USER

    return ["--milvus-user", ROOT_USER, "--milvus-ca-file", server.ca_file, "--milvus-server-name", "localhost"]


def stores(tmp: Path, server, label: str) -> dict[str, list[str]]:
    """Each store's ``--vectors`` arguments for a run."""
    return {"LanceDB": ["--vectors", "lancedb:"],
            "Milvus Lite": ["--vectors", str(tmp / f"lite-{label}.db")],
            "Milvus 2.3.5 server": ["--vectors", server.uri, "--collection", f"bench{label}", *_server_args(server)]}


def write_runs(one: Path, four: Path, tmp: Path, server, address: str, env: dict) -> dict:
    runs = {}
    for label, src in (("1x", one), ("4x", four)):
        for name, vectors in stores(tmp, server, label).items():
            slug = "".join(c for c in name.lower() if c.isalnum())
            out = tmp / f"out-{label}-{slug}"
            summary = tmp / f"{label}-{slug}.json"
            cmd = [sys.executable, "-m", "pipelines.cli", "ingest", str(src), "--out", str(out), "--model",
                   "sim:colqwen2@1000", "--max-pixels", MAX_PIXELS, "--layouts", "mv-pool3", "--no-text",
                   "--ray-address", address, "--unit-max-docs", "16", "--quiet", "--summary", str(summary), *vectors]
            err = tmp / f"{label}-{slug}.stderr"
            _, seconds, rc, driver = peak_rss_of(cmd, env, err)
            if rc != 0:
                tail = err.read_text(errors="replace").strip().splitlines()[-3:]
                raise SystemExit(f"{label} {name} failed with exit code {rc}: " + " / ".join(tail))
            s = json.loads(summary.read_text())
            runs[(label, name)] = {"pages": s["pages"]["indexed"], "wall_s": seconds, "driver_peak": driver,
                                   "out": out, "vectors": vectors, "placement": s["executor_stats"].get("write_placement")}
    return runs


def wait_for_files(server, prefix: str, timeout_s: float = 120.0) -> None:
    """Until the server has written its binlogs and built every index of the collections (it
    flushes and builds after the run, in the background)."""
    deadline = time.monotonic() + timeout_s
    try:
        server.wait_for_indexes(prefix, timeout_s)
    except TimeoutError as e:
        raise SystemExit(str(e)) from None
    while not (Path(server.storage) / "insert_log").is_dir():
        if time.monotonic() > deadline:
            listed = sorted(str(p) for p in Path(server.storage).iterdir()) if Path(server.storage).is_dir() else []
            raise SystemExit(f"no binlogs under {server.storage} after {timeout_s} s ({listed})")
        time.sleep(0.5)


def disk_bytes(run: dict, name: str, server, env: dict) -> dict[str, float]:
    """Bytes per page on disk of each layout (and of the whole store), from ``pagemill report --json``."""
    extra = []
    if name.startswith("Milvus 2"):
        wait_for_files(server, run["vectors"][run["vectors"].index("--collection") + 1])
        extra = ["--milvus-storage", server.storage]
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", str(run["out"]), "--json", *run["vectors"],
                        *extra], env=env, capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"report of {name} failed: {r.stderr[-1000:]}")
    report = json.loads(r.stdout)
    pages = report["pages_measured"]
    if "store" in report:  # LanceDB: each layout's column and index
        held = report["store"]
        out = {lay: e["data_bytes_per_page"] + e.get("index_bytes_per_page", 0.0) for lay, e in held["layouts"].items()}
        out["all files"] = sum(t["files_bytes"] for t in held["tables"]) / pages
        return out
    out = {}
    for row in report["layouts"]:
        srv = (row.get("milvus") or {}).get("server")
        if srv:
            out[row["layout"]] = srv["bytes_per_page"]
    out["all files"] = sum(c["server_bytes"] or 0 for c in report["milvus"]["collections"]) / pages
    return out


def search_bench(corpus: Path, tmp: Path, server, n_pages: int, n_queries: int) -> tuple[list[tuple], int]:
    """Stage 1 and rerank on each store (and LanceDB's index settings): latency and recall@10."""
    from milvus_server import ROOT_USER

    from operators.io.store import LocalStore
    from operators.layouts.layout import LayoutScorer, parse_layout
    from operators.models import ModelSpec, adapter_for
    from operators.stores import open_vectors
    from pipelines.index.rebuild import rebuild
    from pipelines.index.search import read_pages_subset
    from pipelines.options import store_options

    (tmp / "search").mkdir()
    src, _ = sample_pages(corpus, n_pages, tmp / "search")
    out = tmp / "search-out"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", str(src), "--out", str(out), "--executor", "local",
                    "--model", "colqwen2-tiny", "--vectors", "lancedb:", "--quiet"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = LocalStore(str(out))
    table = read_pages_subset(store, None, ["page_id", "text", "mv"])
    ids = table["page_id"].to_pylist()
    rng = np.random.default_rng(0)
    texts = [t for t in table["text"].to_pylist() if t and len(t.split()) >= 12]
    picked = [texts[i] for i in rng.choice(len(texts), size=min(n_queries, len(texts)), replace=False)]
    queries = adapter_for(ModelSpec("colqwen2-tiny")).embed_queries([" ".join(t.split()[:10]) for t in picked])
    scorer = LayoutScorer(parse_layout("mv"), table, 128)
    exact = [set(np.array(ids)[np.argsort(-scorer.scores(q), kind="stable")[:10]]) for q in queries]
    server_opts = {"milvus_user": ROOT_USER, "milvus_ca_file": server.ca_file, "milvus_server_name": "localhost"}
    targets = [("Milvus Lite", str(tmp / "search-lite.db"), {}, None),
               ("Milvus 2.3.5 server (AUTOINDEX: HNSW)", server.uri, {**server_opts}, None)]
    targets += [(f"LanceDB, {label}", "lancedb:", {}, spec) for label, spec in LANCE_SETTINGS]
    rows = []
    for name, uri, opts, spec in targets:
        options = store_options({**opts, "lancedb_index": [spec] if spec else []})
        vectors = open_vectors(uri, options, out=str(out))
        base = "searchbench" if uri == server.uri else "pagemill"
        if not uri.startswith("lancedb:") or spec:
            rebuild(store, vectors, base, recreate=True, log=open(os.devnull, "w"))
            vectors = open_vectors(uri, options, out=str(out))
        vectors.discover(base)
        stage, rerank, hit1, hit2 = [], [], [], []
        for q, want in zip(queries, exact):
            t = time.perf_counter()
            found = vectors.search("mv", q, 100)
            stage.append(time.perf_counter() - t)
            hit1.append(len(want & {h.page_id for h in found[:10]}) / 10)
            t = time.perf_counter()
            docs = vectors.fetch("mv", [h.page_id for h in found])
            scored = sorted(((float((q @ d.T).max(axis=1).sum()), p) for p, d in docs.items()), reverse=True)
            rerank.append(time.perf_counter() - t)
            hit2.append(len(want & {p for _, p in scored[:10]}) / 10)
        vectors.close()
        ms = lambda xs, p: 1000 * float(np.percentile(xs, p))  # noqa: E731
        rows.append((name, ms(stage, 50), ms(stage, 95), float(np.mean(hit1)), ms(rerank, 50), ms(rerank, 95),
                     float(np.mean(hit2))))
    return rows, len(ids)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--pages", type=int, default=500, help="pages of the 1x runs (4x: four copies)")
    ap.add_argument("--search-pages", type=int, default=400)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--cpus", type=int, default=4, help="logical CPUs of the Ray cluster")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import free_port
    from milvus_server import ROOT_PASSWORD, start_milvus_server

    os.environ.setdefault("LANCE_LOG", "error")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one, _ = sample_pages(args.corpus, args.pages, tmp)
        four = tmp / "four"
        for copy in range(4):
            shutil.copytree(one, four / f"copy{copy}")
        (tmp / "milvus").mkdir()
        server = start_milvus_server(tmp / "milvus", free_port)
        os.environ["MILVUS_PASSWORD"] = ROOT_PASSWORD
        env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ADDRESS="")
        try:
            with ray_cluster(args.cpus, tmp) as address:
                runs = write_runs(one, four, tmp, server, address, env)
            names = [n for label, n in runs if label == "4x"]
            sizes = {n: disk_bytes(runs[("4x", n)], n, server, env) for n in names}
            search, search_pages = search_bench(args.corpus, tmp, server, args.search_pages, args.queries)
        finally:
            server.stop()
    mib = 2**20
    lines = [f"Vector stores: sim:colqwen2 at {int(MAX_PIXELS):,} px (mv + mv-pool3 + sv-mean), Ray cluster of "
             f"{args.cpus} logical CPUs started apart from the driver, {os.cpu_count()} cores", "",
             "| store | pages 1x / 4x | writes | pages/s 1x / 4x | driver peak RSS 1x | 4x | 4x / 1x |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for n in names:
        a, b = runs[("1x", n)], runs[("4x", n)]
        lines.append(f"| {n} | {a['pages']} / {b['pages']} | {b['placement'] or '-'} | {a['pages'] / a['wall_s']:.1f} / "
                     f"{b['pages'] / b['wall_s']:.1f} | {a['driver_peak'] / mib:,.0f} MiB | {b['driver_peak'] / mib:,.0f} MiB "
                     f"| {b['driver_peak'] / a['driver_peak']:.2f} |")
    cols = [*LAYOUTS, "all files"]
    lines += ["", f"Bytes on disk per page, 4x runs ({runs[('4x', names[0])]['pages']} pages; Milvus: the collection "
              f"that holds the layout, sv-mean's shared with the page's other fields):", "",
              "| store | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{sizes[n][c] / 1e3:,.1f} KB" if c in sizes[n] else "-" for c in cols)
                     + " |")
    lines += ["", f"Search: {search_pages} pages of colqwen2-tiny (random weights), {args.queries} sentence queries; "
              f"recall@10 against exact MaxSim over the archive:", "",
              "| store (mv index) | stage 1 p50 / p95 | stage-1 recall@10 | rerank (fetch + MaxSim) p50 / p95 | "
              "recall@10 after rerank |", "|---|---:|---:|---:|---:|"]
    for name, s50, s95, r1, k50, k95, r2 in search:
        lines.append(f"| {name} | {s50:.1f} / {s95:.1f} ms | {r1:.3f} | {k50:.1f} / {k95:.1f} ms | {r2:.3f} |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
