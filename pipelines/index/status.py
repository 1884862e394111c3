"""`pagemill status` and `pagemill quarantine`: look inside an OUT without changing it.

Status gives what the index is (its identity, and a reindex in progress), its documents by
status, pages, shards and bytes, each Milvus collection's rows against what the shards say it
should hold, the last runs, the quarantine by reason, and files no commit accounts for; with
``healthy`` and ``problems`` for a scheduler to alert on (``--json``). The rows a store should
hold come from the shards (their page counts and vector list lengths).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq

from operators import schema as S
from operators.io.store import OutputStore
from operators.stores.door import VectorStore
from operators.stores.parquet import read_table
from pipelines.out.identity import load_state
from pipelines.out.keys import IMAGES_PREFIX, PAGES_PREFIX, QUARANTINE_PREFIX, RUNS_PREFIX
from pipelines.out.ledger import STATUSES, Ledger

RECENT_RUNS = 5
EXAMPLES = 3


def _ledger(store: OutputStore, generation: int) -> Ledger:
    ledger = Ledger(store, generation)
    ledger.load()
    return ledger


def docs_by_status(ledger: Ledger) -> tuple[dict[str, int], int]:
    """Documents per status and pages committed, over the snapshot's columns and the overlay."""
    state = ledger.state
    counts = Counter()
    pages = 0
    mask = np.ones(len(state.base_keys), bool)
    for key, d in state.overlay.items():
        row = state.base_rows(np.array([key], np.uint64))[0]
        if row >= 0:
            mask[row] = False
        if d is not None:
            counts[d.status] += 1
            pages += d.n_pages
    for code, n in zip(*np.unique(state.base_status[mask], return_counts=True)):
        counts[STATUSES[int(code)]] += int(n)
    pages += int(state.base_pages[mask].sum())
    return {s: counts.get(s, 0) for s in STATUSES}, pages


def vectors_in(store: OutputStore, keys: list[str], columns: list[str]) -> dict[str, int]:
    """Vectors per multi-vector column of these shards (``n_vectors`` for ``mv``; the list
    lengths of the others, which means reading those columns: status on a large archive is a
    diagnostic, not a hot path)."""
    import pyarrow.compute as pc

    out: Counter = Counter()
    for key in keys:
        pf = pq.ParquetFile(store.open_input(key))
        have = set(pf.schema_arrow.names)
        wanted = [c for c in columns if c in have and c != "mv"]
        table = pf.read(columns=["n_vectors", *wanted])
        out["mv"] += int(pc.sum(table["n_vectors"]).as_py() or 0)
        for c in wanted:
            out[c] += int(pc.sum(pc.list_value_length(table[c])).as_py() or 0)
    return dict(out)


def page_detail(store: OutputStore, keys: list[str]) -> dict:
    """Near-duplicate pages (a perceptual hash an earlier page has) and where the pages' text came
    from, over the shards' ``page_hash`` and ``text_source`` columns (shards of an earlier pagemill
    have neither)."""
    hashes: Counter = Counter()
    sources: Counter = Counter()
    for key in keys:
        pf = pq.ParquetFile(store.open_input(key))
        have = [c for c in (S.PAGE_HASH, S.TEXT_SOURCE) if c in pf.schema_arrow.names]
        if not have:
            continue
        table = pf.read(columns=have)
        if S.PAGE_HASH in have:
            hashes.update(h for h in table[S.PAGE_HASH].to_pylist() if h is not None)
        if S.TEXT_SOURCE in have:
            sources.update(v or "none" for v in table[S.TEXT_SOURCE].to_pylist())
    return {"near_duplicate_pages": sum(n - 1 for n in hashes.values()),
            "text_sources": {k: sources[k] for k in sorted(sources)}}


def index_status(store: OutputStore, vectors: VectorStore | None = None, discovered: bool = False,
                 recent: int = RECENT_RUNS) -> dict:
    """``vectors``: the index's store (``discovered``: its tables opened, to count their rows)."""
    from pipelines.out.open import first_run_holder

    state = load_state(store)
    if state is None or state.active is None:
        under_way = first_run_holder(store)
        return {"out": store.uri, "index": None, "healthy": False, "first_run": under_way,
                "problems": [f"no index in this OUT yet: {under_way}" if under_way else "no index in this OUT yet"]}
    problems = []
    active = state.active
    ledger = _ledger(store, active.generation)
    docs, pages = docs_by_status(ledger)
    other_live = set()
    for other in (state.pending, state.retired):
        if other is not None:
            other_live |= _ledger(store, other.generation).state.live_files()
    live = ledger.state.live_files()
    listed = {o.key: o.size for prefix in (PAGES_PREFIX, QUARANTINE_PREFIX, IMAGES_PREFIX) for o in store.list(prefix)}

    def is_live(k: str) -> bool:  # (a part's folder of page images is live as a whole)
        folder = k.rsplit("/", 1)[0] + "/"
        return k in live or k in other_live or folder in live or folder in other_live

    orphans = sorted(k for k in listed if not is_live(k) and not k.rsplit("/", 1)[-1].startswith("_"))
    images = [size for k, size in listed.items() if k.startswith(IMAGES_PREFIX + "/") and is_live(k)]
    page_files = sorted(k for k in live if k.startswith(PAGES_PREFIX + "/"))
    out = {"out": store.uri, "index": active.to_json(), "describe": active.describe(),
           "documents": {**docs, "total": sum(docs.values())}, "pages": pages,
           "shards": {"pages": len(page_files), "quarantine": sum(1 for k in live if k.startswith(QUARANTINE_PREFIX + "/")),
                      "bytes": sum(listed.get(k, 0) for k in live)},
           "uncommitted_files": orphans, "ledger_records": ledger.state.records,
           **page_detail(store, page_files)}
    if images:
        out["page_images"] = {"files": len(images), "bytes": sum(images)}
    if orphans:
        problems.append(f"{len(orphans)} files no commit accounts for (an interrupted run): the next ingest removes them")
    if state.pending is not None:
        p = _ledger(store, state.pending.generation)
        pdocs, ppages = docs_by_status(p)
        out["reindex"] = {"to": state.pending.describe(), "generation": state.pending.generation,
                          "documents_done": sum(pdocs.values()), "of": sum(docs.values()), "pages_done": ppages}
    if state.retired is not None:
        problems.append(f"generation {state.retired.generation} was swapped out and not yet cleaned up: the next "
                        f"ingest removes it")
    if active.building:
        problems.append(f"{', '.join(active.building)} added but not yet on every document: run ingest to finish")
    if vectors is not None:
        problems += vectors.pending(ledger)
    if vectors is not None and discovered:
        counts = vectors_in(store, page_files, vectors.count_columns())
        expected = vectors.expected_rows(pages - _quarantined_pages(ledger), counts)
        out[vectors.name] = {}
        out["store"] = {"kind": vectors.name, "title": vectors.title, "at": vectors.label}
        for c, have in vectors.counts().items():
            want = expected.get(c)
            out[vectors.name][c] = {"rows": have, "expected": want}
            if want is not None and have != want:
                problems.append(f"{vectors.title} {c} holds {have} rows, the shards say {want}: pagemill milvus-load "
                                f"repairs it")
    out["runs"] = recent_runs(store, recent)
    out["quarantine"] = quarantine_summary(store, [k for k in live if k.startswith(QUARANTINE_PREFIX + "/")])
    out["problems"] = problems
    out["healthy"] = not problems
    return out


def _quarantined_pages(ledger: Ledger) -> int:
    return 0  # quarantined documents commit 0 pages; partial ones commit their good pages only


def recent_runs(store: OutputStore, n: int) -> list[dict]:
    runs = sorted((o.key for o in store.list(RUNS_PREFIX) if o.key.endswith(".json") and o.key.count("/") == 1),
                  reverse=True)
    out = []
    for key in runs[:n]:
        s = json.loads(store.read_bytes(key))
        out.append({"run_id": s["run_id"], "started_at": s.get("started_at"), "wall_s": s.get("wall_s"),
                    "documents": {k: s["documents"].get(k) for k in ("seen", "indexed", "quarantined", "skipped_unchanged")},
                    "pages": s.get("pages"), "mode": s.get("index", {}).get("mode"), "bottleneck": s.get("bottleneck")})
    return out


def quarantine_rows(store: OutputStore, keys: list[str]) -> list[dict]:
    rows = []
    for key in sorted(keys):
        rows += read_table(store.read_bytes(key)).to_pylist()
    return rows


def quarantine_summary(store: OutputStore, keys: list[str]) -> dict:
    by: dict[str, dict] = {}
    for r in quarantine_rows(store, keys):
        g = by.setdefault(r["reason"], {"documents": 0, "pages": 0, "examples": []})
        g["pages" if r["page_number"] is not None else "documents"] += 1
        if len(g["examples"]) < EXAMPLES:
            g["examples"].append({"source_uri": r["source_uri"], "page_number": r["page_number"], "detail": r["detail"]})
    return dict(sorted(by.items()))


def format_status(s: dict) -> str:
    if s.get("index") is None:
        return f"{s['out']}: {s['problems'][0]}"
    d = s["documents"]
    lines = [f"{s['out']}: {s['describe']}",
             f"  layouts: {', '.join(s['index']['layouts'])}; vectors in "
             f"{s['store']['at'] if s.get('store') else 'the vector store'}: {s['index']['milvus_base']}_*",
             f"  documents: {d['total']:,} ({d['indexed']:,} indexed, {d['partial']:,} partial, {d['quarantined']:,} "
             f"quarantined); pages {s['pages']:,}",
             f"  shards: {s['shards']['pages']:,} page, {s['shards']['quarantine']:,} quarantine; {s['shards']['bytes']:,} bytes"]
    if s.get("page_images"):
        lines.append(f"  page images: {s['page_images']['files']:,} files, {s['page_images']['bytes']:,} bytes")
    if s.get("near_duplicate_pages") or s.get("text_sources", {}).get("ocr"):
        lines.append(f"  near-duplicate pages: {s.get('near_duplicate_pages', 0):,}; page text: "
                     + ", ".join(f"{n:,} {k}" for k, n in s.get("text_sources", {}).items()))
    if "reindex" in s:
        r = s["reindex"]
        lines.append(f"  reindex to {r['to']}: {r['documents_done']:,} of {r['of']:,} documents done")
    kind = s.get("store", {}).get("kind")
    for c, m in (s.get(kind, {}) if kind else {}).items():
        mark = "" if m["expected"] is None or m["expected"] == m["rows"] else f"  (expected {m['expected']:,})"
        lines.append(f"  {kind} {c}: {m['rows']:,} rows{mark}")
    for reason, g in s["quarantine"].items():
        ex = g["examples"][0]
        lines.append(f"  quarantine {reason}: {g['documents']} documents, {g['pages']} pages (e.g. {ex['source_uri']}"
                     + (f" p{ex['page_number']}" if ex["page_number"] is not None else "") + ")")
    for r in s["runs"][:3]:
        lines.append(f"  run {r['run_id']}: {r['documents'].get('seen')} seen, {r['pages'].get('indexed')} pages indexed, "
                     f"{r['wall_s']} s")
    lines.append("  healthy" if s["healthy"] else "  problems: " + "; ".join(s["problems"]))
    return "\n".join(lines)
