"""The write stage against a Milvus server, three ways on the same pages in one run: pagemill's
row upserts, pagemill's first load by bulk import, and a plain pymilvus insert of the same rows.

    python -m benchmarks.server_write [--corpus DIR] [--pages 96]

Real PDF pages of the dev corpus go through the ingest's own stages in one process (the local
executor: the write stage's CPU clock is its own) with ``sim:colqwen2`` (the preset's exact
shapes, ~770 vectors of 128 a page), layouts mv + mv-pool3 + sv-mean, into Parquet and a Milvus
2.3.5 standalone server started here (the ``milvus`` wheel: TLS, a user and password), so the
server's work is another process:

- **client CPU**: the writer's own clock around its store calls (``stages.write.milvus_cpu_s``);
  for bulk import that is staging the import files;
- **server CPU**: the server's processes' CPU time (psutil) over the same run, what a data node
  spends on these rows;
- **store wall**: the writer's wall time in its store calls, and for bulk import the server's
  import too (from its first task to the rows counted, ``milvus.bulk_import_s``).

The baseline is pymilvus' ``MilvusClient.insert`` of the same rows (every vector of mv and mv-pool3
with its page key, a page row with sv-mean), rows as dicts (what its documentation shows), a page
at a time as a writer gets them, into collections of the same schema on the same server.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.fleet import DEFAULT_CORPUS, REPO, sample_pages

MODEL = "sim:colqwen2@100000"
LAYOUTS = "mv-pool3"


def server_cpu_s(server) -> float:
    import psutil

    procs = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def drop(server, prefix: str) -> None:
    client = server.client()
    try:
        for c in client.list_collections():
            if c.startswith(prefix + "_"):
                client.drop_collection(c)
    finally:
        client.close()


def ingest(src: Path, out: Path, server, collection: str, bulk_dir: Path | None = None) -> dict:
    """One run into the server: its summary, with the server's CPU over it."""
    from milvus_server import ROOT_USER

    from pipelines.ingest.config import build_config
    from pipelines.ingest.job import run_ingest

    store = {"milvus": server.uri, "milvus_user": ROOT_USER, "milvus_ca_file": server.ca_file,
             "milvus_server_name": "localhost", **({"milvus_bulk_dir": str(bulk_dir)} if bulk_dir else {})}
    cfg = build_config({}, {"source": str(src), "out": str(out), "model": MODEL, "executor": "local",
                            "layouts": [LAYOUTS], "progress_interval_s": 3600.0, "extract_text": False,
                            "collection": collection, **store})
    s0 = server_cpu_s(server)
    summary = run_ingest(cfg, log=io.StringIO())
    summary["server_cpu_s"] = server_cpu_s(server) - s0
    return summary


def plain_insert(out: Path, server, collection: str) -> dict:
    """The run's rows, read back from its shards, inserted with ``MilvusClient.insert``."""
    import pyarrow.parquet as pq
    from pymilvus import DataType

    table = pq.read_table(out / "pages")
    client = server.client()
    try:
        for name in ("patches", "patches_pool3", "pages"):
            schema = client.create_schema(auto_id=name != "pages")
            if name == "pages":
                schema.add_field("page_id", DataType.VARCHAR, is_primary=True, max_length=128)
                schema.add_field("sv_mean", DataType.FLOAT_VECTOR, dim=128)
            else:
                schema.add_field("id", DataType.INT64, is_primary=True)
                schema.add_field("page_id", DataType.VARCHAR, max_length=128)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=128)
            client.create_collection(f"{collection}_{name}", schema=schema)
        ids = table["page_id"].to_pylist()
        mv = [np.asarray(v, np.float32) for v in table["mv"].to_pylist()]
        pool = [np.asarray(v, np.float32) for v in table["mv_pool3"].to_pylist()]
        sv = table["sv_mean"].to_pylist()
        rows = 0
        s0, t, c = server_cpu_s(server), time.perf_counter(), time.process_time()
        for page_id, a, b, s in zip(ids, mv, pool, sv):  # a page at a time, as a writer gets them
            for name, vectors in (("patches", a), ("patches_pool3", b)):
                data = [{"page_id": page_id, "vector": v.tolist()} for v in vectors]
                client.insert(f"{collection}_{name}", data)
                rows += len(data)
            client.insert(f"{collection}_pages", [{"page_id": page_id, "sv_mean": s}])
            rows += 1
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        return {"rows": rows, "cpu_s": cpu, "wall_s": wall, "server_cpu_s": server_cpu_s(server) - s0,
                "pages": len(ids)}
    finally:
        client.close()


def measure(src: Path, tmp: Path, server) -> list[dict]:
    from milvus_server import ROOT_PASSWORD

    os.environ["MILVUS_PASSWORD"] = ROOT_PASSWORD  # (pagemill reads secrets from the environment)
    out = []
    try:
        for path, bulk in (("row upserts", None), ("bulk import", tmp / "stage")):
            s = ingest(src, tmp / path.replace(" ", "-"), server, "bench_" + path.split()[0], bulk)
            w, m = s["stages"]["write"], s["milvus"]
            pages = w["items"]
            imported = m.get("bulk_import_s") or 0.0
            rows = sum((m.get("bulk_imported") or {}).values()) if bulk else w["milvus_rows"]
            out.append({"way": f"pagemill, {path}", "rows": rows, "pages": pages,
                        "client_ms": 1000 * w["milvus_cpu_s"] / pages, "server_ms": 1000 * s["server_cpu_s"] / pages,
                        "wall_ms": 1000 * (w["milvus_s"] + imported) / pages, "import_s": imported})
        p = plain_insert(tmp / "row-upserts", server, "bench_plain")
        out.append({"way": "pymilvus `MilvusClient.insert`", "rows": p["rows"], "pages": p["pages"],
                    "client_ms": 1000 * p["cpu_s"] / p["pages"], "server_ms": 1000 * p["server_cpu_s"] / p["pages"],
                    "wall_ms": 1000 * p["wall_s"] / p["pages"], "import_s": 0.0})
    finally:
        for prefix in ("bench_row", "bench_bulk", "bench_plain"):
            drop(server, prefix)
    return out


def table(results: list[dict], version: str) -> str:
    ours = results[0]
    pages = ours["pages"]
    lines = [f"{pages} pages ({MODEL}, layouts mv + {LAYOUTS} + sv-mean) into Milvus {version} standalone, "
             f"ms a page:", "",
             "| write | rows | client CPU | server CPU | store wall | client CPU vs upserts |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['way']} | {r['rows']:,} | {r['client_ms']:.1f} | {r['server_ms']:.1f} | {r['wall_ms']:.1f} | "
                     f"{r['client_ms'] / ours['client_ms']:.2f} |")
    bulk = next(r for r in results if "bulk" in r["way"])
    lines += ["", f"bulk import: the server's import took {bulk['import_s']:.1f} s for {bulk['rows']:,} rows "
              f"({bulk['rows'] / bulk['import_s']:,.0f} rows/s, its store wall above included)" if bulk["import_s"] else ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None, server=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--pages", type=int, default=96)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, _ = sample_pages(args.corpus, args.pages, tmp)
        own = server is None
        if own:
            from conftest import free_port
            from milvus_server import start_milvus_server

            (tmp / "milvus").mkdir()
            server = start_milvus_server(tmp / "milvus", free_port)
        try:
            results = measure(src, tmp, server)
        finally:
            if own:
                server.stop()
    text = table(results, server.version)
    print(text)
    return text


if __name__ == "__main__":
    main()
