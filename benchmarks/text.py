"""The text layer: does a phrase the user remembers find its page? Four searches side by side in
one run, on the same pages and the same queries.

    python -m benchmarks.text [--pages 2500] [--queries 200] [--seed 21] [--corpus DIR] [--save-lists FILE]

Pages: the dev corpus' text-heavy documents (text, papers, tables, diagrams, charts, slides;
whole documents, drawn at random with the seed until ``--pages`` pages with text are in), their
text layers as PyMuPDF reads them (what ingest's render stage keeps). Each page's chunks are
embedded once with ``text:all-MiniLM-L6-v2`` and written to a Milvus Lite ``NAME_text`` collection
by pagemill's own writer (chunk vectors and BM25 text); the searches are pagemill's
(``pipelines/index/text_search.py``):

1. dense page-mean: one vector per page, the normalised mean of its chunks' vectors (``sv_text``;
   the page as one vector, as the text layer was before chunks), exact inner product;
2. dense per chunk (``--stage1 text-dense``): each page scored by its best chunk, in Milvus;
3. BM25 (``--stage1 text-bm25``): Milvus' BM25 function over the chunks, best chunk per page;
4. fusion (``--stage1 text``): reciprocal rank fusion of 2 and 3 (k = 60), at search's default
   weights (``--text-weights bm25=1,dense=0.25``) and at equal weights;
5. the fusion reranked by the visual model's MaxSim on the page images (``--model``, default
   ``colqwen2-tiny`` with random weights; ``--model colqwen2 --weights hub`` where its weights
   are): MaxSim's order replacing the fusion's (``--rerank-order replace``), and the two orders
   fused (``pipelines.index.search.fuse_orders``, ``--rerank-order fuse``: search's default after a
   text stage 1 when the weights are real; with random weights search skips the rerank).

Queries (seeded): ``verbatim``: a prose sentence (5-30 words, ``pipelines.analysis.fidelity.sentences``)
copied from a random page, one that no other page contains (a running header has no single
source page); ``paraphrased``: the same sentence with a third of its words dropped and two
neighbouring pairs swapped. A hit: the source page is first (top-1) or in the first three (top-3).
Target for the fusion: top-3 >= 90% and top-1 >= 80% of the verbatim sentences.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.render import DEFAULT_CORPUS
from operators import schema as S
from operators.models.text import TextEmbedder, has_text

CATEGORIES = ("text", "papers", "tables", "diagrams", "charts", "slides")

CANDIDATES = 100  # pages per list, as search's --candidates
METHODS = ("dense page-mean (one vector a page)", "dense per chunk (`text-dense`)", "BM25 (`text-bm25`)",
           "fusion (`text`: BM25 + dense, RRF k=60, bm25=1,dense=0.25: the default)",
           "fusion, equal weights (`--text-weights bm25=1,dense=1`)",
           "fusion, then MaxSim's order (`--rerank mv --rerank-order replace`)",
           "fusion and MaxSim's order fused (`--rerank mv`: the default with real weights)")


def load_pages(corpus: Path, n_pages: int, seed: int) -> list[dict]:
    """Whole documents of the text-heavy categories, in a seeded random order, until n_pages
    pages with a text layer."""
    import pymupdf

    with open(corpus / "EXPECT.tsv") as f:
        docs = [r["file"] for r in csv.DictReader(f, delimiter="\t")
                if r["file"].split("/")[0] in CATEGORIES and r["expectation_pymupdf_2.0"] in ("ok", "ok_repaired")]
    random.Random(seed).shuffle(docs)
    pages = []
    for name in docs:
        uri = (corpus / name).resolve().as_uri()
        with pymupdf.open(corpus / name) as doc:
            for i, page in enumerate(doc):
                text = page.get_text()
                if has_text(text) and len(text.split()) >= 20:
                    pages.append({S.PAGE_ID: S.page_id_for(uri, i), S.DOC_ID: S.doc_id_for(uri), S.DOC_VERSION: "v1",
                                  S.SOURCE_URI: uri, S.PAGE_NUMBER: i, S.TEXT: text})
        if len(pages) >= n_pages:
            break
    return pages[:n_pages]


def make_queries(pages: list[dict], n: int, seed: int) -> list[tuple[str, str, str]]:
    """(source page id, verbatim sentence, paraphrase), seeded."""
    from pipelines.analysis.fidelity import sentences

    rng = random.Random(seed)
    flat = [" ".join(p[S.TEXT].split()) for p in pages]
    order = list(range(len(pages)))
    rng.shuffle(order)
    out = []
    for i in order:
        own = [s for s in sentences(pages[i][S.TEXT]) if len(s.split()) >= 8]
        rng.shuffle(own)
        unique = next((s for s in own if sum(s in f for f in flat) == 1), None)
        if unique is None:
            continue
        out.append((pages[i][S.PAGE_ID], unique, paraphrase(unique, rng)))
        if len(out) >= n:
            break
    return out


def paraphrase(sentence: str, rng: random.Random) -> str:
    """A third of the words dropped, then two neighbouring pairs swapped."""
    words = sentence.rstrip(".!?").split()
    keep = sorted(rng.sample(range(len(words)), max(3, len(words) - len(words) // 3)))
    words = [words[i] for i in keep]
    for _ in range(2):
        j = rng.randrange(len(words) - 1)
        words[j], words[j + 1] = words[j + 1], words[j]
    return " ".join(words)


def build_index(pages: list[dict], model: TextEmbedder, uri: str) -> tuple:
    """The chunks' vectors (one embedding pass), the page means, and the text layer in Milvus Lite
    written by pagemill's own store. Returns (the store, page means, seconds embedding, seconds
    writing, chunks)."""
    from operators.embed import text_columns
    from operators.layouts.layout import parse_layouts
    from operators.stores import IndexShape, open_vectors
    from pipelines.options import store_options

    texts = [p[S.TEXT] for p in pages]
    t = time.perf_counter()
    page_col, chunk_col = text_columns(model, texts, list(range(len(texts))))
    embed_s = time.perf_counter() - t
    table = pa.table({**{k: [p[k] for p in pages] for k in pages[0]}, S.SV_TEXT: page_col, S.TEXT_CHUNKS: chunk_col})
    store = open_vectors(uri, store_options({}))
    store.prepare(IndexShape(base="bench", dim=128, layouts=tuple(parse_layouts([])), text_dim=model.dim))
    writer = store.writer(layouts=["text"])  # the text layer alone
    writer.open()
    t = time.perf_counter()
    for start in range(0, table.num_rows, 256):
        writer.write("bench", table.slice(start, 256))
    store.flush()
    write_s = time.perf_counter() - t
    writer.close()
    means = np.asarray(page_col.values.to_numpy(zero_copy_only=False), np.float32).reshape(len(texts), -1)
    return store, means, embed_s, write_s, sum(len(c) for c in chunk_col.to_pylist())


def embed_page_images(pages: list[dict], model: str, weights: str) -> tuple:
    """The visual model (its adapter), each page's multi-vector (rendered at its budget, embedded
    in batches of 8), and the seconds it took."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    import pymupdf

    from operators.models import ModelSpec, adapter_for, decide_budget
    from operators.render import target_size

    t = time.perf_counter()
    adapter = adapter_for(decide_budget(ModelSpec(model, weights=weights)))
    budget = adapter.pixel_budget()
    images = []
    for p in pages:
        with pymupdf.open(url2pathname(urlparse(p[S.SOURCE_URI]).path)) as doc:
            page = doc[p[S.PAGE_NUMBER]]
            w, h = target_size(page.rect.width, page.rect.height, budget)
            pix = page.get_pixmap(matrix=pymupdf.Matrix(w / page.rect.width, h / page.rect.height), alpha=False)
            images.append(np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width, 3)[:h, :w])
    vectors = {}
    for start in range(0, len(images), 8):
        for p, emb in zip(pages[start:start + 8], adapter.embed_images(images[start:start + 8])):
            vectors[p[S.PAGE_ID]] = emb.vectors
    return adapter, vectors, time.perf_counter() - t


def rerank_orders(ranked: list[tuple[str, float]], query: np.ndarray, page_mv: dict) -> tuple[list[str], list[str]]:
    """The stage-1 candidates by MaxSim (replacing their order), and both orders fused."""
    from pipelines.index.search import fuse_orders

    scored = sorted(((pid, float((query @ page_mv[pid].T).max(axis=1).sum())) for pid, _ in ranked),
                    key=lambda x: (-x[1], x[0]))
    return [p for p, _ in scored], [p for p, _ in fuse_orders(ranked, scored)]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ap.add_argument("--pages", type=int, default=2500)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--save-lists", help="write each query's BM25 and dense page lists here (JSON lines), to try "
                    "other fusions without embedding again")
    ap.add_argument("--model", default="colqwen2-tiny", help="the visual model whose MaxSim reranks (colqwen2-tiny)")
    ap.add_argument("--weights", default="random", help="its weights: random (default) or hub")
    args = ap.parse_args(argv)
    saved = open(args.save_lists, "w") if args.save_lists else None
    from pipelines.index.text_search import TextSearch, weighted_rrf

    t0 = time.perf_counter()
    pages = load_pages(Path(args.corpus), args.pages, args.seed)
    queries = make_queries(pages, args.queries, args.seed)
    model = TextEmbedder("all-MiniLM-L6-v2")
    model.load()
    with tempfile.TemporaryDirectory() as tmp:
        vectors, means, embed_s, write_s, n_chunks = build_index(pages, model, str(Path(tmp) / "bench.db"))
        ids = [p[S.PAGE_ID] for p in pages]
        visual, page_mv, visual_s = embed_page_images(pages, args.model, args.weights)
        text = TextSearch(vectors, "all-MiniLM-L6-v2", embedder=model)
        ranks = {kind: {m: [] for m in METHODS} for kind in ("verbatim", "paraphrased")}
        t = time.perf_counter()
        for source, verbatim, para in queries:
            for kind, q in (("verbatim", verbatim), ("paraphrased", para)):
                vec = model.embed_queries([q])[0]
                order = np.argsort(-(means @ vec), kind="stable")[:CANDIDATES]
                found = text.search(q, CANDIDATES, "text", vector=vec)
                equal = weighted_rrf(found.lists)
                if saved:
                    saved.write(json.dumps({"kind": kind, "source": source, "query": q, **found.lists}) + "\n")
                replaced, fused = rerank_orders(found.ranked, visual.embed_queries([q])[0], page_mv)
                lists = ([ids[i] for i in order], *([p for p, _ in found.lists[name]] for name in ("text-dense", "text-bm25")),
                         [p for p, _ in found.ranked], [p for p, _ in equal], replaced, fused)
                for m, ranked in zip(METHODS, lists):
                    ranks[kind][m].append(ranked.index(source) + 1 if source in ranked else None)
        search_s = time.perf_counter() - t
        if saved:
            saved.close()
        vectors.close()
    n = len(queries)
    lines = [f"Text layer: {len(pages)} pages ({len({p[S.DOC_ID] for p in pages})} documents of the dev corpus' "
             f"{', '.join(CATEGORIES)}), {n_chunks} chunks; {n} verbatim sentences copied from random pages (seed "
             f"{args.seed}) and their {n} paraphrases (a third of the words dropped, two pairs swapped); "
             f"`text:all-MiniLM-L6-v2` on {model.device}, Milvus Lite; the rerank's MaxSim: `{args.model}` "
             f"({args.weights} weights).", "",
             "| search | verbatim top-1 | verbatim top-3 | paraphrased top-1 | paraphrased top-3 |",
             "|---|---:|---:|---:|---:|"]

    def pct(rs, k):
        return f"{100 * sum(1 for r in rs if r is not None and r <= k) / max(1, len(rs)):.1f}%"

    for m in METHODS:
        v, p = ranks["verbatim"][m], ranks["paraphrased"][m]
        lines.append(f"| {m} | {pct(v, 1)} | {pct(v, 3)} | {pct(p, 1)} | {pct(p, 3)} |")
    fusion = ranks["verbatim"][METHODS[3]]
    met = (sum(1 for r in fusion if r is not None and r <= 3) >= 0.9 * n
           and sum(1 for r in fusion if r == 1) >= 0.8 * n)
    lines += ["", f"Target for the fusion (verbatim top-3 >= 90%, top-1 >= 80%): {'met' if met else 'NOT met'}. "
              f"Embedding {n_chunks} chunks: {embed_s:.0f} s ({n_chunks / max(embed_s, 1e-9):.1f} chunks/s); "
              f"writing them to Milvus Lite: {write_s:.1f} s; rendering and embedding the page images: {visual_s:.0f} s; "
              f"{2 * n} queries searched every way: {search_s:.1f} s; "
              f"run: {time.perf_counter() - t0:.0f} s."]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
