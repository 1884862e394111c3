"""Peak memory of a whole run (driver plus every Ray process it starts) at 1x and 4x corpus size,
with Milvus as a server and with the default, Milvus Lite embedded in the driver.

    python -m benchmarks.memory [--docs 30]

The 4x corpus is the 1x one copied four times under other names (four times the documents and
pages, the same page mix). Each run is a fresh ``pagemill ingest`` on the Ray executor in a
subprocess; a sampler sums the RSS of the process and all its descendants every 0.1 s. Milvus
runs as its own server (Milvus Lite's server mode), outside the measured tree, as in production:
an index's memory grows with the corpus by design; the pipeline's must not.
Target (issue 10): peak(4x) / peak(1x) <= 1.25, i.e. memory follows the units in flight, not the
corpus.

The same two runs again with the default (no ``--milvus``: Milvus Lite inside the driver) show
what the default costs: the driver holds the index, so its memory grows with the corpus. Its
growth per page, over the raw bytes the Lite collections hold (read from the database after the
run), is the factor ``pipelines.costs.LITE_MEMORY_FACTOR`` that ``plan`` and ``ingest`` use to
warn when a corpus will not fit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.pipeline import DEFAULT_CORPUS, sample


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def peak_rss_of(cmd: list[str], env: dict) -> tuple[int, float, int]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak = 0
    stop = threading.Event()

    def sampler():
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, tree_rss(ps))
            except psutil.NoSuchProcess:
                return
            stop.wait(0.1)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    rc = proc.wait()
    stop.set()
    th.join()
    return peak, time.perf_counter() - t, rc


def lite_raw_bytes(db: Path) -> float:
    """Raw bytes of every collection in a Milvus Lite database (pipelines.milvus_storage)."""
    from operators.milvus_client import MilvusConnection
    from operators.milvus_reader import MilvusReader
    from pipelines.milvus_storage import measure_collections

    reader = MilvusReader(MilvusConnection(str(db)), "pagemill")
    reader.connect()
    try:
        plan = reader.discover()
        return sum(c.raw_bytes for c in measure_collections(reader, sorted({f.collection for f in plan.fields})))
    finally:
        reader.close()


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--category", default="tables")
    ap.add_argument("--docs", type=int, default=30)
    args = ap.parse_args(argv)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ADDRESS="")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        milvus = subprocess.Popen([str(Path(sys.executable).with_name("milvus-lite")), "server", "--data-dir",
                                   str(tmp / "milvus"), "--host", "127.0.0.1", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        one = sample(args.corpus, args.category, args.docs, tmp)
        four = tmp / "four"
        for copy in range(4):
            shutil.copytree(one, four / f"copy{copy}")
        lite_rows = []
        for label, src in (("1x", one), ("4x", four)):
            for mode in ("server", "lite"):
                out = tmp / f"out-{label}-{mode}"
                cmd = [sys.executable, "-m", "pipelines.cli", "ingest", str(src), "--out", str(out), "--executor",
                       "ray", "--unit-max-docs", "8", "--quiet", "--summary", str(tmp / f"{label}-{mode}.json")]
                if mode == "server":
                    cmd += ["--milvus", f"http://127.0.0.1:{port}", "--collection", f"mem{label}"]
                peak, seconds, rc = peak_rss_of(cmd, env)
                if rc != 0:
                    raise SystemExit(f"{label} {mode} run failed with exit code {rc}")
                pages = json.loads((tmp / f"{label}-{mode}.json").read_text())["pages"]["indexed"]
                if mode == "server":
                    rows.append((label, pages, peak, seconds))
                else:
                    lite_rows.append((label, pages, peak, seconds, lite_raw_bytes(out / "milvus.db")))
        milvus.kill()
        milvus.wait()
    ratio = rows[1][2] / rows[0][2]
    lines = [f"Memory: {args.category} documents, colqwen2-tiny, Ray executor, {os.cpu_count()} CPUs", "",
             "| corpus | pages | Milvus | peak RSS, driver + Ray processes | seconds |", "|---|---:|---|---:|---:|"]
    for label, pages, peak, seconds in rows:
        lines.append(f"| {label} | {pages} | server (outside) | {peak / 2**20:,.0f} MiB | {seconds:.1f} |")
    for label, pages, peak, seconds, _ in lite_rows:
        lines.append(f"| {label} | {pages} | Lite, in the driver (default) | {peak / 2**20:,.0f} MiB | {seconds:.1f} |")
    lite_ratio = lite_rows[1][2] / lite_rows[0][2]
    # the index's share: what Lite adds over the server runs, per page, against what it holds
    extra = [(lr[2] - r[2], lr[1], lr[4]) for r, lr in zip(rows, lite_rows)]
    per_page = (extra[1][0] - extra[0][0]) / max(1, extra[1][1] - extra[0][1])
    raw_per_page = (extra[1][2] - extra[0][2]) / max(1, extra[1][1] - extra[0][1])
    lines += ["", f"peak(4x) / peak(1x) = {ratio:.2f} with Milvus as a server (target ≤ 1.25); "
              f"{lite_ratio:.2f} with Milvus Lite in the driver",
              f"Milvus Lite: {per_page / 1e3:,.1f} KB of memory per page added, for {raw_per_page / 1e3:,.1f} KB of raw "
              f"rows per page in its collections: factor {per_page / max(1.0, raw_per_page):.2f} (LITE_MEMORY_FACTOR)"]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
