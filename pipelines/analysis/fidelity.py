"""How much of the full multi-vector ranking each layout keeps, on the user's own corpus.

Pseudo-queries are sentences sampled (seeded) from the indexed pages' text layer, encoded with the
model's query path. The reference ranking is full ``mv`` MaxSim over the sampled pages; each layout
ranks the same pages with its own scoring, and we report recall@10 of the reference top-10 and
nDCG@10 with graded relevance from the reference order (rank r in the reference top-10 counts
10 - r). Pages without text are not query sources but stay in the ranked corpus.

The same sentences query the text layer (an index with ``text:<model>``): its recall is whether
the page a sentence came from comes back first, in the top 3, in the top 10 (``text_layer``): for
the fusion, BM25 and dense per chunk, searched in the index's vector store over every page;
without it, dense per chunk and per page only, exactly over the sampled pages.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators import schema as S
from operators.errors import UsageError
from operators.io.store import OutputStore
from operators.layouts.fde import FdeParams
from operators.layouts.layout import Layout, LayoutScorer, parse_layout
from operators.models import ModelSpec, adapter_for
from operators.stores.parquet import read_table
from pipelines.out.keys import FIDELITY_PREFIX, new_run_id

K = 10
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def sentences(text: str | None, min_words: int = 5, max_words: int = 30) -> list[str]:
    """Prose sentences of a text layer: capitalised, ending in . ! or ?, mostly words (table of
    contents lines, headers and number runs are not queries anyone types)."""
    if not text:
        return []
    out = []
    for raw in _SENTENCE_END.split(text):
        s = " ".join(raw.split())
        words = s.split()
        if not (min_words <= len(words) <= max_words) or not s[0].isupper() or s[-1] not in ".!?":
            continue
        numeric = sum(any(c.isdigit() for c in w) for w in words)
        if numeric <= 0.2 * len(words) and sum(c.isalpha() for c in s) >= 0.6 * len(s):
            out.append(s)
    return out


def sample_queries(texts: list[str | None], n: int, seed: int) -> list[tuple[int, str]]:
    """(source page index, sentence): at most one sentence per page, pages drawn without replacement."""
    rng = np.random.default_rng(seed)
    candidates = [(i, ss) for i, t in enumerate(texts) if (ss := sentences(t))]
    order = rng.permutation(len(candidates))[:n]
    return [(candidates[j][0], candidates[j][1][rng.integers(len(candidates[j][1]))]) for j in order]


def ranking_metrics(reference: np.ndarray, scores: np.ndarray, k: int = K) -> tuple[float, float]:
    """recall@k of the reference top-k, and nDCG@k against the reference order."""
    k = min(k, len(reference))
    ref_top = np.argsort(-reference, kind="stable")[:k]
    got_top = np.argsort(-scores, kind="stable")[:k]
    recall = len(set(ref_top) & set(got_top)) / k
    gain = np.zeros(len(reference))
    gain[ref_top] = k - np.arange(k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float((gain[ref_top] * discounts).sum())
    return recall, float((gain[got_top] * discounts).sum()) / ideal if ideal else 0.0


def read_pages(store: OutputStore, columns: list[str]) -> pa.Table:
    from pipelines.out.manifest import live_page_files

    tables = [read_table(store.open_input(key), columns=columns) for key in live_page_files(store)]
    return pa.concat_tables(tables).sort_by(S.PAGE_ID) if tables else pa.table({c: [] for c in columns})


def layouts_in(table_schema: pa.Schema) -> list[Layout]:
    """The layouts whose columns a pages table has."""
    out = []
    for name in table_schema.names:
        try:
            lay = parse_layout(name.replace("_", "-"))
        except ValueError:
            continue
        if lay.column == name:
            out.append(lay)
    return out


def score_layouts(queries: list[np.ndarray], table: pa.Table, layouts: list[Layout], dim: int,
                  fde: FdeParams | None = None) -> dict[str, dict]:
    """Fidelity of each layout against ``mv`` on the pages in ``table``."""
    reference = LayoutScorer(parse_layout("mv"), table, dim)
    ref_scores = [reference.scores(q) for q in queries]
    results = {}
    for lay in layouts:
        scorer = reference if lay.name == "mv" else LayoutScorer(lay, table, dim, fde)
        recalls, ndcgs = [], []
        for q, ref in zip(queries, ref_scores):
            r, n = ranking_metrics(ref, scorer.scores(q))
            recalls.append(r)
            ndcgs.append(n)
        results[lay.name] = {"recall_at_10": round(float(np.mean(recalls)), 4) if recalls else None,
                             "ndcg_at_10": round(float(np.mean(ndcgs)), 4) if ndcgs else None}
    return results


TEXT_KS = (1, 3, 10)


def _hits(ranks: list[int | None]) -> dict:
    return {f"recall_at_{k}": round(sum(1 for r in ranks if r is not None and r <= k) / max(1, len(ranks)), 4)
            for k in TEXT_KS}


def text_layer_recall(picked: list[tuple[int, str]], table: pa.Table, text_model: str, text_search=None) -> dict:
    """Recall of the text layer against the page each sentence came from: through the vector store
    (``text_search``, a ``pipelines.index.text_search.TextSearch``: the fusion and each of its lists),
    else exactly over ``table``'s chunk and page vectors."""
    from operators.models.text import text_embedder

    ids = table[S.PAGE_ID].to_pylist()
    model = text_search.embedder if text_search is not None else text_embedder(text_model)
    vectors = model.embed_queries([s for _, s in picked])
    ranks: dict[str, list] = {}

    def rank(name: str, ranked: list[str], source: str) -> None:
        ranks.setdefault(name, []).append(ranked.index(source) + 1 if source in ranked else None)

    if text_search is not None:
        for (i, sentence), v in zip(picked, vectors):
            found = text_search.search(sentence, max(TEXT_KS), "text", vector=v)
            rank("text", [p for p, _ in found.ranked], ids[i])
            for name, ranked in found.lists.items():
                rank(name, [p for p, _ in ranked], ids[i])
        out = {"searched": text_search.vectors.title}
    else:
        chunks = table[S.TEXT_CHUNKS].to_pylist()
        owner = np.array([j for j, c in enumerate(chunks) if c for _ in c], np.int64)
        flat = np.array([v for c in chunks if c for v in c], np.float32).reshape(len(owner), -1)
        pages = np.array([v if v is not None else np.zeros(flat.shape[1]) for v in table[S.SV_TEXT].to_pylist()],
                         np.float32)
        for (i, _), v in zip(picked, vectors):
            best = np.full(len(ids), -np.inf)
            np.maximum.at(best, owner, flat @ v)
            rank("text-dense", [ids[j] for j in np.argsort(-best, kind="stable")[:max(TEXT_KS)]], ids[i])
            rank("text-page-mean", [ids[j] for j in np.argsort(-(pages @ v), kind="stable")[:max(TEXT_KS)]], ids[i])
        out = {"searched": "parquet", "note": "BM25 and the fusion are searched in the vector store: run pagemill "
               "fidelity with the index's store (the one OUT/_index.json records, OUT/milvus.db, or --vectors)"}
    return {**out, "queries": len(picked), "lists": {name: _hits(r) for name, r in ranks.items()}}


def measure_fidelity(store: OutputStore, spec: ModelSpec, layouts: list[Layout] | None, fde: FdeParams | None,
                     n_queries: int, seed: int = 0, max_pages: int = 5000, text_model: str | None = None,
                     text_search=None) -> dict:
    """Sample pages and queries from ``OUT/pages``, encode the queries, score every layout; and,
    given the index's ``text_model``, the text layer's recall of the source page."""
    from pipelines.analysis.layout_stats import bytes_per_vector, layout_vector_counts
    from pipelines.out.manifest import live_page_files

    schema = None
    for key in live_page_files(store)[-1:]:
        schema = pq.read_schema(store.open_input(key))
    if schema is None:
        raise UsageError("OUT/pages is empty: nothing to measure")
    present = layouts_in(schema)
    # sv-vlm-* are the single-vector model's vectors, searched with its own queries: not scored here
    layouts = [lay for lay in (layouts or present) if lay.column in schema.names and lay.pooling != "vlm"]
    extra_cols = [c for lay in layouts for c in (lay.column, lay.scale_column) if c]
    text_cols = [S.SV_TEXT, S.TEXT_CHUNKS] if text_model and S.TEXT_CHUNKS in schema.names else []
    cols = list(dict.fromkeys([S.PAGE_ID, S.TEXT, S.MV, *extra_cols, *text_cols]))
    table = read_pages(store, cols)
    if table.num_rows > max_pages:
        idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, max_pages, replace=False))
        table = table.take(pa.array(idx))
    texts = table[S.TEXT].to_pylist()
    picked = sample_queries(texts, n_queries, seed)
    if not picked:
        raise UsageError("no page has a text layer with usable sentences: fidelity needs text queries")
    adapter = adapter_for(spec)
    queries = []
    for start in range(0, len(picked), 16):
        queries += adapter.embed_queries([s for _, s in picked[start:start + 16]])
    dim = int(table.schema.field(S.MV).type.value_type.list_size)
    metrics = score_layouts(queries, table, layouts, dim, fde)
    for lay in layouts:
        counts = layout_vector_counts(table, lay)
        metrics[lay.name].update(vectors_per_page=round(float(counts.mean()), 3),
                                 bytes_per_page=round(float(counts.mean()) * bytes_per_vector(lay, dim, fde or FdeParams()), 1))
    usable = sum(1 for t in texts if sentences(t))
    out = {"queries": len(picked), "pages": table.num_rows, "seed": seed, "layouts": metrics}
    if text_cols:
        out["text_layer"] = text_layer_recall(picked, table, text_model, text_search)
    if len(picked) < n_queries:
        out["note"] = (f"{n_queries} queries asked, {len(picked)} measured: only {usable} of the {table.num_rows} pages "
                       f"have a sentence usable as a query (capitalised, 5 to 30 words, ending in . ! or ?; one per page)")
    return out


def save_fidelity(store: OutputStore, result: dict, model: str | None) -> str:
    """``OUT/_fidelity/<time>.json``: what ``pagemill report`` shows as the layouts' fidelity."""
    import json


    key = f"{FIDELITY_PREFIX}/{new_run_id()}.json"
    store.write_bytes(key, json.dumps({**result, "model": model}, indent=2, sort_keys=True).encode())
    return key


def latest_fidelity(store: OutputStore, model: str | None = None) -> dict[str, dict]:
    """Fidelity per layout from the newest measurement of this model: ``pagemill fidelity``'s
    saved results, or a run summary (``ingest --fidelity-queries``), whichever is newer."""
    import json

    found = []
    for prefix, get in ((FIDELITY_PREFIX, lambda d: d.get("layouts", {})),
                        ("_runs", lambda d: {k: v["fidelity"] for k, v in d.get("layouts", {}).items() if "fidelity" in v})):
        for obj in store.list(prefix):
            if obj.key.endswith(".json") and obj.key.count("/") == 1:
                found.append((obj.key.split("/", 1)[1], obj.key, get))
    for _, key, get in sorted(found, reverse=True):
        data = json.loads(store.read_bytes(key))
        recorded = data.get("model")
        name = (recorded.get("model") or recorded.get("name")) if isinstance(recorded, dict) else recorded
        if model and name and name != model:
            continue  # measured on an index of another model (before a --reindex)
        layouts = {k: {m: v[m] for m in ("recall_at_10", "ndcg_at_10") if m in v} for k, v in get(data).items()}
        if layouts:
            return layouts
    return {}
