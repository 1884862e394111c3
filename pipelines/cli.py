"""``pagemill``: the command line, a thin layer over the library.

Domain errors print one line and exit non-zero; set PAGEMILL_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from operators.errors import UsageError
from pipelines.options import STORE_CONNECTION, add_options

EXIT_CONFIG = 2
EXIT_FAILED = 1

INGEST_EXAMPLE = """example:
  pagemill ingest examples/pdfs --out demo-out --model colqwen2-tiny --weights random

Writes OUT/pages (Parquet, one row per page), OUT/quarantine, OUT/_ledger, OUT/_runs/<run>.json
and a Milvus Lite database at OUT/milvus.db unless --milvus is given. Running it again over an
unchanged source does nothing; after a crash it resumes with the uncommitted units.
"""


def _command(sub, name: str, **kw) -> argparse.ArgumentParser:
    """A command's parser: its help, description and epilog (examples, kept as written). Every
    option is spelled in full: no abbreviation (``--layout`` is not ``--layouts``)."""
    return sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False, **kw)


def _ingest_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "ingest", help="index a folder of PDFs into Parquet shards and Milvus",
                 description="Render, embed and index every PDF under SOURCE.", epilog=INGEST_EXAMPLE)
    add_options(p, "ingest")
    return p


def _vectors(args, store, *, must_exist: bool = True, skip_missing: bool = False, discover: bool = True):
    """The index's vector store, as the command's options name it (default: the one the index
    records, else OUT's own), its tables discovered (``discover``); None when ``must_exist`` is
    false and OUT has none of its own (with ``skip_missing``, nor a file that the options name)."""
    from operators.io.s3 import S3Options
    from operators.stores import given_uri, local_file, open_vectors, vectors_uri
    from pipelines.options import store_options
    from pipelines.out.identity import index_base, recorded_store

    options = store_options(args)
    given = given_uri(options)
    uri = vectors_uri(options, args.out, recorded_store(store))
    if not uri:
        if not must_exist:
            return None
        raise UsageError("--vectors is required when OUT is not a local folder")
    local = local_file(uri)
    if not must_exist and (skip_missing or not given) and local and not os.path.exists(local):
        return None
    if options.get("milvus_ca_file") and not os.path.isfile(options["milvus_ca_file"]):
        raise UsageError(f"--milvus-ca-file: no such file {options['milvus_ca_file']!r}")
    vectors = open_vectors(uri, options, S3Options(endpoint_url=getattr(args, "s3_endpoint_url", None)), out=args.out)
    if discover:
        for note in vectors.discover(index_base(store, args.collection)):
            args.console.write(f"pagemill: note: {note}\n")
    return vectors


FIDELITY_EXAMPLE = """example:
  pagemill fidelity demo-out --queries 50

Samples sentences from the indexed pages' text layer as queries, ranks the pages with the full
multi-vector (mv) as the reference, and reports for every layout in OUT/pages how much of that
ranking it keeps (recall@10, nDCG@10), next to its vectors and bytes per page.
"""


def _fidelity_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "fidelity", help="measure how much of the full multi-vector ranking each layout keeps",
                 description="Fidelity of each storage layout on your own corpus.", epilog=FIDELITY_EXAMPLE)
    p.add_argument("out", help="output root of a run (folder, file:// or s3://)")
    p.add_argument("--queries", type=int, default=50, help="pseudo-queries to sample (50)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    p.add_argument("--max-pages", type=int, default=5000, help="rank at most this many sampled pages (5000)")
    add_options(p, "fidelity", "--model", "--weights", "--vectors", "--milvus", "--collection", *STORE_CONNECTION,
                "--s3-endpoint-url", "--json")
    return p


REPORT_EXAMPLE = """example:
  pagemill report demo-out --pages 1000000,100000000 --html report.html

For every layout in the run: vectors per page, bytes per vector, Parquet bytes per page as
written (measured, with the cost model's prediction beside it), Milvus bytes per page, fidelity
(from a run with --fidelity-queries), projections and monthly cost, and a recommendation.
"""

PLAN_EXAMPLE = """examples:
  pagemill plan --model colpali --pages 1000000
  pagemill plan --vectors-per-page 1750 --dim 3072 --dtype bf16 --pages 1000000
  pagemill plan --model colqwen2 --pages 20000000 --layouts mv-pool3,mv-bin,sv-mean --calibration calib.json --deadline 72
"""


def page_count(text: str) -> int:
    """``1000000``, ``1e6``, ``1M``, ``250k``, ``2.5B`` -> pages."""
    t = text.strip().replace("_", "").replace(",", "")
    mult = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}.get(t[-1:].lower(), 1)
    try:
        n = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a page count (e.g. 1000000, 1e6, 1M, 250k)") from None
    if n < 1 or n != int(n):
        raise argparse.ArgumentTypeError(f"{text!r}: a page count is a whole number >= 1")
    return int(n)


def page_counts(text: str) -> tuple[int, ...]:
    """``1M,100M`` -> (1000000, 100000000)."""
    counts = tuple(page_count(x) for x in text.split(",") if x.strip())
    if not counts:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more page counts, e.g. 1M,100M")
    return counts


def _common_cost_flags(p) -> None:
    p.add_argument("--prices", help="YAML/JSON prices: object_storage_gb_month, ram_gb_month, disk_gb_month, gpu_hour")
    p.add_argument("--index", help="Milvus index type to project with (report: the one built for each layout; plan: "
                   "AUTOINDEX, pagemill's default, costed as HNSW)")
    p.add_argument("--replicas", type=int, default=1, help="Milvus in-memory replicas (1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _report_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "report", help="measured and projected storage cost of each layout of a run",
                 description="Storage-cost report of a run.", epilog=REPORT_EXAMPLE)
    p.add_argument("out", help="output root of a run")
    p.add_argument("--pages", type=page_counts, default=(1_000_000, 100_000_000),
                   help="corpus sizes to project to, comma-separated: 1000000, 1e6, 1M, 250k (1M,100M)")
    p.add_argument("--threshold", type=float, default=0.9, help="fidelity (recall@10) a recommended layout needs")
    add_options(p, "report", "--vectors", "--milvus", "--milvus-storage", "--collection", *STORE_CONNECTION)
    p.add_argument("--html", help="write an HTML report (with PNG charts beside it)")
    add_options(p, "report", "--s3-endpoint-url")
    _common_cost_flags(p)
    return p


def _plan_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "plan", help="project storage, memory, GPUs and cost without a run",
                 description="Capacity plan from a model preset or explicit sizes.", epilog=PLAN_EXAMPLE)
    p.add_argument("--model", help="any preset --model takes (colpali, colqwen2, colqwen2-tiny, ..., sim:PRESET) or "
                   "nemoretriever-colembed-3b, jina-embeddings-v4, qwen3-vl-embedding-2b/8b, "
                   "llama-nemotron-embed-vl-1b-v2 (default with --calibration: the calibration's model)")
    p.add_argument("--vectors-per-page", type=float, help="vectors per page (instead of --model)")
    p.add_argument("--dim", type=int, help="dimensions per vector")
    p.add_argument("--dtype", help="stored dtype of the base layout: fp32, fp16, bf16, int8, bin")
    p.add_argument("--pages", type=page_count, default=1_000_000, help="corpus size: 1000000, 1e6, 1M, 250k (1M)")
    p.add_argument("--layouts", help="layouts to cost besides the base one, e.g. mv-pool3,mv-bin,sv-mean; text: the "
                   "text layer (text:all-MiniLM-L6-v2 chunks, dense and BM25)")
    p.add_argument("--calibration", help="profile from pagemill calibrate: GPU-hours, GPUs, CPU cores per GPU")
    p.add_argument("--deadline", type=float, help="hours to finish in (needs --calibration)")
    p.add_argument("--report", help="a pagemill report --json of a run with measured Milvus server bytes: Milvus "
                   "disk from the overhead measured there")
    p.add_argument("--store", choices=["milvus", "lancedb"], default="milvus",
                   help="the vector store to cost: milvus (memory and disk of a server, --index one of Milvus') or "
                        "lancedb (disk: data and index; memory: the index; --index NONE (exact, the default), IVF_PQ, "
                        "IVF_HNSW_SQ, IVF_HNSW_PQ, IVF_FLAT)")
    p.add_argument("--ocr-fraction", type=float, help="share of pages without a text layer (0-1): OCR's CPU is "
                   "added for them (default: the calibration's measured share, else 0)")
    p.add_argument("--duplicate-fraction", type=float, default=0.0, help="share of pages that are duplicates of "
                   "indexed documents (0-1): copied, not rendered or embedded (0)")
    p.add_argument("--page-images", help="cost the page images of ingest --page-images SPEC (webp:1024, ...)")
    p.add_argument("--gpus", type=int, help="GPUs of the fleet (default: those for --deadline, else 1); with a "
                   "calibration that measured every CPU stage, the plan sizes the rest for them")
    p.add_argument("--cpus", type=float, help="CPU cores the fleet has in all: a limit on its pages/s (default: "
                   "sized to keep the GPUs fed)")
    p.add_argument("--store-nodes", type=int, help="Milvus data nodes (LanceDB: writers) the fleet has: a limit on "
                   "its pages/s (default: sized to carry the GPUs)")
    p.add_argument("--store-rows-per-s", type=float, help="rows/s one Milvus data node (LanceDB writer) takes "
                   "(default: the calibration's, measured on a server given to calibrate --vectors, else an "
                   "assumption the plan names)")
    _common_cost_flags(p)
    return p


CALIBRATE_EXAMPLE = """examples:
  pagemill calibrate ./sample-pdfs --model colqwen2-tiny --weights random
  pagemill calibrate s3://archive/sample/ --model colqwen2 --weights random --device cuda --batch-size 16 --out calib.json

Random weights measure the real architecture's speed without a download; feed the profile to
`pagemill plan --calibration calib.json`.
"""


def _calibrate_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "calibrate", help="measure pages/s, vectors/page and memory of a model on this device",
                 description="Calibration profile for capacity planning.", epilog=CALIBRATE_EXAMPLE)
    add_options(p, "calibrate", "--model", "--weights", "--device", "--dtype", "--max-pixels")
    p.add_argument("--pages", type=int, default=16, help="pages to embed (16)")
    add_options(p, "calibrate", "--batch-size")
    p.add_argument("source", nargs="?", help="a sample of your PDFs: folder or s3:// prefix (the render rate and "
                   "vectors per page are measured on them)")
    p.add_argument("--synthetic", action="store_true", help="no sample: a generated text-and-table page, repeated (its "
                   "render rate is far above real documents': not for planning)")
    add_options(p, "calibrate", "--layouts", "--vectors", "--milvus", *STORE_CONNECTION, "--milvus-index", "--milvus-bulk-dir",
                "--s3-endpoint-url")
    p.add_argument("--out", help="also write the JSON profile here")
    return p


def _calibrate(args) -> int:
    from operators.io.s3 import S3Options
    from operators.models import ModelSpec
    from operators.models.spec import split_model_specs
    from operators.stores import given_uri
    from pipelines.analysis.calibrate import calibrate
    from pipelines.ingest.stage_costs import stage_costs
    from pipelines.options import store_options

    if bool(args.source) == bool(args.synthetic):
        raise UsageError("calibrate needs a sample of your PDFs (pagemill calibrate SOURCE: a folder or s3:// prefix), "
                         "or --synthetic to try it on a generated page" if not args.source else
                         "calibrate: give SOURCE or --synthetic, not both")
    visual, _ = split_model_specs(args.model)
    spec = ModelSpec(name=visual, weights=args.weights, device=args.device, dtype=args.dtype,
                     max_pixels=args.max_pixels)
    # the store the stage pass writes to, and how it connects (the options given, no defaults)
    given = {k: v for k, v in store_options(args).items() if getattr(args, k, None) not in (None, [], ())}
    profile = calibrate(spec, n_pages=args.pages, batch_size=args.batch_size, source=args.source,
                        s3_options=S3Options(endpoint_url=args.s3_endpoint_url),
                        stage_pass=functools.partial(stage_costs, model=args.model, vectors=given_uri(given),
                                                     layouts=[x for x in (args.layouts or "").split(",") if x.strip()],
                                                     store_options=given),
                        say=lambda line: args.console.write(f"[pagemill] {line}\n"))
    text = json.dumps(profile, indent=2, sort_keys=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    _print(args, text)
    return 0


SEARCH_EXAMPLE = """examples:
  pagemill search "revenue by region" --out demo-out
  pagemill search "revenue by region" --out demo-out --stage1 patches --rerank mv-pool3 --json
  pagemill search "a phrase you remember" --out demo-out --stage1 text --rerank none --text-weights bm25=1,dense=1
"""


def _search_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "search", help="two-stage search (ANN, then exact MaxSim) to check an index",
                 description="Cascade search over a pagemill index.", epilog=SEARCH_EXAMPLE)
    p.add_argument("query", help="the query text")
    p.add_argument("--out", required=True, help="output root of a run (its shards and, by default, its Milvus)")
    add_options(p, "search", "--vectors", "--milvus", "--collection")
    p.add_argument("-k", type=int, default=10, help="results (10)")
    p.add_argument("--candidates", type=int, default=100, help="pages from stage 1 (100)")
    p.add_argument("--stage1", default="sv-mean",
                   help="ANN stage: sv-mean, sv-fde, patches (the mv rows), another multi-vector layout in Milvus "
                   "(mv-pool3, ...); or the text layer: text (BM25 and dense text fused), text-bm25, text-dense "
                   "(sv-mean)")
    p.add_argument("--text-weights", default="bm25=1,dense=0.25",
                   help="weights of the text layer's lists in the fusion (reciprocal rank, k=60) (bm25=1,dense=0.25)")
    p.add_argument("--hybrid", action="store_true",
                   help="fuse the visual stage 1 with the text-layer stage 1 (reciprocal rank fusion)")
    p.add_argument("--rerank", default="auto",
                   help="multi-vector layout for exact MaxSim, none, or auto (the default: mv; after a --stage1 text "
                        "on an index with random weights, none: its MaxSim is noise)")
    p.add_argument("--rerank-order", default="auto", choices=["auto", "replace", "fuse"],
                   help="the rerank's order replaces stage 1's, or is fused with it by reciprocal rank, the stage-1 "
                        "winner kept first unless the rerank puts it in the bottom half (auto: fuse after --stage1 "
                        "text, replace after a visual stage 1)")
    p.add_argument("--vectors-from", default="parquet", choices=["parquet", "store", "milvus"],
                   help="where stage 2 reads vectors: the archive, or the vector store (milvus: the same) (parquet)")
    add_options(p, "search", "--corpus", *STORE_CONNECTION, "--s3-endpoint-url", "--json")
    return p


LOAD_EXAMPLE = """examples:
  pagemill milvus-load demo-out --milvus http://milvus:19530
  pagemill milvus-load demo-out --milvus http://milvus:19530 --recreate --milvus-index mv=IVF_PQ:nlist=1024,m=32

Reads only the committed shards (the ledger's), one batch at a time, and upserts them: running it
again after an interruption finishes the job. --recreate drops the collections first (needed to
change a field's index or vector type).
"""


def _load_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "milvus-load", help="(re)build the Milvus side of an index from its Parquet shards",
                 description="Load OUT/pages into Milvus.", epilog=LOAD_EXAMPLE)
    p.add_argument("out", help="output root of a run (folder, file:// or s3://)")
    add_options(p, "milvus-load", "--vectors", "--milvus", "--collection")
    p.add_argument("--recreate", action="store_true", help="drop this index's collections first")
    p.add_argument("--bulk-dir", help="use Milvus' bulk import: stage row files here, where the server can read them "
                   "(its local storage, or s3://bucket/prefix in the bucket Milvus uses); needs empty collections")
    p.add_argument("--batch-pages", type=int, default=256, help="pages per upsert batch: the memory bound (256)")
    add_options(p, "milvus-load", "--milvus-index", "--milvus-mv-mode", "--milvus-layouts", "--milvus-partition-key",
                "--lancedb-index", "--lancedb-keep-days", "--corpus", *STORE_CONNECTION, "--s3-endpoint-url", "--json")
    return p


def _load(args) -> int:
    from operators.io.s3 import S3Options
    from pipelines.index.rebuild import rebuild, remember_store
    from pipelines.out.identity import index_base
    from pipelines.out.open import open_output

    if args.batch_pages <= 0:
        raise UsageError(f"--batch-pages: must be > 0, got {args.batch_pages}")
    store = open_output(args.out, S3Options(endpoint_url=args.s3_endpoint_url))
    vectors = _vectors(args, store, discover=False)
    summary = rebuild(store, vectors, index_base(store, args.collection), recreate=args.recreate,
                      batch_pages=args.batch_pages, corpus=args.corpus, bulk_dir=args.bulk_dir)
    moved = remember_store(store, vectors, args.out)
    if moved:
        args.console.write(f"pagemill: note: {moved}\n")
    if summary.get("text_layer_note"):
        args.console.write(f"pagemill: note: {summary['text_layer_note']}\n")
    if args.json:
        _print(args, json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print(args, f"loaded {summary['pages']} pages from {summary['shards']} shards into {summary['uri']} "
              f"in {summary['wall_s']:.1f} s: " + ", ".join(f"{c} {n}" for c, n in summary["row_counts"].items()))
    return 0


def _search(args) -> int:
    from operators.io.s3 import S3Options
    from pipelines.index.search import search
    from pipelines.index.text_search import parse_text_weights
    from pipelines.out.open import open_output

    for name, value in (("-k", args.k), ("--candidates", args.candidates)):
        if value < 1:
            raise UsageError(f"{name}: must be at least 1, got {value}")
    weights = parse_text_weights(args.text_weights)
    notes: list[str] = []
    store = open_output(args.out, S3Options(endpoint_url=args.s3_endpoint_url))
    vectors = _vectors(args, store)
    try:
        results = search(args.query, store, vectors, k=args.k, candidates=args.candidates, stage1_mode=args.stage1,
                         rerank=args.rerank, rerank_order=args.rerank_order, vectors_from=args.vectors_from,
                         hybrid=args.hybrid, corpus=args.corpus, text_weights=weights, notes=notes)
    finally:
        vectors.close()
    from pipelines.index.search import recorded_metadata

    meta = recorded_metadata(store)
    warnings = list(notes)
    visual_order = not args.stage1.startswith("text") or args.rerank not in ("none", "auto")
    if meta.weights == "random" and visual_order:
        warnings.append(f"this index was built with random weights ({meta.model} --weights random): its "
                        f"rankings are noise, a check that the machinery works; ingest with --weights hub for real ones")
    for w in warnings:
        args.console.write(f"pagemill: note: {w}\n")
    if args.json:
        _print(args, json.dumps({"query": args.query, "index": {"model": meta.model, "weights": meta.weights},
                                 "warnings": warnings, "results": results}, indent=2))
        return 0
    _print(args, f"{'rank':>4}  {'score':>10}  {'page_id':<24}  page  source_uri")
    for r in results:
        _print(args, f"{r['rank']:>4}  {r['score']:>10.4f}  {r['page_id']:<24}  {r['page_number']:>4}  {r['source_uri']}")
    return 0


STATUS_EXAMPLE = """examples:
  pagemill status demo-out
  pagemill status s3://archive/index/ --milvus http://milvus:19530 --json   # for a scheduler: .healthy, .problems
"""


def _status_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "status", help="what an OUT holds: its index, documents, shards, Milvus rows, runs, quarantine",
                 description="Look inside an OUT (read-only).", epilog=STATUS_EXAMPLE)
    p.add_argument("out", help="output root of a run (folder, file:// or s3://)")
    add_options(p, "status", "--vectors", "--milvus", "--collection", *STORE_CONNECTION, "--s3-endpoint-url", "--json")
    return p


def _status(args) -> int:
    from operators.io.s3 import S3Options
    from operators.stores import open_vectors, vectors_uri
    from pipelines.index.status import format_status, index_status
    from pipelines.options import store_options
    from pipelines.out.identity import recorded_store
    from pipelines.out.keys import LEDGER
    from pipelines.out.open import open_output

    store = open_output(args.out, S3Options(endpoint_url=args.s3_endpoint_url), first_run=True)
    vectors = _vectors(args, store, must_exist=False, skip_missing=True) if store.list(LEDGER) else None
    discovered = vectors is not None
    if vectors is None and (uri := vectors_uri(store_options(args), args.out, recorded_store(store))):
        vectors = open_vectors(uri, store_options(args), out=args.out)  # not opened: what it still has to do
    try:
        status = index_status(store, vectors, discovered=discovered)
    finally:
        if discovered:
            vectors.close()
    _print(args, json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    return 0


def _quarantine_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "quarantine", help="the documents and pages an OUT could not index, with the reasons",
                 description="List the quarantine of an OUT (read-only).",
                 epilog="example:\n  pagemill quarantine demo-out --reason encrypted")
    p.add_argument("out", help="output root of a run (folder, file:// or s3://)")
    p.add_argument("--reason", help="only this reason (open_error, encrypted, render_timeout, oom, ...)")
    add_options(p, "quarantine", "--s3-endpoint-url", "--json")
    return p


def _quarantine(args) -> int:
    from operators.io.s3 import S3Options
    from pipelines.index.status import quarantine_rows
    from pipelines.out.identity import active_generation
    from pipelines.out.keys import QUARANTINE_PREFIX
    from pipelines.out.ledger import Ledger
    from pipelines.out.open import open_output

    store = open_output(args.out, S3Options(endpoint_url=args.s3_endpoint_url))
    ledger = Ledger(store, active_generation(store))
    ledger.load()
    rows = quarantine_rows(store, [k for k in ledger.state.files if k.startswith(QUARANTINE_PREFIX + "/")])
    rows = [r for r in rows if args.reason is None or r["reason"] == args.reason]
    if args.json:
        _print(args, json.dumps(rows, indent=2, sort_keys=True))
        return 0
    _print(args, f"{'reason':<16} {'page':>5}  source_uri  (detail)")
    for r in rows:
        page = "" if r["page_number"] is None else str(r["page_number"])
        _print(args, f"{r['reason']:<16} {page:>5}  {r['source_uri']}  ({r['detail']})")
    return 0


def _relayout_parser(sub) -> argparse.ArgumentParser:
    p = _command(sub, "relayout", help="add layouts to an index from its archived multi-vectors (no model, CPU only)",
                 description="Compute added storage layouts from the full multi-vectors in the shards.",
                 epilog="example:\n  pagemill relayout demo-out --layouts mv-pool3,mv-bin --executor local")
    p.add_argument("out", help="output root of an index (folder, file:// or s3://)")
    add_options(p, "relayout", "--layouts", "--drop-layouts", "--vectors", "--milvus", "--executor", "--ray-address", *STORE_CONNECTION,
                "--s3-endpoint-url", "--summary", "--quiet")
    return p


def _relayout(args) -> int:
    """An ingest that embeds nothing: the listing is the index's own documents (all unchanged),
    so only the added layouts are computed, from the archive."""
    from operators.io.s3 import S3Options
    from pipelines.ingest.config import IngestConfig
    from pipelines.ingest.job import run_ingest
    from pipelines.options import store_options
    from pipelines.out.identity import load_committed_state
    from pipelines.out.open import open_output

    store = open_output(args.out, S3Options(endpoint_url=args.s3_endpoint_url))
    state = load_committed_state(store)
    if state is None or state.active is None:
        raise UsageError(f"{args.out}: no index to add layouts to: run pagemill ingest first")
    cfg = IngestConfig(source="", out=args.out, store=store_options(args), executor=args.executor or "ray",
                       ray_address=args.ray_address, layouts=args.layouts, drop_layouts=args.drop_layouts or [],
                       s3_endpoint_url=args.s3_endpoint_url, summary=args.summary, relayout_only=True)
    summary = run_ingest(cfg.validate(), log=args.console)
    if not args.quiet:
        _print(args, json.dumps(summary, indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pagemill", description="Batch indexing for visual document retrieval.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _ingest_parser(sub)
    _fidelity_parser(sub)
    _report_parser(sub)
    _plan_parser(sub)
    _calibrate_parser(sub)
    _search_parser(sub)
    _load_parser(sub)
    _status_parser(sub)
    _quarantine_parser(sub)
    _relayout_parser(sub)
    for name, p in sub.choices.items():
        if name != "ingest":  # ingest's options end with it
            add_options(p, name, "--verbose")
    return parser


def _report(args) -> int:
    from operators.io.s3 import S3Options
    from pipelines.analysis.costs import load_prices
    from pipelines.analysis.report import build_report, format_report, measure_run
    from pipelines.out.open import open_output

    store = open_output(args.out, S3Options(endpoint_url=args.s3_endpoint_url))
    vectors = _vectors(args, store, must_exist=False)
    try:
        measured = measure_run(store, vectors=vectors)
    finally:
        if vectors is not None:
            vectors.close()
    pages = args.pages
    report = build_report(measured, pages, load_prices(args.prices), args.index, args.replicas, args.threshold)
    text = format_report(report)
    if args.html:
        from pipelines.analysis.report_html import write_html

        write_html(report, text, args.html)
    _print(args, json.dumps(report, indent=2, sort_keys=True) if args.json else text)
    return 0


def _read_json(path: str, flag: str, hint: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{flag} {path}: {e}{hint}") from None


def _plan(args) -> int:
    from pipelines.analysis.capacity import check_calibration, format_plan, plan
    from pipelines.analysis.costs import load_prices

    calibration, model = None, args.model
    for flag, value in (("--gpus", args.gpus), ("--cpus", args.cpus), ("--store-nodes", args.store_nodes),
                        ("--store-rows-per-s", args.store_rows_per_s)):
        if value is not None and value <= 0:
            raise UsageError(f"{flag}: a positive number, got {value:g}")
    if args.calibration:
        calibration = _read_json(args.calibration, "--calibration", "")
        if not (args.vectors_per_page and args.dim):
            model = check_calibration(calibration, args.model)
    elif args.deadline:
        raise UsageError("--deadline needs --calibration (pages/s per GPU from pagemill calibrate)")
    measured = None
    if args.report:
        measured = _read_json(args.report, "--report", " (the output of pagemill report OUT --json)")
        if not isinstance(measured, dict) or "layouts" not in measured:
            raise UsageError(f"--report {args.report}: not the output of pagemill report OUT --json")
    result = plan(preset=model, vectors_per_page=args.vectors_per_page, dim=args.dim, dtype=args.dtype,
                  pages=args.pages, layouts=[x for x in (args.layouts or "").split(",") if x.strip()],
                  calibration=calibration, deadline_hours=args.deadline,
                  index=args.index or ("NONE" if args.store == "lancedb" else "AUTOINDEX"),
                  replicas=args.replicas, prices=load_prices(args.prices), measured=measured, store=args.store,
                  ocr_fraction=args.ocr_fraction, duplicate_fraction=args.duplicate_fraction,
                  page_images=args.page_images,
                  fleet={k: v for k, v in (("gpus", args.gpus), ("cpus", args.cpus), ("store_nodes", args.store_nodes),
                                           ("store_rows_per_s", args.store_rows_per_s)) if v is not None})
    _print(args, json.dumps(result, indent=2, sort_keys=True) if args.json else format_plan(result))
    return 0


def _fidelity(args) -> int:
    from operators.io.s3 import S3Options
    from operators.models import ModelSpec
    from pipelines.analysis.costs import human_bytes
    from pipelines.analysis.fidelity import measure_fidelity, save_fidelity
    from pipelines.index.search import recorded_metadata
    from pipelines.out.open import open_output

    store = open_output(args.out, S3Options(endpoint_url=args.s3_endpoint_url))
    recorded = recorded_metadata(store)
    spec = ModelSpec(name=args.model or recorded.model or "colqwen2-tiny",
                     weights=args.weights or recorded.weights or "random")
    if (spec.name.split("@", 1)[0], spec.weights) != ((recorded.model or spec.name).split("@", 1)[0],
                                                       recorded.weights or spec.weights):
        raise UsageError(f"{args.out} holds an index of {recorded.model} ({recorded.weights} weights); --model/--weights "
                         f"ask for {spec.name} ({spec.weights} weights), whose queries cannot score its vectors: "
                         f"leave them out (the index's model encodes the queries)")
    text_model = recorded.text_model
    vectors = _vectors(args, store, must_exist=False) if text_model else None
    text = None
    if vectors is not None:
        from pipelines.index.text_search import TextSearch

        text = TextSearch(vectors, text_model)
    try:
        result = measure_fidelity(store, spec, None, recorded.fde_params(), args.queries, seed=args.seed,
                                  max_pages=args.max_pages, text_model=text_model, text_search=text)
    finally:
        if vectors is not None:
            vectors.close()
    if result.get("note"):
        args.console.write(f"pagemill: note: {result['note']}\n")
    from operators.io.store import StoreError

    try:
        saved = save_fidelity(store, result, spec.name)
        args.console.write(f"pagemill: saved to {args.out.rstrip('/')}/{saved} (pagemill report shows it)\n")
    except StoreError as e:  # a read-only OUT is measured all the same
        args.console.write(f"pagemill: note: not saved ({e}): pagemill report will not show it\n")
    if args.json:
        _print(args, json.dumps(result, indent=2, sort_keys=True))
        return 0
    _print(args, f"{result['queries']} queries over {result['pages']} pages (seed {result['seed']}); reference: mv MaxSim")
    _print(args, f"{'layout':<16}{'vectors/page':>14}{'bytes/page':>12}{'recall@10':>11}{'nDCG@10':>10}")
    rows = sorted(result["layouts"].items(), key=lambda kv: -kv[1]["bytes_per_page"])
    for name, r in rows:
        _print(args, f"{name:<16}{r['vectors_per_page']:>14.1f}{human_bytes(r['bytes_per_page']):>12}"
              f"{r['recall_at_10']:>11.3f}{r['ndcg_at_10']:>10.3f}")
    t = result.get("text_layer")
    if t:
        _print(args, f"text layer: the source page of each of {t['queries']} sentences, searched in {t['searched']}")
        _print(args, f"{'list':<16}{'first':>8}{'top 3':>8}{'top 10':>8}")
        for name, r in t["lists"].items():
            _print(args, f"{name:<16}{r['recall_at_1']:>8.3f}{r['recall_at_3']:>8.3f}{r['recall_at_10']:>8.3f}")
        if t.get("note"):
            _print(args, f"note: {t['note']}")
    return 0


def _ingest(args) -> int:
    from pipelines.ingest.config import build_config, load_config_file
    from pipelines.ingest.job import run_ingest
    from pipelines.ingest.metrics import RunMetrics

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config", "quiet", "verbose", "console")}
    given = {k: v for k, v in overrides.items() if v is not None}
    # The metrics exist before any other option is checked (main pushes the exit status at the
    # end): from the command line first, in case the config file cannot be read.
    args.metrics = RunMetrics.for_options(given, warn=args.console.write)
    file_values = load_config_file(args.config) if args.config else {}
    args.metrics = RunMetrics.for_options({**file_values, **given}, warn=args.console.write)
    cfg = build_config(file_values, overrides)
    summary = run_ingest(cfg, log=args.console, metrics=args.metrics)
    if not args.quiet:
        _print(args, json.dumps(summary, indent=2, sort_keys=True))
    return 0


def _print(args, *parts) -> None:
    """A result line on stdout (the real one, while the libraries' output goes to the log)."""
    print(*parts, file=args.console.out if hasattr(args, "console") else sys.stdout)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong and where the help is, not 40 lines of usage."""

    def error(self, message: str):
        self.exit(EXIT_CONFIG, f"pagemill: {message} (see: {self.prog} --help)\n")


COMMANDS = {"ingest": "_ingest", "fidelity": "_fidelity", "report": "_report", "plan": "_plan",
            "calibrate": "_calibrate", "search": "_search", "milvus-load": "_load", "status": "_status",
            "quarantine": "_quarantine", "relayout": "_relayout"}


def fork_safe_grpc() -> None:
    """Before anything imports gRPC (pymilvus, Ray): turn off gRPC's fork handlers. With them on,
    grpcio >= 1.80 restarts its poller in the child of every fork while a channel is busy, and
    about 1 child in 70 then dies before it can exec (grpc/grpc#43055): Ray starts its GCS and
    raylets with subprocess.Popen(preexec_fn=...), a fork, after the driver has opened Milvus, so
    a node could silently fail to start. pagemill never uses gRPC in a forked child (its renderer
    is a fresh interpreter), which is all that fork support is for."""
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC's fork notices are noise for users


def main(argv: list[str] | None = None) -> int:
    fork_safe_grpc()
    from pipelines.console import Console

    parser = build_parser()
    args = parser.parse_args(argv)
    args.console = Console(verbose=getattr(args, "verbose", False))
    code = EXIT_FAILED  # (an exception PAGEMILL_DEBUG lets through)
    try:
        code = _run(args)
        return code
    finally:
        if getattr(args, "metrics", None) is not None:  # ingest --pushgateway / --metrics-textfile
            args.metrics.end(code)


def entry() -> None:
    """The ``pagemill`` command: ``main``, then Python's exit without C++'s.

    Arrow's thread pools (any Parquet read starts them) can abort a process from C++'s static
    destructors after all its work and output are done: "terminate called without an active
    exception", exit 134 (apache/arrow#34314; pyarrow 26: 2 runs in 300 of ``pagemill quarantine``
    on a loaded machine). A scheduler would read that as a failed job. So the command does what
    Python's own exit does first (waits for its non-daemon threads, runs the atexit handlers: Ray's
    shutdown, Milvus Lite's server, temporary files, logging), flushes its output, and leaves with
    ``os._exit``, which runs no C++ destructors. ``main`` itself exits nothing (tests call it)."""
    import atexit
    import threading

    code = main()
    # Python's own order: its threading exit hooks (they wake idle executor workers) and the join of
    # non-daemon threads, then the atexit handlers
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: the reader has gone
            pass
    os._exit(code)


def _run(args) -> int:
    """The command, its errors as one line and an exit status."""
    from operators.io.sources import SourceError
    from operators.io.store import StoreError
    from operators.models import ModelError
    from operators.stores.door import VectorStoreError
    from pipelines.ingest.config import ConfigError
    from pipelines.out.lock import LockError

    console = args.console
    where = ""
    try:
        with console.capture():
            try:
                return globals()[COMMANDS[args.command]](args)
            finally:
                where = f" (details: {console.log_path})" if console.log_path and console.log_text().strip() else ""
    except BrokenPipeError:
        # `pagemill search ... | head`: the reader has what it wanted.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as e:
        print(f"pagemill: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (SourceError, ModelError, UsageError) as e:  # the input is wrong: what, and what to do
        print(f"pagemill: error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (VectorStoreError, LockError, StoreError) as e:
        print(f"pagemill: error: {e}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("pagemill: interrupted; committed units are kept, re-run to resume", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("PAGEMILL_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"pagemill: failed: {type(e).__name__}: {first}{where} (PAGEMILL_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    entry()
