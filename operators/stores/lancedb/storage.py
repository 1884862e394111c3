"""What LanceDB stores, measured: per table its rows, the raw bytes of those rows, and the bytes of
its files (data, indexes, and the rest: versions, transactions, deletion files), listed from its
folder or bucket; per layout the bytes of its column in the data files (Lance's own accounting of
its pages, ``data_stats``) and of its index.

Raw bytes are the rows' payload as the table's schema defines it (a float16 vector of 128 is 256
bytes; a string its UTF-8 length), from the rows themselves: a sample of pages read back for the
layouts, the whole key columns for the tables.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from operators import schema as S
from operators.humanize import human_bytes


def _column_bytes(ds) -> dict[str, int]:
    """Bytes on disk of each top-level column (its nested fields' together)."""
    by_id = {f.id: f.bytes_on_disk for f in ds.stats.data_stats().fields}

    def total(field) -> int:
        return by_id.get(field.id(), 0) + sum(total(c) for c in field.children())

    return {f.name(): total(f) for f in ds.lance_schema.fields()}


def _raw_bytes(column) -> float:
    """The payload of a column's values: fixed-size values at their width (offsets and validity
    bitmaps are not payload), strings at their UTF-8 length."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return float(pc.sum(pc.binary_length(arr)).as_py() or 0)
    while pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        arr = arr.flatten()
    return len(arr) * arr.type.bit_width / 8


SAMPLE_ROWS = 2000


def _files(store, table: str) -> dict[str, int]:
    """The table's files by kind, from a listing of its folder."""
    out = {"data": 0, "index": 0, "other": 0, "files": 0}
    for o in store.list(f"{table}.lance/"):
        part = o.key.split(".lance/", 1)[1].split("/", 1)[0]
        out["data" if part == "data" else "index" if part == "_indices" else "other"] += o.size
        out["files"] += 1
    return out


def measure(lance_store, page_ids: list[str]) -> dict:
    """The store section of ``pagemill report``'s measurements (``VectorStore.measure``)."""
    from operators.io.uris import open_store
    from operators.stores.lancedb.tables import PAGES, TEXT

    plan = lance_store.plan
    files_at = open_store(lance_store.root, s3_options=lance_store.s3_options, create=False)
    tables, layouts = [], {}
    pages_n = lance_store._connect().open_table(plan.table(PAGES)).count_rows()
    for name in [PAGES] + ([TEXT] if plan.text_dim else []):
        table = plan.table(name)
        ds = lance_store._dataset(table)
        rows = ds.count_rows()
        columns = _column_bytes(ds)
        files = _files(files_at, table)
        indexes = {i.name: {"type": i.index_type, "columns": list(i.columns), "bytes": int(i.size_bytes or 0),
                            "indexed_rows": i.num_indexed_rows, "unindexed_rows": i.num_unindexed_rows}
                   for i in lance_store._connect().open_table(table).list_indices()}
        sample = ds.sample(min(rows, SAMPLE_ROWS)) if rows else None
        raw = (sum(_raw_bytes(sample[f.name]) for f in ds.schema) * rows / sample.num_rows
               if sample is not None and sample.num_rows else 0.0)
        tables.append({"table": table, "rows": rows, "raw_bytes": raw, "files_bytes": files["data"] + files["index"] + files["other"],
                       "data_bytes": files["data"], "index_bytes": files["index"], "other_bytes": files["other"],
                       "files": files["files"], "columns_bytes": columns, "indexes": indexes})
        if name != PAGES:
            continue
        sample = ds.to_table(filter=lance_store_filter(page_ids)) if page_ids else None  # the report's pages
        for c in plan.columns:
            entry = {"column": c.name, "table": table,
                     "data_bytes_per_page": columns.get(c.name, 0) / max(rows, 1),
                     "index": next((i for i in indexes.values() if i["columns"] == [c.name]), None)}
            if entry["index"]:
                entry["index_bytes_per_page"] = entry["index"]["bytes"] / max(rows, 1)
            if sample is not None and sample.num_rows:
                col = sample[c.name]
                entry["raw_bytes_per_page"] = _raw_bytes(col) / sample.num_rows
            layouts[c.layout] = entry
    return {"store": {"kind": "lancedb", "title": "LanceDB", "uri": lance_store.root, "pages": pages_n,
                      "tables": tables, "layouts": layouts}}


def lance_store_filter(page_ids: list[str]) -> str:
    quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in page_ids)
    return f"{S.PAGE_ID} IN ({quoted})"


def format_storage(held: dict) -> list[str]:
    """The report's lines: each table's files beside its rows' raw bytes, then each layout's
    column and index bytes per page beside its raw bytes per page read back."""
    lines = [f"LanceDB storage at {held['uri']} (files: its folder, listed):",
             f"{'table':<34}{'rows':>10}{'raw':>11}{'files':>11}{'data':>11}{'index':>11}{'other':>11}{'files/raw':>11}"]
    for t in held["tables"]:
        ratio = f"{t['files_bytes'] / t['raw_bytes']:.2f}" if t["raw_bytes"] else "-"
        lines.append(f"{t['table']:<34}{t['rows']:>10,}{human_bytes(t['raw_bytes']):>11}{human_bytes(t['files_bytes']):>11}"
                     f"{human_bytes(t['data_bytes']):>11}{human_bytes(t['index_bytes']):>11}"
                     f"{human_bytes(t['other_bytes']):>11}{ratio:>11}")
    lines.append(f"{'layout':<15}{'column':<14}{'raw/page':>11}{'data/page':>11}{'index/page':>11}  index")
    for name, e in held["layouts"].items():
        raw = e.get("raw_bytes_per_page")
        idx = e.get("index")
        lines.append(f"{name:<15}{e['column']:<14}{(human_bytes(raw) if raw is not None else '-'):>11}"
                     f"{human_bytes(e['data_bytes_per_page']):>11}"
                     f"{(human_bytes(e['index_bytes_per_page']) if idx else '-'):>11}  "
                     f"{idx['type'] if idx else 'none (exact search)'}")
    return lines
