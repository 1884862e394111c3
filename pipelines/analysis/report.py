"""`pagemill report`: what a run's index costs, measured, beside the cost model's projection.

The report measures a run (vectors per page from the shards, Parquet bytes per layout from the
column-chunk sizes in the Parquet footers, Milvus raw bytes from rows read back and the server's
own files) and sets the cost model's prediction from parameters beside each measurement.
`pagemill plan`, which needs no run, is pipelines/analysis/capacity.py.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators import schema as S
from operators.errors import UsageError
from operators.io.store import OutputStore
from operators.layouts.fde import FdeParams
from operators.layouts.layout import BM25_LAYOUT, TEXT_LAYOUT, parse_layout, parse_layouts
from operators.stores import storage_lines
from operators.stores.parquet import IMAGES_PREFIX, read_table
from operators.stores.run_metadata import RunMetadata
from pipelines.analysis.costs import (
    DEFAULT_PRICES,
    LayoutCost,
    Prices,
    human_bytes,
    layout_cost,
    page_row_scalar_bytes,
    patch_row_scalar_bytes,
    short_count,
    text_layer_cost,
)
from pipelines.analysis.fidelity import latest_fidelity, layouts_in
from pipelines.out.manifest import live_page_files

DEFAULT_PAGES = (1_000_000, 100_000_000)

# ---------------------------------------------------------------------------------------------
# Measuring a run


def measure_run(store: OutputStore, max_shards: int = 200, vectors=None) -> dict:
    """Per-layout measurements of the run under ``store`` (shard footers for bytes; up to
    ``max_shards`` shards read for vector counts and key lengths); ``vectors``: the index's store,
    discovered, to measure what it holds."""
    shards = live_page_files(store)
    if not shards:
        raise UsageError("no shards under OUT/pages: run pagemill ingest first")
    blobs = {}
    first = pq.ParquetFile(io.BytesIO(store.read_bytes(shards[0])))
    recorded = RunMetadata.from_schema(first.schema_arrow)
    layouts = layouts_in(first.schema_arrow)
    column_bytes: dict[str, int] = {}
    rows = 0
    for key in shards:
        data = store.read_bytes(key)
        if len(blobs) < max_shards:
            blobs[key] = data
        md = pq.ParquetFile(io.BytesIO(data)).metadata
        rows += md.num_rows
        for rg in range(md.num_row_groups):
            g = md.row_group(rg)
            for c in range(g.num_columns):
                col = g.column(c)
                top = col.path_in_schema.split(".")[0]
                column_bytes[top] = column_bytes.get(top, 0) + col.total_compressed_size
    cols = [S.PAGE_ID, S.DOC_VERSION, S.SOURCE_URI, S.N_VECTORS, S.N_PATCHES, S.PATCH_GRID_H, S.PATCH_GRID_W]
    cols += [lay.column for lay in layouts if lay.column not in cols]
    sample = pa.concat_tables([read_table(b, columns=cols) for b in blobs.values()])
    dim = int(first.schema_arrow.field(S.MV).type.value_type.list_size)
    fde = recorded.fde_params() or FdeParams()
    per_layout = {}
    for lay in layouts:
        counts = lay.vector_counts(sample).astype(float)
        pbytes = column_bytes.get(lay.column, 0) + (column_bytes.get(lay.scale_column, 0) if lay.scale_column else 0)
        per_layout[lay.name] = {
            "vectors_per_page": {"mean": float(counts.mean()), "p50": float(np.percentile(counts, 50)),
                                 "p95": float(np.percentile(counts, 95)), "max": float(counts.max())},
            "parquet_bytes_per_page": pbytes / rows,
        }
    in_layouts = {c for lay in layouts for c in (lay.column, lay.scale_column) if c}
    measured = {
        "pages": rows,
        "shards": len(shards),
        # every other column (the page text, the text layer's vector, keys, grids), as stored
        "other_columns_bytes_per_page": {c: b / rows for c, b in sorted(column_bytes.items()) if c not in in_layouts},
        "dim": dim,
        **({"sv_dim": first.schema_arrow.field(S.SV_VLM).type.list_size} if S.SV_VLM in first.schema_arrow.names else {}),
        "model": recorded.model,
        "fde": asdict(fde),
        "doc_version_len": float(np.mean([len(v) for v in sample[S.DOC_VERSION].to_pylist()])),
        "source_uri_len": float(np.mean([len(v.encode()) for v in sample[S.SOURCE_URI].to_pylist()])),
        "special_per_page": float((sample[S.N_VECTORS].to_numpy() - sample[S.N_PATCHES].to_numpy()).mean()),
        "layouts": per_layout,
        "fidelity": latest_fidelity(store, recorded.model),
    }
    if S.TEXT_SOURCE in first.schema_arrow.names:  # where the pages' text came from (OCR's share)
        sources = pa.concat_tables([read_table(b, columns=[S.TEXT_SOURCE]) for b in blobs.values()])[S.TEXT_SOURCE]
        counts = Counter(v or "none" for v in sources.to_pylist())
        measured["text_sources"] = {k: counts[k] for k in sorted(counts)}
    images = [o.size for o in store.list(IMAGES_PREFIX + "/")]
    if images:  # the page images' files, listed
        measured["page_images"] = {"files": len(images), "bytes": sum(images), "bytes_per_page": sum(images) / rows}
    if S.TEXT_CHUNKS in first.schema_arrow.names:
        measured["text_layer"] = measure_text_layer(blobs, column_bytes, rows, first.schema_arrow)
    if vectors is not None:
        measured.update(vectors.measure(sample[S.PAGE_ID].to_pylist()[:200]))
    return measured


def measure_text_layer(blobs: dict, column_bytes: dict[str, int], rows: int, schema: pa.Schema) -> dict:
    """The text layer's chunks per page (from the sampled shards) and its Parquet bytes per page
    (the page vector, the chunks' vectors; the text itself, archived with or without it)."""
    counts = pa.concat_arrays([pc.list_value_length(read_table(b, columns=[S.TEXT_CHUNKS])[S.TEXT_CHUNKS]
                                                    ).combine_chunks() for b in blobs.values()])
    n = np.nan_to_num(counts.to_numpy(zero_copy_only=False).astype(float))
    vectors = column_bytes.get(S.SV_TEXT, 0) + column_bytes.get(S.TEXT_CHUNKS, 0)
    return {"dim": int(schema.field(S.SV_TEXT).type.list_size), "chunks_per_page": float(n.mean()) if len(n) else 0.0,
            "pages_with_text": float((n > 0).mean()) if len(n) else 0.0,
            "parquet_vector_bytes_per_page": vectors / max(rows, 1),
            "parquet_text_bytes_per_page": column_bytes.get(S.TEXT, 0) / max(rows, 1)}


# ---------------------------------------------------------------------------------------------
# The report


def projected_index(built: str | None) -> str:
    """The index type a projection uses for a field built as ``built`` (none built: AUTOINDEX,
    pagemill's default; costed as HNSW, what a Milvus server builds for AUTOINDEX)."""
    from pipelines.analysis.costs import INDEX_TYPES

    t = (built or "AUTOINDEX").upper()
    return t if t in INDEX_TYPES else "AUTOINDEX"


def build_report(measured: dict, pages: tuple[int, ...] = DEFAULT_PAGES, prices: Prices = DEFAULT_PRICES,
                 index: str | None = None, replicas: int = 1, threshold: float = 0.9) -> dict:
    """Projections are for a Milvus server (typed vector fields), each layout with the index the
    server built for it (``index`` overrides: what if it were IVF_PQ?); when the measured Milvus
    is Milvus Lite (float vectors only), the raw-bytes figure set beside the rows read back is
    computed for Lite."""
    fde = FdeParams(**measured["fde"])
    storage = measured.get("milvus_collections") or {}
    built_fields = storage.get("fields", {})
    by_collection = {c["collection"]: c for c in storage.get("collections", [])}
    rows = []
    for name, m in measured["layouts"].items():
        lay = parse_layout(name)
        vpp = m["vectors_per_page"]["mean"]
        keys = dict(doc_version_len=measured["doc_version_len"], source_uri_len=measured["source_uri_len"], fde=fde)
        built = built_fields.get(name, {}).get("index")
        dim = measured.get("sv_dim") if lay.pooling == "vlm" else measured["dim"]  # sv-vlm-*: the sv: model's
        cost = layout_cost(lay, vpp, dim, index=index or projected_index(built), **keys)
        row = {"layout": name, "dim": cost.dim, "bytes_per_vector": cost.bytes_per_vector,
               "vectors_per_page": m["vectors_per_page"], "raw_bytes_per_page": cost.raw_bytes_per_page,
               "parquet_bytes_per_page": {"measured": m["parquet_bytes_per_page"],
                                          "predicted": cost.parquet_bytes_per_page},
               "milvus": {"index": cost.index, "index_built": built, "rows_per_page": cost.milvus_rows_per_page,
                          "raw_bytes_per_page": {"predicted": cost.milvus_raw_bytes_per_page},
                          "memory_bytes_per_page": cost.milvus_memory_bytes_per_page,
                          "disk_bytes_per_page": cost.milvus_disk_bytes_per_page},
               "fidelity": measured["fidelity"].get(name),
               "projections": {str(n): {**cost.projected(n, replicas),
                                        "monthly_cost_usd": round(cost.monthly_cost(n, prices, replicas), 2)}
                               for n in pages}}
        if "milvus" in measured and name in measured["milvus"]:
            as_measured = layout_cost(lay, vpp, dim, index=cost.index, lite=measured.get("milvus_lite", False), **keys)
            row["milvus"]["raw_bytes_per_page"] = {"read_back": measured["milvus"][name]["raw_bytes_per_page"],
                                                   "predicted": as_measured.milvus_raw_bytes_per_page,
                                                   "server_predicted": cost.milvus_raw_bytes_per_page}
        coll = by_collection.get(built_fields.get(name, {}).get("collection"))
        if coll and coll.get("server_bytes") is not None and measured["pages"]:
            sharing = [k for k, f in built_fields.items() if f["collection"] == coll["collection"]]
            row["milvus"]["server"] = {"collection": coll["collection"], "shared_with": sorted(set(sharing) - {name}),
                                       "bytes_per_page": coll["server_bytes"] / measured["pages"],
                                       "ratio_to_raw": coll["ratio"]}
        rows.append((row, cost))
    indexes = sorted({r["milvus"]["index_built"] or "none" for r, _ in rows}) if built_fields else []
    report = {"pages_measured": measured["pages"], "model": measured.get("model"), "dim": measured["dim"],
              "index": index.upper() if index else (", ".join(indexes) + " (as built)" if indexes
                                                    else "AUTOINDEX (pagemill's default)"),
              "replicas": replicas, "prices": asdict(prices), "threshold": threshold,
              "layouts": [r for r, _ in rows]}
    other = measured.get("other_columns_bytes_per_page")
    if other is not None:
        report["parquet_other_columns"] = {"bytes_per_page": other, "total_bytes_per_page": sum(other.values())}
    if storage:
        report["milvus"] = {k: v for k, v in storage.items() if k != "fields"}
    if measured.get("store"):
        report["store"] = measured["store"]  # another store's own section (operators.stores.storage_lines)
    if measured.get("text_layer"):
        report["text_layer"] = text_layer_report(measured, storage, index)
    for key in ("text_sources", "page_images"):
        if measured.get(key):
            report[key] = measured[key]
    report["notes"] = []
    if any(r["milvus"]["index"] == "AUTOINDEX" for r, _ in rows):
        report["notes"].append("AUTOINDEX is projected as HNSW (M=16), what a Milvus server builds for it")
    if not any(r["fidelity"] for r, _ in rows):
        report["notes"].append("no fidelity measured yet (the recall@10 column and the bytes-vs-fidelity chart are "
                               "empty): run pagemill fidelity OUT (or ingest with --fidelity-queries N)")
    report["notes"] += [storage[k] for k in ("note", "index_pending", "index_small") if storage.get(k)]
    report["recommendation"] = recommend(rows, pages[-1], prices, replicas, threshold)
    return report


def text_layer_report(measured: dict, storage: dict, index: str | None) -> dict:
    """The text layer's bytes per page: Parquet measured, Milvus' collection measured (its rows'
    raw bytes; the server's files, BM25 index included, where measured), and the cost model's."""
    t = measured["text_layer"]
    fields = storage.get("fields", {})
    bm25 = BM25_LAYOUT in fields if fields else True
    cost = text_layer_cost(t["chunks_per_page"], t["dim"], bm25=bm25, index=projected_index(
        fields.get(TEXT_LAYOUT, {}).get("index")) if not index else index)
    out = {**t, "bm25": bm25, "predicted": {"parquet_bytes_per_page": cost.parquet_bytes_per_page,
                                             "milvus_raw_bytes_per_page": cost.milvus_raw_bytes_per_page,
                                             "milvus_memory_bytes_per_page": cost.milvus_memory_bytes_per_page,
                                             "milvus_disk_bytes_per_page": cost.milvus_disk_bytes_per_page}}
    coll = next((c for c in storage.get("collections", []) if c["collection"] == fields.get(TEXT_LAYOUT, {}).get("collection")),
                None)
    if coll and measured["pages"]:
        out["milvus"] = {"collection": coll["collection"], "rows": coll["rows"],
                         "raw_bytes_per_page": coll["raw_bytes"] / measured["pages"],
                         "server_bytes_per_page": (coll["server_bytes"] / measured["pages"]
                                                   if coll.get("server_bytes") is not None else None),
                         "index_types": coll.get("index_types", {})}
    return out


def format_text_layer(t: dict | None) -> list[str]:
    if not t:
        return []
    p = t["predicted"]
    line = (f"text layer: {t['chunks_per_page']:.2f} chunks/page ({100 * t['pages_with_text']:.0f}% of pages have text), "
            f"{t['dim']}-dim; Parquet vectors {human_bytes(t['parquet_vector_bytes_per_page'])}/page "
            f"(pred {human_bytes(p['parquet_bytes_per_page'])}), text {human_bytes(t['parquet_text_bytes_per_page'])}/page")
    lines = [line]
    m = t.get("milvus")
    if m:
        server = f", server files {human_bytes(m['server_bytes_per_page'])}/page" if m.get("server_bytes_per_page") else ""
        lines.append(f"text layer in Milvus ({m['collection']}, {m['rows']:,} chunk rows, "
                     f"{'BM25 + dense' if t['bm25'] else 'dense only: no BM25 on this server'}): raw "
                     f"{human_bytes(m['raw_bytes_per_page'])}/page (pred {human_bytes(p['milvus_raw_bytes_per_page'])})"
                     f"{server}; memory pred {human_bytes(p['milvus_memory_bytes_per_page'])}/page")
    return lines


def _recall(row: dict) -> float | None:
    f = row.get("fidelity")
    return f.get("recall_at_10") if f else None


def recommend(rows: list[tuple[dict, LayoutCost]], pages: int, prices: Prices, replicas: int, threshold: float) -> dict:
    """The cheapest layout at or above the fidelity threshold (all of it in Milvus), and the
    cascade: a single vector in Milvus for recall, a multi-vector in object storage for rerank."""
    ok = [(r, c) for r, c in rows if (_recall(r) or 0) >= threshold]
    out: dict = {"pages": pages, "threshold_recall_at_10": threshold}
    if ok:
        r, c = min(ok, key=lambda rc: rc[1].monthly_cost(pages, prices, replicas))
        out["cheapest_above_threshold"] = {"layout": r["layout"], "recall_at_10": _recall(r),
                                           "monthly_cost_usd": round(c.monthly_cost(pages, prices, replicas), 2)}
    else:
        out["cheapest_above_threshold"] = None
        out["note"] = "no layout has a measured fidelity at the threshold: run pagemill fidelity OUT"
    sv = [(r, c) for r, c in rows if not parse_layout(r["layout"]).is_multi_vector]
    mv = [(r, c) for r, c in ok or rows if parse_layout(r["layout"]).is_multi_vector]
    if sv and mv:
        s_row, s_cost = max(sv, key=lambda rc: (_recall(rc[0]) or 0, -rc[1].monthly_cost(pages, prices, replicas)))
        m_row, m_cost = min(mv, key=lambda rc: rc[1].parquet_bytes_per_page)
        total = s_cost.monthly_cost(pages, prices, replicas) + m_cost.monthly_cost(pages, prices, in_milvus=False)
        out["cascade"] = {"stage1": s_row["layout"], "rerank": m_row["layout"],
                          "stage1_in": "Milvus (memory)", "rerank_in": "object storage (Parquet shards)",
                          "monthly_cost_usd": round(total, 2)}
    return out


def format_report(report: dict) -> str:
    pages = list(report["layouts"][0]["projections"]) if report["layouts"] else []
    head = (f"{'layout':<15}{'vec/page':>9}{'p95':>7}{'dim':>6}{'B/vector':>10}{'Parquet/page':>14}{'(pred)':>10}"
            f"{'Milvus mem/page':>16}{'recall@10':>10}")
    for n in pages:
        head += f"{'$/month @' + short_count(int(n)):>18}"
    lines = [f"{report['pages_measured']} pages measured; model {report['model']}; Milvus index {report['index']}, "
             f"{report['replicas']} replica(s)", head]
    for r in sorted(report["layouts"], key=lambda r: -r["parquet_bytes_per_page"]["measured"]):
        rec = _recall(r)
        line = (f"{r['layout']:<15}{r['vectors_per_page']['mean']:>9.1f}{r['vectors_per_page']['p95']:>7.0f}"
                f"{r['dim']:>6}{r['bytes_per_vector']:>10.1f}{human_bytes(r['parquet_bytes_per_page']['measured']):>14}"
                f"{human_bytes(r['parquet_bytes_per_page']['predicted']):>10}"
                f"{human_bytes(r['milvus']['memory_bytes_per_page']):>16}{(f'{rec:.3f}' if rec is not None else '-'):>10}")
        for n in pages:
            line += f"{r['projections'][n]['monthly_cost_usd']:>18,.0f}"
        lines.append(line)
    other = report.get("parquet_other_columns")
    if other:
        big = sorted(other["bytes_per_page"].items(), key=lambda kv: -kv[1])
        lines.append(f"other Parquet columns: {human_bytes(other['total_bytes_per_page'])}/page ("
                     + ", ".join(f"{c} {human_bytes(b)}" for c, b in big[:6])
                     + (", ..." if len(big) > 6 else "") + ")")
    lines += format_store_storage(report.get("milvus"))
    lines += storage_lines(report.get("store"))
    lines += format_text_layer(report.get("text_layer"))
    if report.get("page_images"):
        im = report["page_images"]
        lines.append(f"page images: {im['files']:,} files, {human_bytes(im['bytes'])} "
                     f"({human_bytes(im['bytes_per_page'])}/page)")
    if report.get("text_sources"):
        lines.append("page text: " + ", ".join(f"{n} {k}" for k, n in report["text_sources"].items())
                     + " (sampled shards)")
    rec = report["recommendation"]
    if rec.get("cheapest_above_threshold"):
        c = rec["cheapest_above_threshold"]
        lines.append(f"recommendation: {c['layout']} (recall@10 {c['recall_at_10']:.3f} >= {rec['threshold_recall_at_10']}) "
                     f"at ${c['monthly_cost_usd']:,.0f}/month for {short_count(rec['pages'])} pages")
    elif rec.get("note"):
        lines.append(f"recommendation: {rec['note']}")
    if rec.get("cascade"):
        c = rec["cascade"]
        lines.append(f"cascade: {c['stage1']} in Milvus for recall + {c['rerank']} in Parquet for rerank: "
                     f"${c['monthly_cost_usd']:,.0f}/month for {short_count(rec['pages'])} pages")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)


def format_store_storage(held: dict | None) -> list[str]:
    """What each collection holds in Milvus: raw row bytes beside the server's own files."""
    if not held or not held.get("collections"):
        return []
    lines = [f"Milvus storage at {held['uri']} (server bytes: its files, measured):",
             f"{'collection':<34}{'rows':>10}{'raw':>11}{'server':>11}{'data':>11}{'index':>11}{'server/raw':>11}"
             f"{'loaded mem':>11}  index built"]
    def b(c, k):
        return human_bytes(c[k]) if c.get(k) is not None else "-"

    for c in held["collections"]:
        ratio = f"{c['ratio']:.2f}" if c.get("ratio") is not None else "-"
        built = ", ".join(f"{f}={t}" for f, t in sorted(c["index_types"].items())) or "-"
        lines.append(f"{c['collection']:<34}{c['rows']:>10,}{b(c, 'raw_bytes'):>11}{b(c, 'server_bytes'):>11}"
                     f"{b(c, 'server_data_bytes'):>11}{b(c, 'server_index_bytes'):>11}{ratio:>11}"
                     f"{b(c, 'loaded_memory_bytes'):>11}  {built}")
    return lines


__all__ = ["build_report", "format_report", "measure_run", "parse_layouts", "page_row_scalar_bytes",
           "patch_row_scalar_bytes"]
