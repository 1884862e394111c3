"""`pagemill search`: the two-stage cascade, as a check that an index is usable.

Stage 1 finds ``candidates`` pages by ANN in Milvus: on the page-level single vector (``sv-mean``:
the query's L2-normalised mean against the pages' patch means) or on the patch rows (``patches``:
each query vector's nearest patch rows, pages ranked by the sum of their best hits). Stage 2
re-scores those pages exactly with MaxSim on a multi-vector layout read from the Parquet shards
(any layout: ``mv``, ``mv-pool3``, ``mv-int8``, ...) or from Milvus' patch rows (``mv`` only).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators import schema as S
from operators.layouts import LayoutScorer, normalise, parse_layout
from operators.milvus_sink import PATCH_INDEX, VECTOR, MilvusSink
from operators.models import ModelSpec, adapter_for
from operators.parquet_sink import PAGES_PREFIX
from operators.store import OutputStore


def recorded_metadata(store: OutputStore) -> dict:
    shards = [o.key for o in store.list(PAGES_PREFIX)]
    if not shards:
        raise ValueError("no shards under OUT/pages: run pagemill ingest first")
    meta = pq.read_schema(io.BytesIO(store.read_bytes(shards[0]))).metadata or {}
    return {k.decode()[len("pagemill."):]: json.loads(v) for k, v in meta.items() if k.startswith(b"pagemill.")}


def read_pages_subset(store: OutputStore, page_ids: list[str] | None, columns: list[str]) -> pa.Table:
    """Rows of OUT/pages (all, or those in ``page_ids``), only ``columns``."""
    wanted = pa.array(page_ids) if page_ids is not None else None
    parts = []
    for obj in store.list(PAGES_PREFIX):
        pf = pq.ParquetFile(io.BytesIO(store.read_bytes(obj.key)))
        ids = pf.read(columns=[S.PAGE_ID])[S.PAGE_ID]
        if wanted is not None:
            mask = pc.is_in(ids, value_set=wanted)
            if not pc.any(mask).as_py():
                continue
            parts.append(pf.read(columns=columns).filter(mask))
        else:
            parts.append(pf.read(columns=columns))
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})


RRF_K = 60


def reciprocal_rank_fusion(*lists: list[tuple[str, float]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse ranked lists: each page scores the sum of 1 / (k + rank) over the lists it is in."""
    fused: dict[str, float] = {}
    for ranked in lists:
        for rank, (pid, _) in enumerate(ranked, start=1):
            fused[pid] = fused.get(pid, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda kv: -kv[1])


def text_stage1(sink: MilvusSink, text_model: str, query_text: str, candidates: int) -> list[tuple[str, float]]:
    from operators.text_embed import TextEmbedder

    if not sink.client.has_collection(sink.text_collection):
        raise ValueError("this index has no text layer vectors: ingest with --model <model>,text:all-MiniLM-L6-v2")
    sink.client.load_collection(sink.text_collection)
    q = TextEmbedder(text_model).embed_queries([query_text])[0]
    hits = sink.client.search(sink.text_collection, data=[q.tolist()], anns_field=S.SV_TEXT, limit=candidates,
                              output_fields=[S.PAGE_ID])[0]
    return [(h["entity"][S.PAGE_ID], float(h["distance"])) for h in hits]


def stage1(sink: MilvusSink, query: np.ndarray, candidates: int, mode: str) -> list[tuple[str, float]]:
    client = sink.client
    if mode == "sv-mean":
        client.load_collection(sink.pages_collection)
        q = normalise(query.sum(axis=0)).astype(np.float32)
        hits = client.search(sink.pages_collection, data=[q.tolist()], anns_field=S.SV_MEAN, limit=candidates,
                             output_fields=[S.PAGE_ID])[0]
        return [(h["entity"][S.PAGE_ID], float(h["distance"])) for h in hits]
    if mode == "patches":
        client.load_collection(sink.patches_collection)
        per_token = max(candidates, 10)
        hits = client.search(sink.patches_collection, data=[v.tolist() for v in query.astype(np.float32)],
                             anns_field=VECTOR, limit=per_token, output_fields=[S.PAGE_ID])
        scores: dict[str, float] = {}
        for token_hits in hits:
            best: dict[str, float] = {}
            for h in token_hits:
                pid = h["entity"][S.PAGE_ID]
                best[pid] = max(best.get(pid, -np.inf), float(h["distance"]))
            for pid, s in best.items():
                scores[pid] = scores.get(pid, 0.0) + s
        return sorted(scores.items(), key=lambda kv: -kv[1])[:candidates]
    raise ValueError(f"--stage1 {mode!r}: use sv-mean or patches")


def vectors_from_milvus(sink: MilvusSink, page_ids: list[str]) -> dict[str, np.ndarray]:
    sink.client.load_collection(sink.patches_collection)
    out: dict[str, list] = {}
    for start in range(0, len(page_ids), 20):
        rows = sink.client.query(sink.patches_collection, filter=f"{S.PAGE_ID} in {json.dumps(page_ids[start:start + 20])}",
                                 output_fields=[S.PAGE_ID, PATCH_INDEX, VECTOR])
        for r in rows:
            out.setdefault(r[S.PAGE_ID], []).append((r[PATCH_INDEX], r[VECTOR]))
    return {pid: np.array([v for _, v in sorted(rows)], np.float32) for pid, rows in out.items()}


def search(query_text: str, store: OutputStore, sink: MilvusSink, *, k: int = 10, candidates: int = 100,
           stage1_mode: str = "sv-mean", rerank: str = "mv", vectors_from: str = "parquet",
           spec: ModelSpec | None = None, hybrid: bool = False) -> list[dict]:
    """``stage1_mode``: sv-mean | patches | text; ``hybrid`` fuses the visual stage 1 with the
    text-layer stage 1 by reciprocal rank fusion."""
    meta = recorded_metadata(store)
    spec = spec or ModelSpec(name=meta.get("model", "colqwen2-tiny"), weights=meta.get("weights", "random"))
    adapter = adapter_for(spec)
    query = adapter.embed_queries([query_text])[0]
    text_model = meta.get("text_model")
    if (hybrid or stage1_mode == "text") and not text_model:
        raise ValueError("this index has no text layer vectors: ingest with --model <model>,text:all-MiniLM-L6-v2")
    if stage1_mode == "text":
        found = text_stage1(sink, text_model, query_text, candidates)
    else:
        found = stage1(sink, query, candidates, stage1_mode)
        if hybrid:
            found = reciprocal_rank_fusion(found, text_stage1(sink, text_model, query_text, candidates))[:candidates]
    ids = [pid for pid, _ in found]
    if rerank == "none" or not ids:
        scored = found
    else:
        layout = parse_layout(rerank)
        if layout.kind != "mv":
            raise ValueError(f"--rerank {rerank!r}: a multi-vector layout (mv, mv-pool3, mv-int8, ...) or none")
        if vectors_from == "milvus":
            if layout.name != "mv":
                raise ValueError("--vectors-from milvus holds the full mv layout only")
            docs = vectors_from_milvus(sink, ids)
            scored = [(pid, float((query @ docs[pid].T).max(axis=1).sum())) for pid in ids if pid in docs]
        else:
            cols = [S.PAGE_ID, layout.column] + ([layout.scale_column] if layout.scale_column else [])
            table = read_pages_subset(store, ids, cols)
            dim = len(query[0])
            scorer = LayoutScorer(layout, table, dim)
            scored = list(zip(table[S.PAGE_ID].to_pylist(), scorer.scores(query).tolist()))
        scored.sort(key=lambda kv: -kv[1])
    top = scored[:k]
    info = read_pages_subset(store, [pid for pid, _ in top], [S.PAGE_ID, S.SOURCE_URI, S.PAGE_NUMBER])
    where = {r[S.PAGE_ID]: r for r in info.to_pylist()}
    return [{"rank": i + 1, "score": round(s, 6), "page_id": pid, "source_uri": where.get(pid, {}).get(S.SOURCE_URI),
             "page_number": where.get(pid, {}).get(S.PAGE_NUMBER)} for i, (pid, s) in enumerate(top)]
