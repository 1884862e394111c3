"""Old code and new code on the same inputs, every output compared: a refactoring's proof that it
changed no byte a user reads.

    python -m benchmarks.same_bytes --old 5e4cc1c            # the working tree against that commit
    python -m benchmarks.same_bytes --old main --keep /tmp/sb # keep both OUTs for a look

Both trees run the same commands as a user would (fresh processes, ``python -m pipelines.cli``) on
copies of one source: the Quickstart's PDFs and a few dev-corpus documents (a table, a chart, a
scan, an encrypted and a broken one). Scenarios: an ingest with every kind of layout and the text
layer, an unchanged re-run, a relayout, a changed and a deleted document, a reindex to another
model, a Ray run, the other model families, and every read-only command (search in each stage-1
mode, status, quarantine, report, fidelity, plan, milvus-load into a new database). Compared:

- the committed shards: their keys, schemas (with the ``pagemill.*`` metadata) and every row;
- every Milvus collection's rows, every field, by primary key;
- ``_index.json`` and the ledger's live files (without times and run ids);
- run summaries and every ``--json`` output, without what a clock or a process id decides
  (times, rates, run ids, worker names, busy shares).

Prints one line per comparison and the counts; exits 1 on a difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("PAGEMILL_CORPUS", REPO.parent / "shared" / "corpus"))
CORPUS_DOCS = ("tables/camelot-dev+camelot__us-005.pdf", "charts/NVIDIA+nv-ingest__table_test.pdf",
               "scanned/DS4SD+docling__ocr_test.pdf", "encrypted/pypdf__crazyones-encrypted-256.pdf",
               "malformed/qpdf+qpdf__bad1.pdf", "papers/Unstructured-IO+unstructured__a1977-backus-p21.pdf")
# Keys whose values a clock, a process or a host decides.
VOLATILE = {"run_id", "started_at", "wall_s", "run_s", "pages_per_s", "busy_s", "utilisation", "capacity_pages_per_s",
            "updated_at", "swapped_at", "committed_at", "written_at", "measured_at", "worker", "per_worker", "pid",
            "host", "node_id", "first_commit_s", "steady_pages_per_s", "parquet_s", "milvus_s", "layouts_s", "wall",
            "forward_s", "pages_per_s_steady", "bottleneck", "time_to_first_commit_s", "executor_stats", "log",
            "seconds", "elapsed_s", "load_s", "started", "ended", "queued_s", "latency_ms", "visible_devices",
            "resources", "rate", "eta_s", "mean_s", "pages_total_bytes"}  # (the manifest's time stamp's digits)


def strip(value):
    """A JSON value without the volatile keys (at any depth); runs started within one second are
    listed in an order their random suffixes decide."""
    if isinstance(value, dict):
        out = {k: strip(v) for k, v in value.items()
               if k not in VOLATILE and not k.endswith(("_s", "_ms")) and "share" not in k}
        if isinstance(out.get("runs"), list):
            out["runs"] = sorted(out["runs"], key=lambda r: json.dumps(r, sort_keys=True))
        return out
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def existing(*names: str) -> list[Path]:
    return [CORPUS / n for n in names if (CORPUS / n).is_file()]


class Tree:
    """One code tree and its scratch folder, where the same relative paths name the same inputs."""

    def __init__(self, code: Path, work: Path):
        self.code = code
        self.work = work

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(self.code), "PAGEMILL_DEBUG": "1"}
        r = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=self.work, env=env,
                           capture_output=True, text=True, timeout=1800)
        if r.returncode == -6 and "terminate called without an active exception" in r.stderr:
            r.returncode = 0  # an abort at exit, after the work (pyarrow's read_table threads: apache/arrow#33975)
        if check and r.returncode != 0:
            raise SystemExit(f"[{self.code}] pagemill {' '.join(args)} exited {r.returncode}:\n{r.stderr[-4000:]}")
        return r

    def json(self, *args: str):
        return json.loads(self.run(*args).stdout)


FIXED_MTIME_NS = 1_690_000_000_000_000_000  # every source file's, so that both trees see the same versions


def make_sources(work: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "examples" / "make_pdfs.py"), str(work / "src")], check=True,
                   capture_output=True)
    for path in existing(*CORPUS_DOCS):
        shutil.copy(path, work / "src" / path.name)
    for path in (work / "src").iterdir():
        os.utime(path, ns=(FIXED_MTIME_NS, FIXED_MTIME_NS))


def shards(out: Path) -> dict:
    """key -> (schema with metadata, rows sorted by page_id) of every committed file."""
    import pyarrow.parquet as pq

    manifest = out / "pages" / "_manifest.json"
    keys = json.loads(manifest.read_text())["files"] if manifest.exists() else []
    quarantine = sorted(p.relative_to(out).as_posix() for p in (out / "quarantine").rglob("*.parquet"))
    found = {}
    for key in keys + quarantine:
        table = pq.read_table(out / key)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        sort = "page_id" if "page_id" in table.column_names else "source_uri"
        rows = table.sort_by(sort).drop_columns([c for c in ("run_id",) if c in table.column_names]).to_pylist()
        found[key] = {"schema": table.schema.remove_metadata().to_string(), "metadata": meta, "rows": rows}
    return found


def milvus_rows(db: Path) -> dict:
    """collection -> its rows (every field), by primary key."""
    if not db.exists():
        return {}
    code = r"""
import json, sys
from pymilvus import MilvusClient
c = MilvusClient(sys.argv[1])
out = {}
for name in sorted(c.list_collections()):
    d = c.describe_collection(name)
    pk = next(f["name"] for f in d["fields"] if f.get("is_primary"))
    c.load_collection(name)
    rows, it = [], c.query_iterator(name, batch_size=1000, output_fields=["*"])
    while True:
        batch = it.next()
        if not batch:
            break
        rows += batch
    it.close()
    def plain(v):
        if isinstance(v, (bytes, bytearray)):
            return v.hex()
        if isinstance(v, dict):  # a sparse vector
            return {str(k): round(float(x), 6) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        if hasattr(v, "tolist"):
            return plain(v.tolist())
        if isinstance(v, float):
            return round(v, 6)
        return v
    out[name] = sorted(({k: plain(v) for k, v in r.items()} for r in rows), key=lambda r: str(r[pk]))
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise SystemExit(f"reading {db}: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def out_state(out: Path) -> dict:
    """``_index.json`` and the ledger's view: live files, documents (no times, no run ids)."""
    index = json.loads((out / "_index.json").read_text()) if (out / "_index.json").exists() else None
    records = []
    for p in sorted((out / "_ledger").rglob("*.json")):
        if p.name == "meta.json":
            continue
        rec = json.loads(p.read_text())
        records.append((p.relative_to(out).parent.as_posix(), strip(rec)))
    records.sort(key=lambda r: json.dumps(r, sort_keys=True))
    return {"index": strip(index), "ledger": records}


def scenarios(t: Tree) -> dict:
    """Every command, in order; returns name -> what to compare."""
    got: dict = {}
    base = ["--executor", "local", "--quiet"]
    layouts = ["--layouts", "mv-pool3,mv-int8,mv-bin,sv-fde"]
    model = ["--model", "colqwen2-tiny,text:all-MiniLM-L6-v2"]

    def summary(name: str, *args: str) -> None:
        path = t.work / f"{name}.summary.json"
        t.run(*args, "--summary", str(path))
        got[f"{name}: summary"] = strip(json.loads(path.read_text()))

    def snapshot(name: str, out: str) -> None:
        got[f"{name}: shards"] = shards(t.work / out)
        got[f"{name}: milvus"] = milvus_rows(t.work / out / "milvus.db")
        got[f"{name}: index and ledger"] = out_state(t.work / out)

    summary("ingest", "ingest", "src", "--out", "A", *model, *layouts, *base)
    snapshot("ingest", "A")
    summary("rerun", "ingest", "src", "--out", "A", *base)
    summary("relayout", "relayout", "A", "--layouts", "mv-rowcol", "--executor", "local", "--quiet")
    snapshot("relayout", "A")
    # a changed document and a deleted one
    first = sorted((t.work / "src").glob("*.pdf"))
    import pymupdf

    doc = pymupdf.open(first[0])
    doc[0].insert_text((72, 40), "A line added later.", fontsize=9)
    doc.save(t.work / "changed.pdf", no_new_id=True)
    doc.close()
    shutil.move(t.work / "changed.pdf", first[0])
    os.utime(first[0], ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    first[1].unlink()
    summary("changed", "ingest", "src", "--out", "A", "--delete-missing", *base)
    snapshot("changed", "A")
    for stage1, rerank in (("sv-mean", "mv"), ("patches", "mv-pool3"), ("sv-fde", "none"), ("mv-bin", "mv-int8"),
                           ("text", "none"), ("text-bm25", "mv"), ("text-dense", "none")):
        got[f"search {stage1} {rerank}"] = strip(t.json("search", "quarterly revenue by region", "--out", "A",
                                                        "--stage1", stage1, "--rerank", rerank, "--json"))
    got["search hybrid"] = strip(t.json("search", "a chart of values", "--out", "A", "--hybrid", "--json"))
    got["search from milvus"] = strip(t.json("search", "a table", "--out", "A", "--vectors-from", "milvus", "--json"))
    got["status"] = strip(t.json("status", "A", "--json"))
    got["quarantine"] = strip(t.json("quarantine", "A", "--json"))
    got["report"] = strip(t.json("report", "A", "--json"))
    got["fidelity"] = strip(t.json("fidelity", "A", "--queries", "6", "--json"))
    got["milvus-load"] = strip(t.json("milvus-load", "A", "--milvus", "B.db", "--json"))
    got["milvus-load: milvus"] = milvus_rows(t.work / "B.db")
    for args in (["--model", "colqwen2"], ["--model", "colpali", "--layouts", "mv-pool3,mv-bin,sv-mean,text"],
                 ["--vectors-per-page", "117", "--dim", "128", "--pages", "250k"],
                 ["--model", "qwen3-vl-embedding-2b", "--pages", "10M"]):
        got[f"plan {' '.join(args)}"] = strip(t.json("plan", *args, "--json"))
    summary("reindex", "ingest", "src", "--out", "A", "--reindex", "--model", "colpali-tiny,text:all-MiniLM-L6-v2",
            *base)
    snapshot("reindex", "A")
    summary("ray", "ingest", "src", "--out", "R", "--executor", "ray", "--layouts", "mv-pool3,sv-fde", "--quiet")
    snapshot("ray", "R")
    for fam in ("colpali-tiny", "colmodernvbert-tiny", "colqwen2.5-tiny", "sim:colqwen2@200"):
        out = "F-" + fam.replace(":", "-").replace("@", "-")
        summary(fam, "ingest", "src", "--out", out, "--model", fam, "--layouts", "mv-pool2-int8", *base)
        snapshot(fam, out)
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the commit to compare the working tree with")
    ap.add_argument("--new", default=str(REPO), help="the new code tree (default: this working tree)")
    ap.add_argument("--keep", help="keep the scratch folders here")
    args = ap.parse_args(argv)
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="same-bytes-"))
    scratch.mkdir(parents=True, exist_ok=True)
    old_code = scratch / "old-code"
    if not old_code.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=True, capture_output=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old_code), args.old], check=True,
                       capture_output=True)
    results = {}
    try:
        for side, code in (("old", old_code), ("new", Path(args.new))):
            # Both sides run in the same folder (the source's URIs, and so the page ids, are the same).
            work = scratch / "work"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            make_sources(work)
            print(f"running the {side} code ({code}) ...", flush=True)
            results[side] = scenarios(Tree(code, work))
            shutil.rmtree(scratch / side, ignore_errors=True)
            work.rename(scratch / side)
    finally:
        if not args.keep:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_code)], capture_output=True)
    old, new = results["old"], results["new"]
    differ = 0
    for name in sorted(set(old) | set(new)):
        same = json.dumps(old.get(name), sort_keys=True, default=str) == json.dumps(new.get(name), sort_keys=True,
                                                                                    default=str)
        differ += not same
        print(f"{'same' if same else 'DIFFERENT'}  {name}")
        if not same and args.keep:
            for side, res in (("old", old), ("new", new)):
                (scratch / f"{name.replace(' ', '_').replace(':', '')}.{side}.json").write_text(
                    json.dumps(res.get(name), indent=1, sort_keys=True, default=str))
    rows = sum(len(v) for k, v in new.items() if k.endswith(": milvus") for v in v.values())
    files = sum(len(v) for k, v in new.items() if k.endswith(": shards"))
    print(f"{len(new)} comparisons, {differ} different; {files} shard files and {rows} Milvus rows compared")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
