"""`pagemill search`: the two-stage cascade, as a check that an index is usable.

Stage 1 finds ``candidates`` pages by ANN in the vector store: on a page-level single vector (``sv-mean``:
the query's L2-normalised mean against the pages' patch means; ``sv-fde``: MUVERA's query
encoding), on a multi-vector layout's rows (``patches`` = ``mv``, ``mv-pool3``, ...: each query
vector's nearest rows, pages ranked by the sum of their best hits; MAX_SIM directly on an
array-of-structs field), or on the text layer. Stage 2 re-scores those pages exactly with MaxSim
on a multi-vector layout read from the Parquet shards or from the store (any layout either way).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators import schema as S
from operators.errors import UsageError
from operators.io.store import OutputStore
from operators.layouts.fde import FdeEncoder, FdeParams
from operators.layouts.layout import LayoutScorer, normalise, of_sv_model, parse_layout
from operators.models import ModelSpec, adapter_for
from operators.stores.door import VectorStore
from operators.stores.run_metadata import RunMetadata
from pipelines.index.text_search import TEXT_MODES, TextSearch, weighted_rrf


def recorded_metadata(store: OutputStore) -> RunMetadata:
    """What the active index is (model, weights, dim, layouts, text and sv models, corpus): from
    ``_index.json``, with a shard's metadata for what it does not say (and for an OUT of an
    earlier pagemill)."""
    from pipelines.out.identity import load_state
    from pipelines.out.manifest import live_page_files

    shards = live_page_files(store)
    if not shards:
        raise UsageError("no shards under OUT/pages: run pagemill ingest first")
    out = RunMetadata.read(store, shards[-1])
    state = load_state(store)
    if state is not None and state.active is not None:
        a = state.active
        out = out.updated(model=a.model.name, weights=a.model.weights, dim=a.model.dim, layouts=a.layouts,
                          text_model=a.text_model["name"] if a.text_model else None,
                          sv_model=a.sv_model["name"] if a.sv_model else None)
    return out


def read_pages_subset(store: OutputStore, page_ids: list[str] | None, columns: list[str],
                      optional: dict[str, pa.DataType] | None = None) -> pa.Table:
    """Rows of OUT/pages (all, or those in ``page_ids``), only ``columns``; ``optional``: columns
    that shards of an earlier pagemill lack (nulls there)."""
    from pipelines.out.manifest import live_page_files

    optional = optional or {}
    wanted = pa.array(page_ids, pa.string()) if page_ids is not None else None
    parts = []
    for key in live_page_files(store):
        pf = pq.ParquetFile(store.open_input(key))
        ids = pf.read(columns=[S.PAGE_ID])[S.PAGE_ID]
        mask = None
        if wanted is not None:
            mask = pc.is_in(ids, value_set=wanted)
            if not pc.any(mask).as_py():
                continue
        held = set(pf.schema_arrow.names)
        table = pf.read(columns=columns + [c for c in optional if c in held])
        for c, t in optional.items():
            if c not in held:
                table = table.append_column(pa.field(c, t), pa.nulls(table.num_rows, t))
        parts.append(table.filter(mask) if mask is not None else table)
    names = columns + list(optional)
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in names})


RRF_K = 60


def _ranking(item: tuple[str, float]) -> tuple[float, str]:
    """Best score first; equal scores (identical pages) by page id, so that a ranking does not
    depend on the order a store returned them in."""
    return -item[1], item[0]


def reciprocal_rank_fusion(*lists: list[tuple[str, float]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse ranked lists: each page scores the sum of 1 / (k + rank) over the lists it is in."""
    return weighted_rrf({str(i): ranked for i, ranked in enumerate(lists)}, k=k)


def stage1(vectors: VectorStore, query: np.ndarray, candidates: int, mode: str, fde: FdeParams | None = None,
           sv_query: np.ndarray | None = None, corpus: str | None = None) -> list[tuple[str, float]]:
    """ANN in the store on a single-vector layout (sv-mean: the query's L2-normalised mean;
    sv-fde: MUVERA's query encoding; sv-vlm: the single-vector model's query) or on a
    multi-vector layout (``patches`` = mv, or mv-pool3, ...: the query's vectors)."""
    layout = "mv" if mode == "patches" else mode
    if of_sv_model(layout):  # the model's page vector and its encodings
        q = sv_query
    elif layout.startswith("sv-fde"):  # sv-fde and its encodings (sv-fde-int8, ...)
        q = FdeEncoder(query.shape[1], fde or FdeParams()).encode_query(query).astype(np.float32)
    elif layout.startswith("sv-"):
        q = normalise(query.sum(axis=0)).astype(np.float32)
    else:
        q = query
    return [(h.page_id, h.score) for h in vectors.search(layout, q, candidates, corpus)]


RERANK_ORDERS = ("auto", "replace", "fuse")


def decide_rerank(rerank: str, order: str, text_stage1: bool, random_weights: bool) -> tuple[str, str, str | None]:
    """(layout or none, replace or fuse, a note): ``auto`` reranks a visual stage 1 with ``mv``'s
    MaxSim, whose order replaces stage 1's; after a text stage 1 it fuses MaxSim's order with the
    text's (``fuse_orders``), and skips the rerank altogether when the index's visual model has
    random weights (its MaxSim is noise: benchmarks/text.py measures what it does to the text's
    order)."""
    if order not in RERANK_ORDERS:
        raise UsageError(f"--rerank-order {order!r}: one of {', '.join(RERANK_ORDERS)}")
    note = None
    if rerank == "auto":
        if text_stage1 and random_weights:
            rerank = "none"
            note = ("the index's visual model has random weights: a MaxSim rerank would be noise, so the text "
                    "layer's order stands (--rerank mv reranks anyway)")
        else:
            rerank = "mv"
    if order == "auto":
        order = "fuse" if text_stage1 else "replace"
    return rerank, order, note


def fuse_orders(stage1: list[tuple[str, float]], reranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Stage 1's order and the rerank's, fused by reciprocal rank (k=60, equal weights). The
    stage-1 winner stays first unless the rerank puts it in the bottom half of the candidates:
    a rerank does not drop it without a reason."""
    fused = weighted_rrf({"stage1": stage1, "rerank": reranked})
    if stage1 and fused:
        winner = stage1[0][0]
        order = [p for p, _ in reranked]
        if winner in order and order.index(winner) < max(1, len(order) // 2) and fused[0][0] != winner:
            fused = [(winner, fused[0][1])] + [(p, sc) for p, sc in fused if p != winner]
    return fused


def search(query_text: str, store: OutputStore, vectors: VectorStore, *, k: int = 10, candidates: int = 100,
           stage1_mode: str = "sv-mean", rerank: str = "auto", vectors_from: str = "parquet",
           spec: ModelSpec | None = None, hybrid: bool = False, corpus: str | None = None,
           text_weights: dict[str, float] | None = None, notes: list[str] | None = None,
           rerank_order: str = "auto") -> list[dict]:
    """``stage1_mode``: sv-mean | patches | a layout in the store | text (BM25 and dense text
    fused) | text-bm25 | text-dense; ``hybrid`` fuses the visual stage 1 with the text-layer stage
    1 by reciprocal rank fusion. ``vectors``: the index's store, discovered. ``rerank``: a
    multi-vector layout, none, or auto; ``rerank_order`` (``decide_rerank``): the rerank's order
    replaces stage 1's, or is fused with it. Each result says which stage-1 lists it came from
    (``lists``); ``notes`` (a list) collects what the user should know (a server without BM25, a
    rerank skipped)."""
    meta = recorded_metadata(store)
    spec = spec or ModelSpec(name=meta.model or "colqwen2-tiny", weights=meta.weights or "random")
    text_only = stage1_mode in TEXT_MODES
    rerank, rerank_order, note = decide_rerank(rerank, rerank_order, text_only, meta.weights == "random")
    if note and notes is not None:
        notes.append(note)
    if text_only and rerank == "none":
        query = None  # the visual model is not needed
    else:
        query = adapter_for(spec).embed_queries([query_text])[0]
    text_model = meta.text_model
    if (hybrid or text_only) and not text_model:
        raise UsageError("this index has no text layer vectors: ingest with --model <model>,text:all-MiniLM-L6-v2")
    fde = meta.fde_params()
    lists: dict[str, list[str]] = {}
    if hybrid or text_only:
        text = TextSearch(vectors, text_model, text_weights).search(query_text, candidates,
                                                                     stage1_mode if text_only else "text", corpus)
        if notes is not None:
            notes.extend(text.notes)
    if text_only:
        found = text.ranked
        lists = {pid: text.lists_of(pid) for pid, _ in found}
    else:
        sv_query = None
        if of_sv_model(stage1_mode):
            from operators.models.sv import sv_embedder_for

            if not meta.sv_model:
                raise UsageError("this index has no sv-vlm vectors: ingest with --model <model>,sv:<model>")
            sv_query = sv_embedder_for(meta.sv_model, spec).embed_queries([query_text])[0].astype(np.float32)
        visual = stage1(vectors, query, candidates, stage1_mode, fde, sv_query, corpus)
        found = visual
        if hybrid:
            found = reciprocal_rank_fusion(visual, text.ranked)[:candidates]
        in_visual = {pid for pid, _ in visual}
        lists = {pid: ([stage1_mode] if pid in in_visual else []) + (text.lists_of(pid) if hybrid else [])
                 for pid, _ in found}
    ids = [pid for pid, _ in found]
    if rerank == "none" or not ids:
        scored = found
    else:
        layout = parse_layout(rerank)
        if not layout.is_multi_vector:
            raise UsageError(f"--rerank {rerank!r}: a multi-vector layout (mv, mv-pool3, mv-int8, ...) or none")
        if meta.layouts and layout.name not in meta.layouts:
            held = ", ".join(n for n in meta.layouts if parse_layout(n).is_multi_vector)
            raise UsageError(f"--rerank {rerank}: not a layout of this index (its multi-vector layouts: {held}): "
                             f"add it with pagemill relayout OUT --layouts {rerank}, or rerank with one of those")
        if vectors_from in ("store", "milvus"):
            docs = vectors.fetch(layout.name, ids)
            scored = [(pid, float((query @ docs[pid].T).max(axis=1).sum())) for pid in ids if pid in docs]
        else:
            cols = [S.PAGE_ID, layout.column] + ([layout.scale_column] if layout.scale_column else [])
            table = read_pages_subset(store, ids, cols)
            dim = len(query[0])
            scorer = LayoutScorer(layout, table, dim)
            scored = list(zip(table[S.PAGE_ID].to_pylist(), scorer.scores(query).tolist()))
        scored.sort(key=_ranking)
        if rerank_order == "fuse":
            scored = fuse_orders(found, scored)
    top = scored[:k]
    info = read_pages_subset(store, [pid for pid, _ in top], [S.PAGE_ID, S.SOURCE_URI, S.PAGE_NUMBER],
                             optional={S.IMAGE_URI: pa.string()})
    where = {r[S.PAGE_ID]: r for r in info.to_pylist()}
    # the page image (--page-images) where the index keeps them: what an answer shows a VLM
    return [{"rank": i + 1, "score": round(s, 6), "page_id": pid, "source_uri": where.get(pid, {}).get(S.SOURCE_URI),
             "page_number": where.get(pid, {}).get(S.PAGE_NUMBER), "lists": lists.get(pid, []),
             **({"image_uri": where[pid][S.IMAGE_URI]} if where.get(pid, {}).get(S.IMAGE_URI) else {})}
            for i, (pid, s) in enumerate(top)]
