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
run), is the factor ``pipelines.analysis.costs.LITE_MEMORY_FACTOR`` that ``plan`` and ``ingest`` use to
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


def peak_rss_of(cmd: list[str], env: dict, stderr_file: Path) -> tuple[int, float, int, int]:
    """(peak RSS of the process tree, seconds, exit code, peak RSS of the driver process alone)."""
    t = time.perf_counter()
    with open(stderr_file, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    ps = psutil.Process(proc.pid)
    peak = driver = 0
    stop = threading.Event()

    def sampler():
        nonlocal peak, driver
        while not stop.is_set():
            try:
                peak = max(peak, tree_rss(ps))
                driver = max(driver, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            stop.wait(0.1)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    rc = proc.wait()
    stop.set()
    th.join()
    return peak, time.perf_counter() - t, rc, driver


def lite_raw_bytes(db: Path) -> float:
    """Raw bytes of every collection in a Milvus Lite database (operators.stores.milvus.storage)."""
    from operators.stores.milvus.client import MilvusConnection
    from operators.stores.milvus.reader import MilvusReader
    from operators.stores.milvus.storage import measure_collections

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
                err = tmp / f"{label}-{mode}.stderr"
                peak, seconds, rc, driver = peak_rss_of(cmd, env, err)
                if rc != 0:
                    tail = err.read_text(errors="replace").strip().splitlines()[-3:]
                    raise SystemExit(f"{label} {mode} run failed with exit code {rc}: " + " / ".join(tail))
                pages = json.loads((tmp / f"{label}-{mode}.json").read_text())["pages"]["indexed"]
                if mode == "server":
                    rows.append((label, pages, peak, seconds, driver))
                else:
                    lite_rows.append((label, pages, peak, seconds, driver, lite_raw_bytes(out / "milvus.db")))
        milvus.kill()
        milvus.wait()
    ratio = rows[1][2] / rows[0][2]
    lines = [f"Memory: {args.category} documents, colqwen2-tiny, Ray executor, {os.cpu_count()} CPUs", "",
             "| corpus | pages | Milvus | peak RSS, driver + Ray processes | driver alone | seconds |",
             "|---|---:|---|---:|---:|---:|"]
    for label, pages, peak, seconds, driver in rows:
        lines.append(f"| {label} | {pages} | server (outside) | {peak / 2**20:,.0f} MiB | {driver / 2**20:,.0f} MiB "
                     f"| {seconds:.1f} |")
    for label, pages, peak, seconds, driver, _ in lite_rows:
        lines.append(f"| {label} | {pages} | Lite, in the driver (default) | {peak / 2**20:,.0f} MiB | "
                     f"{driver / 2**20:,.0f} MiB | {seconds:.1f} |")
    lite_ratio = lite_rows[1][2] / lite_rows[0][2]
    # Lite's share: what the driver gains from 1x to 4x with Lite, beyond what it gains with a
    # server, per page added, against the raw bytes of the rows Lite holds for those pages
    added = max(1, lite_rows[1][1] - lite_rows[0][1])
    per_page = ((lite_rows[1][4] - lite_rows[0][4]) - (rows[1][4] - rows[0][4])) / added
    raw_per_page = (lite_rows[1][5] - lite_rows[0][5]) / added
    lines += ["", f"peak(4x) / peak(1x) = {ratio:.2f} with Milvus as a server (target ≤ 1.25); "
              f"{lite_ratio:.2f} with Milvus Lite in the driver",
              f"Milvus Lite: {per_page / 1e3:,.1f} KB of driver memory per page added, for {raw_per_page / 1e3:,.1f} KB "
              f"of raw rows per page in its collections: factor {per_page / max(1.0, raw_per_page):.2f} "
              f"(LITE_MEMORY_FACTOR)"]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
