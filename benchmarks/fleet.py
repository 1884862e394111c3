"""The fleet's data path on CPUs: driver CPU per page with writes on the driver vs on the workers,
1 vs 2 writer actors, and the simulated accelerator's busy fraction, in one run.

    python -m benchmarks.fleet [--corpus DIR] [--pages 480] [--rate 400] [--slow-rate 3] [--busy-rate 4]

Everything runs against real services started here: a Ray cluster started apart from the driver
(``ray start``, so its processes are not the driver's CPU), a Milvus 2.3.5 server (TLS, auth),
and Parquet on the local disk; pages are real PDF pages of the dev corpus rendered at ColQwen2's
budget, embedded by ``sim:colqwen2@<rate>`` (the preset's exact shapes: ~770 vectors of 128 per
page) into ``mv`` + ``mv-pool3`` + ``sv-mean``. The driver's CPU seconds (``time.process_time``
of the driver process, every thread: Ray Data's scheduler, the commits, the Milvus client) are
measured for two runs of each placement over the same pages: one as fast as this machine goes,
one held back by a slow simulated accelerator. Ray Data's scheduler costs the driver CPU per
second of run whatever flows (it polls every 10 to 100 ms); the two runs separate that from the
cost per page: driver CPU = per_second x wall + per_page x pages (+ start-up, the same in both),
solved from the pair. A 50-GPU fleet moves thousands of pages a second, so its driver's load is
the per-page term. Target (issue 15): <= 0.5 ms of driver CPU per page with writes on the workers
(>= 25x less than on the driver).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"


def sample_pages(corpus: Path, n_pages: int, dest: Path) -> tuple[Path, int]:
    """Whole documents of the dev corpus (unencrypted, at most 12 pages) until ``n_pages``."""
    import pymupdf

    src = dest / f"docs-{n_pages}"
    src.mkdir()
    total = 0
    for p in sorted(corpus.rglob("*.pdf")):
        if "pathological" in p.parts or total >= n_pages:
            continue
        try:
            with pymupdf.open(p) as d:
                if d.needs_pass or not 0 < d.page_count <= 12 or d.page_count + total > n_pages + 6:
                    continue
                total += d.page_count
        except Exception:
            continue
        shutil.copy(p, src / f"{len(list(src.iterdir())):04d}-{p.name}")
    return src, total


@contextlib.contextmanager
def ray_cluster(cpus: int, tmp: Path):
    """A Ray head started apart from this process (its processes are not the driver's)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import free_port

    port = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    ray_bin = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={tmp / 'ray'}",
                    "--disable-usage-stats"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(src: Path, out: Path, address: str, server, rate: float, placement: str, batch: int, unit_docs: int,
        writers: int | None = None, collection: str = "fleet") -> dict:
    import ray
    from milvus_server import ROOT_USER

    from pipelines.ingest.config import IngestConfig
    from pipelines.ingest.job import run_ingest

    store = {"milvus": server.uri, "milvus_user": ROOT_USER, "milvus_ca_file": server.ca_file,
             "milvus_server_name": "localhost"}
    cfg = IngestConfig(source=str(src), out=str(out), executor="ray", ray_address=address,
                       model=f"sim:colqwen2@{rate:g}", layouts=["mv-pool3"], store=store, collection=collection,
                       write_placement=placement, write_actors=writers, unit_max_docs=unit_docs, batch_size=batch,
                       progress_interval_s=3600,
                       extract_text=False).validate()
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        summary = run_ingest(cfg, log=open(os.devnull, "w"))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        ray.shutdown()
        client = server.client()
        for c in client.list_collections():
            if c.startswith(collection + "_"):
                client.drop_collection(c)
        client.close()
    return {"pages": summary["pages"]["indexed"], "cpu_s": cpu, "wall_s": wall, "summary": summary}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--pages", type=int, default=480, help="pages of each run")
    ap.add_argument("--rate", type=float, default=400.0, help="sim pages/s of the fast runs (the CPUs bound them)")
    ap.add_argument("--slow-rate", type=float, default=3.0, help="sim pages/s of the slow runs (the accelerator bounds them)")
    ap.add_argument("--busy-rate", type=float, default=4.0, help="sim pages/s this machine can feed (busy fraction)")
    ap.add_argument("--cpus", type=int, default=4, help="logical CPUs of the Ray cluster")
    ap.add_argument("--batch-size", type=int, default=16, help="pages per forward pass (a GPU's, as benchmarks.gpu runs)")
    ap.add_argument("--unit-docs", type=int, default=32, help="documents per work unit")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import free_port
    from milvus_server import start_milvus_server

    rows, lines = {}, []
    shape = (args.batch_size, args.unit_docs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        large, n_large = sample_pages(args.corpus, args.pages, tmp)
        (tmp / "milvus").mkdir()
        server = start_milvus_server(tmp / "milvus", free_port)
        from milvus_server import ROOT_PASSWORD

        os.environ["MILVUS_PASSWORD"] = ROOT_PASSWORD  # the workers' environment, like a pod's Secret
        try:
            with ray_cluster(args.cpus, tmp) as address:
                for placement in ("driver", "workers"):
                    fast = run(large, tmp / f"{placement}-f", address, server, args.rate, placement, *shape)
                    slow = run(large, tmp / f"{placement}-s", address, server, args.slow_rate, placement, *shape)
                    rows[placement] = (fast, slow)
                two = run(large, tmp / "two-writers", address, server, args.rate, "workers", *shape, writers=2)
                busy = run(large, tmp / "busy", address, server, args.busy_rate, "workers", *shape)
        finally:
            server.stop()
    lines += [f"Fleet data path: sim:colqwen2 (mv + mv-pool3 + sv-mean) into Milvus {server.version} and Parquet, "
              f"Ray cluster of {args.cpus} logical CPUs started apart from the driver, {os.cpu_count()} cores; "
              f"{n_large} pages of the dev corpus per run, {args.batch_size} pages per forward pass, units of "
              f"{args.unit_docs} documents", "",
              "| writes | fast run: driver CPU s / wall s | slow run: driver CPU s / wall s | driver CPU per second "
              "of run, ms | driver CPU per page, ms | pages/s (fast) |", "|---|---:|---:|---:|---:|---:|"]
    margin = {}
    for placement, (fast, slow) in rows.items():
        per_s = (slow["cpu_s"] - fast["cpu_s"]) / max(1e-9, slow["wall_s"] - fast["wall_s"])
        margin[placement] = 1000 * max(0.0, fast["cpu_s"] - per_s * fast["wall_s"]) / max(1, fast["pages"])
        lines.append(f"| on the {placement} | {fast['cpu_s']:.2f} / {fast['wall_s']:.1f} | {slow['cpu_s']:.2f} / "
                     f"{slow['wall_s']:.1f} | {1000 * per_s:.1f} | {margin[placement]:.2f} | "
                     f"{fast['pages'] / fast['wall_s']:.1f} |")
    one = rows["workers"][0]
    steady = {k: (r["summary"]["stages"].get("steady_pages_per_s") or 0) for k, r in (("one", one), ("two", two))}
    upper = 1000 * rows["workers"][0]["cpu_s"] / max(1, rows["workers"][0]["pages"])
    if margin["workers"] >= 0.01:
        ratio = f"driver ÷ workers: {margin['driver'] / margin['workers']:.1f}x"
    else:
        ratio = ("driver ÷ workers: not resolved (the workers' per-page term fits to 0: the per-second cost, Ray "
                 "Data's scheduling, explains all of the driver's CPU in those runs)")
    lines += ["", f"driver CPU per page: {margin['driver']:.2f} ms with writes on the driver, {margin['workers']:.2f} ms "
              f"on the workers (target <= 0.5; all of the driver's CPU over the pages, start-up and scheduling "
              f"included: {upper:.2f} ms); {ratio} (target >= 25x)",
              f"end to end with writes on the workers: 1 writer {one['pages'] / one['wall_s']:.1f} pages/s "
              f"(steady {steady['one']:.1f}), 2 writers {two['pages'] / two['wall_s']:.1f} pages/s "
              f"(steady {steady['two']:.1f})"]
    e = busy["summary"]["stages"].get("embed", {})
    lines += [f"sim:colqwen2@{args.busy_rate:g} (a rate these {os.cpu_count()} cores can feed): accelerator busy "
              f"{e.get('forward_share_steady')} of the embedding actor's time in steady state, its first batch to "
              f"its last (target >= 0.9); {e.get('forward_share')} to the end of the run (the drain after the last "
              f"batch and the sinks' flush included); run's own diagnosis: {busy['summary'].get('bottleneck')}"]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
