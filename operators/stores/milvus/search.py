"""Searching an index in Milvus: stage 1 on a layout's field, the text layer's chunks (BM25 and
dense), and a corpus filter; the client calls, the vector types and the scores' forms.

A page-level field (``sv-mean``, ``sv-fde``, ``sv-vlm``) is searched with one query vector; a
multi-vector layout in rows mode with each query vector (its nearest rows, pages scored by the
sum of their best hits); an array-of-structs field with MAX_SIM directly.
"""

from __future__ import annotations

import json

import numpy as np

from operators import schema as S
from operators.errors import UsageError
from operators.layouts import encodings as E
from operators.stores.door import Hit
from operators.stores.milvus.schema import BM25_LAYOUT, CORPUS, TEXT_LAYOUT, FieldPlan, MilvusPlan

CHUNKS_MAX_LIMIT = 16384  # Milvus' largest topk


def corpus_filter(plan: MilvusPlan, corpus: str | None) -> str:
    """The filter keeping one corpus (tenant) of an index built with a partition key."""
    if not corpus:
        return ""
    if not plan.partition_key:
        raise UsageError(f"--corpus {corpus}: this index has no corpus field (ingest with --milvus-partition-key)")
    return f"{CORPUS} == {json.dumps(corpus)}"  # a quoted, escaped string literal


def query_value(v: np.ndarray, fp: FieldPlan):
    if fp.vtype == "binary":
        return E.binary_encode(v[None, :].astype(np.float32))[0].tobytes()
    if fp.vtype == "float16":
        return v.astype(np.float16)
    return v.astype(np.float32).tolist()


def similarity(distance: float, fp: FieldPlan) -> float:
    """Higher is better: Hamming distance d on D bits -> D - 2d (the +-1 inner product)."""
    return fp.dim - 2.0 * distance if fp.vtype == "binary" else distance


def ranking(item: tuple[str, float]) -> tuple[float, str]:
    """Best score first; equal scores (identical pages) by page id, so that a ranking does not
    depend on the order a server returned them in."""
    return -item[1], item[0]


def search_layout(client, plan: MilvusPlan, layout: str, query: np.ndarray, candidates: int,
                  where: str = "") -> list[Hit]:
    fp = plan.by_layout(layout)
    if fp is None or layout in (TEXT_LAYOUT, BM25_LAYOUT):
        held = [f.layout for f in plan.fields if f.layout not in (TEXT_LAYOUT, BM25_LAYOUT)]
        shown = "patches" if layout == "mv" else layout
        raise UsageError(f"--stage1 {shown!r}: not in Milvus (this index holds {', '.join(held)}; or use text)")
    client.load_collection(fp.collection)
    if fp.mode == "page":
        hits = client.search(fp.collection, data=[np.asarray(query, np.float32).tolist()], anns_field=fp.field,
                             limit=candidates, output_fields=[S.PAGE_ID], filter=where)[0]
        return [Hit(h["entity"][S.PAGE_ID], float(h["distance"])) for h in hits]
    if fp.mode == "struct":
        from pymilvus.client.embedding_list import EmbeddingList

        emb = EmbeddingList()
        emb.add_batch(query.astype(np.float32))
        hits = client.search(fp.collection, data=[emb], anns_field=fp.anns_field, limit=candidates,
                             output_fields=[S.PAGE_ID], filter=where)[0]
        return [Hit(h["entity"][S.PAGE_ID], float(h["distance"])) for h in hits]
    per_token = max(candidates, 10)
    hits = client.search(fp.collection, data=[query_value(v, fp) for v in query], anns_field=fp.field,
                         limit=per_token, output_fields=[S.PAGE_ID], filter=where)
    scores: dict[str, float] = {}
    for token_hits in hits:
        best: dict[str, float] = {}
        for h in token_hits:
            pid = h["entity"][S.PAGE_ID]
            best[pid] = max(best.get(pid, -np.inf), similarity(float(h["distance"]), fp))
        for pid, sc in best.items():
            scores[pid] = scores.get(pid, 0.0) + sc
    return [Hit(pid, s) for pid, s in sorted(scores.items(), key=ranking)[:candidates]]


def search_text(client, plan: MilvusPlan, kind: str, query, limit: int, where: str = "") -> list[Hit]:
    """The text layer's rows, best first: ``bm25`` (Milvus' own function over the chunk text,
    ``query`` its analysed text) or ``dense`` (``query`` a vector). An index built before chunks
    has a row per page."""
    fp = plan.by_layout(BM25_LAYOUT if kind == "bm25" else TEXT_LAYOUT)
    if fp is None:
        return []
    client.load_collection(fp.collection)
    limit = min(CHUNKS_MAX_LIMIT, limit)
    if kind == "bm25":
        hits = client.search(fp.collection, data=[query], anns_field=fp.field, limit=limit,
                             output_fields=[S.PAGE_ID], filter=where, search_params={"metric_type": "BM25"})[0]
        # Milvus Lite returns the BM25 score negated (best first either way): the score is its size.
        return [Hit(h["entity"][S.PAGE_ID], abs(float(h["distance"]))) for h in hits]
    hits = client.search(fp.collection, data=[[float(x) for x in query]], anns_field=fp.field, limit=limit,
                         output_fields=[S.PAGE_ID], filter=where)[0]
    return [Hit(h["entity"][S.PAGE_ID], float(h["distance"])) for h in hits]
