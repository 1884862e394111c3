"""Peak memory of a whole run (driver plus every Ray process it starts) at 1x and 4x corpus size.

    python -m benchmarks.memory [--docs 30]

The 4x corpus is the 1x one copied four times under other names (four times the documents and
pages, the same page mix). Each run is a fresh ``pagemill ingest`` on the Ray executor in a
subprocess; a sampler sums the RSS of the process and all its descendants every 0.1 s. Milvus
runs as its own server (Milvus Lite's server mode), outside the measured tree, as in production:
an index's memory grows with the corpus by design; the pipeline's must not.
Target (issue 10): peak(4x) / peak(1x) <= 1.25, i.e. memory follows the units in flight, not the
corpus.
"""

from __future__ import annotations

import argparse
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
        for label, src in (("1x", one), ("4x", four)):
            out = tmp / f"out-{label}"
            cmd = [sys.executable, "-m", "pipelines.cli", "ingest", str(src), "--out", str(out), "--executor", "ray",
                   "--unit-max-docs", "8", "--milvus", f"http://127.0.0.1:{port}", "--collection", f"mem{label}",
                   "--quiet", "--summary", str(tmp / f"{label}.json")]
            peak, seconds, rc = peak_rss_of(cmd, env)
            if rc != 0:
                raise SystemExit(f"{label} run failed with exit code {rc}")
            import json

            pages = json.loads((tmp / f"{label}.json").read_text())["pages"]["indexed"]
            rows.append((label, pages, peak, seconds))
        milvus.kill()
        milvus.wait()
    ratio = rows[1][2] / rows[0][2]
    lines = [f"Memory: {args.category} documents, colqwen2-tiny, Ray executor, {os.cpu_count()} CPUs", "",
             "| corpus | pages | peak RSS, driver + Ray processes | seconds |", "|---|---:|---:|---:|"]
    for label, pages, peak, seconds in rows:
        lines.append(f"| {label} | {pages} | {peak / 2**20:,.0f} MiB | {seconds:.1f} |")
    lines += ["", f"peak(4x) / peak(1x) = {ratio:.2f} (target ≤ 1.25)"]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
