"""Planning against a ledger of tens of millions of documents: memory and time on one core.

    python -m benchmarks.ledger [--docs 10000000] [--changed 0.01] [--new 0.01]

Builds a synthetic ledger snapshot of ``--docs`` committed documents (32 per unit, one Parquet part
per unit, URIs and versions shaped like an S3 archive's), then, in a fresh process pinned to one
core, loads the ledger and plans a listing of the same archive in which ``--changed`` of the
documents have a new version and ``--new`` more are new. It prints the load time, the planning
time (and, measured apart, what merely generating the listing costs), the units planned and the
peak RSS of that process. Targets (issue 15): <= 1.5 GB RSS and <= 60 s for 10M documents.
The earlier JSON snapshot (a Python dict of every document) needed 163 MB and 8.4 s to load 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCS_PER_UNIT = 32


def uri(i: int) -> str:
    return f"s3://archive/pdfs/{i // 1000:05d}/document-{i:09d}.pdf"


def version(i: int, gen: int = 0) -> str:
    return f"{(i * 2654435761 + gen) & 0xFFFFFFFFFFFFFFFF:016x}{i:016x}-{100_000 + i % 900_000}"


def build(out: Path, n: int) -> None:
    """The snapshot a ledger of ``n`` committed documents would have, written directly."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from operators.io.store import LocalStore
    from pipelines.out.ledger import DOCS_SCHEMA, FILES_SCHEMA, SNAPSHOT_PREFIX, doc_key, version_hash

    keys = np.fromiter((doc_key(uri(i)) for i in range(n)), np.uint64, n)
    order = np.argsort(keys)
    folder = out / SNAPSHOT_PREFIX / f"{time.time_ns():020d}"
    folder.mkdir(parents=True)
    writer = pq.ParquetWriter(folder / "docs.parquet", DOCS_SCHEMA, compression="zstd")
    chunk = 1 << 20
    for start in range(0, n, chunk):
        rows = order[start:start + chunk].tolist()
        versions = [version(i) for i in rows]
        writer.write_table(pa.table({
            "key": pa.array(keys[order[start:start + chunk]], pa.uint64()), "uri": [uri(i) for i in rows],
            "version": versions, "vhash": pa.array([version_hash(v) for v in versions], pa.uint64()),
            "status": pa.array(np.zeros(len(rows), np.int8)), "n_pages": pa.array([1 + i % 40 for i in rows], pa.int32()),
            "unit_id": [f"u{i // DOCS_PER_UNIT:020x}" for i in rows]}, schema=DOCS_SCHEMA))
    writer.close()
    units = (n + DOCS_PER_UNIT - 1) // DOCS_PER_UNIT
    pq.write_table(pa.table({"key": [f"pages/u{u:020x}-0000abcd.parquet" for u in range(units)],
                             "unit_id": [f"u{u:020x}" for u in range(units)]}, schema=FILES_SCHEMA),
                   folder / "files.parquet", compression="zstd")
    (folder / "meta.json").write_text(json.dumps({"last_record": "0", "records": units, "docs": n, "files": units}))
    LocalStore(out)  # the root exists


def listing(n: int, changed: float, new: float):
    from operators.io.sources import DocumentRef

    step_changed = int(1 / changed) if changed else 0
    for i in range(n + int(n * new)):
        gen = 1 if (step_changed and i < n and i % step_changed == 0) else 0
        yield DocumentRef(uri(i), version(i, gen), 100_000 + i % 900_000)


def peak_rss_mb() -> int:
    """This process' peak RSS: VmHWM, which starts afresh at exec (``ru_maxrss`` carries the
    parent's peak across fork and exec, so a benchmark started by a large process read its size)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure(out: Path, n: int, changed: float, new: float) -> dict:
    """In this process (pinned to one core): load the ledger, plan the listing."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from operators.io.store import LocalStore
    from pipelines.ingest.planning import PlanCounts, plan_units
    from pipelines.out.ledger import Ledger

    t0 = time.perf_counter()
    ledger = Ledger(LocalStore(out))
    ledger.load()
    t1 = time.perf_counter()
    counts = PlanCounts()
    units = sum(1 for _ in plan_units(listing(n, changed, new), ledger.state, DOCS_PER_UNIT, 1 << 30, counts))
    t2 = time.perf_counter()
    gen = sum(1 for _ in listing(n, changed, new))
    t3 = time.perf_counter()
    return {"docs": n, "load_s": round(t1 - t0, 2), "plan_s": round(t2 - t1, 2), "listing_alone_s": round(t3 - t2, 2),
            "total_s": round(t2 - t0, 2), "peak_rss_mb": peak_rss_mb(),
            "seen": counts.seen, "listed": gen, "unchanged": counts.skipped_unchanged, "pending": counts.pending,
            "units": units}


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=10_000_000)
    p.add_argument("--changed", type=float, default=0.01)
    p.add_argument("--new", type=float, default=0.01)
    p.add_argument("--measure", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.docs, args.changed, args.new)))
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build(Path(tmp), args.docs)
        built = time.perf_counter() - t
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        r = subprocess.run([sys.executable, "-m", "benchmarks.ledger", "--measure", tmp, "--docs", str(args.docs),
                            "--changed", str(args.changed), "--new", str(args.new)], check=True, capture_output=True,
                           text=True, env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
        res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update(snapshot_mb=round(size / 1e6, 1), build_s=round(built, 1))
    lines = [f"ledger of {res['docs']:,} documents (snapshot {res['snapshot_mb']} MB on disk), one core:", "",
             "| measure | value |", "|---|---:|"]
    for label, key in (("load the ledger, s", "load_s"), ("plan the listing, s (includes generating it)", "plan_s"),
                       ("generating the listing alone, s", "listing_alone_s"), ("load + plan, s", "total_s"),
                       ("peak RSS, MB", "peak_rss_mb"), ("documents listed", "seen"), ("unchanged", "unchanged"),
                       ("to process (changed + new)", "pending"), ("units planned", "units")):
        lines.append(f"| {label} | {res[key]:,} |")
    lines += ["", "targets: <= 60 s load + plan, <= 1,500 MB peak RSS"]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
