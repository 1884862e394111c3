"""Run the array-of-structs path against a real Milvus >= 2.6.4 server (no test can: none is
installable here, and the suite starts only what it can install).

    python -m benchmarks.milvus_struct http://host:19530 [--corpus DIR]

Ingests a few pages of the dev corpus with ``--milvus-mv-mode struct --layouts mv-pool3``,
searches them through the struct field, checks that five pages come back, and drops the
collection. Until this has passed against a server, ``--milvus-mv-mode auto`` keeps one row per
vector (README, "Milvus").
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.pipeline import DEFAULT_CORPUS, sample


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("uri", help="Milvus >= 2.6.4, e.g. http://host:19530")
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--collection", default="pm_struct_check")
    args = ap.parse_args(argv)
    from operators.io.store import LocalStore
    from operators.stores.milvus.reader import MilvusReader
    from operators.stores.milvus.writer import MilvusWriter
    from pipelines.cli import main as cli
    from pipelines.index.search import search

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        src = sample(args.corpus, "tables", 3, Path(tmp))
        rc = cli(["ingest", str(src), "--out", str(out), "--executor", "local", "--quiet", "--milvus", args.uri,
                  "--collection", args.collection, "--layouts", "mv-pool3", "--milvus-mv-mode", "struct"])
        if rc != 0:
            raise SystemExit(f"ingest exited {rc}")
        reader = MilvusReader(args.uri, args.collection)
        reader.connect()
        try:
            got = search("revenue", LocalStore(out), reader, k=5, candidates=50, stage1_mode="mv-pool3",
                         vectors_from="milvus")
        finally:
            reader.close()
        writer = MilvusWriter(args.uri, args.collection)
        writer.connect()
        writer.drop()
        writer.close()
        shutil.rmtree(out, ignore_errors=True)
    if len(got) != 5:
        raise SystemExit(f"search through the struct field returned {len(got)} pages, not 5")
    line = f"array-of-structs against {args.uri}: ingest, search (5 pages) and drop passed"
    print(line)
    return line


if __name__ == "__main__":
    main()
