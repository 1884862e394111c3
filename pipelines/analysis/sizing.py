"""Sizing a fleet from a calibration: every CPU stage, the store's ingest, the object store, and
which resource binds first (the ``fleet`` section of ``pagemill plan``).

A calibration (pipelines/analysis/calibrate.py) measures what one page costs on the CPUs, stage by
stage (``cpu_ms_per_page``), and how fast its store took the rows (``store_write``). For a fleet
of G GPUs at the calibrated pages/s each, the plan needs, per second:

- CPU: the sum of the stages' milliseconds (render with its OCR, encode of the plan's layouts, the
  text model, Parquet and the store's client, the model stage's host CPU where measured on a GPU);
- writers: the write stage's wall time per page (its waits on the store included);
- the store: rows per page (Milvus: a row per vector of each multi-vector layout, a row per page
  for the page-level vectors, a row per text chunk; LanceDB: a row per page and per chunk) at the
  fleet's pages/s, against the rows/s one Milvus data node (or one LanceDB writer) takes: the
  calibration's measured rate when it wrote to a server, else ``STORE_ROWS_PER_S`` (an assumption,
  named in the plan; ``--store-rows-per-s`` replaces it);
- the object store: Parquet parts (one PUT per writer call of ``write_batch_pages`` pages), page
  images (one each), the ledger (a PUT per unit committed), and their bytes, against S3's 3,500
  PUTs/s per prefix.

What is given (``--gpus``, ``--cpus``, ``--store-nodes``) limits the fleet's pages/s; what is not
given is sized to carry the GPUs. The CPUs' limit is the lower of their sum over the stages and
each stage's own: its actors, as pagemill's Ray executor starts them on those CPUs
(``default_actors``), times what one actor does a second. The resource with the lowest limit
binds first, and the stage with the lowest limit is the bottleneck.
"""

from __future__ import annotations

import math

from operators.layouts.layout import TEXT_LAYOUT
from pipelines.executors.base import default_actors

STORE_ROWS_PER_S = {"milvus": 20_000.0, "lancedb": 2_000.0}  # per data node / per writer: assumed, see plan notes
# Milvus' bulk import waits seconds before it starts whatever the size (21 s for 305 rows on
# 2.3.5 standalone): a sample smaller than this measures that wait, not the import's rate
BULK_RATE_MIN_ROWS = 100_000
S3_PUTS_PER_S_PER_PREFIX = 3_500.0  # AWS' documented request rate per partitioned prefix
UNIT_PAGES = 32 * 8  # pages per committed unit (a ledger PUT): 32 documents of about 8 pages
WRITE_BATCH_PAGES = 64  # ingest --write-batch-pages (a Parquet part per writer call)


def stage_ms(calibration: dict, layouts: list[str], ocr_fraction: float | None, ocr_ms: float) -> tuple[dict, list[str]]:
    """CPU milliseconds per page by stage for the plan's layouts, and notes on what was not measured."""
    cal = calibration.get("cpu_ms_per_page") or {}
    notes = []
    out: dict[str, float] = {}
    render = float(cal.get("render", 0.0))
    if ocr_fraction is not None:  # the measured render holds the sample's own OCR share: replace it
        sample = float(calibration.get("ocr_fraction") or 0.0)
        render = max(0.0, render - sample * ocr_ms) + ocr_fraction * ocr_ms
    out["render"] = render
    if "embed" in cal:
        out["embed"] = float(cal["embed"])
    by_layout = cal.get("encode_by_layout") or {}
    # the plan's first layout is the model's base (mv-bf16: pagemill's mv column); mv and sv-mean
    # are written by every run
    wanted = list(dict.fromkeys(["mv", "sv-mean", *[n for n in layouts[1:] if n not in (TEXT_LAYOUT, "sv-vlm")]]))
    missing = [n for n in wanted if n not in by_layout]
    out["encode"] = sum(float(by_layout.get(n, 0.0)) for n in wanted) if by_layout else float(cal.get("encode", 0.0))
    if by_layout and missing:
        notes.append(f"encode: {', '.join(missing)} not in the calibration (calibrate --layouts "
                     f"{','.join(missing)} measures them); counted as 0")
    if TEXT_LAYOUT in layouts:
        if "embed_text" in cal:
            out["embed_text"] = float(cal["embed_text"])
        else:
            notes.append("text: the calibration did not run the text model (calibrate --model MODEL,text:NAME)")
    out["write"] = float(cal.get("write", 0.0))
    return out, notes


def rows_per_page(rows: list[dict], store: str) -> float:
    """Rows the store takes for a page of the plan's layouts."""
    text = next((r["vectors_per_page"] for r in rows if r["layout"] == TEXT_LAYOUT), 0.0)
    if store == "lancedb":
        return 1.0 + text
    multi = sum(r["vectors_per_page"] for r in rows if r["layout"].startswith("mv"))
    return multi + 1.0 + text


def fleet(calibration: dict, rows: list[dict], *, pages: int, store: str, gpus: int, cpus: float | None = None,
          store_nodes: int | None = None, store_rows_per_s: float | None = None, ocr_fraction: float | None = None,
          ocr_ms: float = 900.0, image_bytes: float = 0.0, write_batch_pages: int = WRITE_BATCH_PAGES) -> dict:
    gpu_rate = float(calibration["pages_per_s"])
    layouts = [r["layout"] for r in rows]
    ms, notes = stage_ms(calibration, layouts, ocr_fraction, ocr_ms)
    total_ms = sum(ms.values())
    per_gpu_cores = gpu_rate * total_ms / 1000
    out: dict = {"gpus": gpus, "gpu_pages_per_s": gpu_rate,
                 "cpu_ms_per_page": {k: round(v, 2) for k, v in ms.items()},
                 "cpu_ms_per_page_total": round(total_ms, 2),
                 "cpu_share": {k: round(v / total_ms, 3) for k, v in ms.items()} if total_ms else {},
                 "cpu_cores_per_gpu": math.ceil(per_gpu_cores - 1e-9) if total_ms else 0}
    limits = {"gpu": gpus * gpu_rate}
    stage_limits: dict[str, float] = {}
    if cpus:
        # the cores shared by every stage, and each stage's own actors as pagemill's Ray executor
        # starts them on these CPUs (a stage runs on its actors only: one render actor on a small
        # machine renders on one core, whatever the cores left)
        actors = default_actors(cpus, gpus, sim=str(calibration.get("model", "")).startswith("sim:"))
        stage_limits = {s: actors.get(s, 1) * 1000 / v for s, v in ms.items() if v and s in actors}
        limits["cpu"] = min([cpus * 1000 / total_ms if total_ms else math.inf, *stage_limits.values()])
        out.update(cpus=cpus, actors=actors, stage_limits_pages_per_s={k: round(v, 1) for k, v in stage_limits.items()})
    # writers: a writer's wall per page, its waits on the store included
    written = calibration.get("store_write") or {}
    parts = (calibration.get("cpu_ms_per_page") or {}).get("write_parts") or {}
    if written.get("pages_per_s"):
        writer_ms = 1000 / float(written["pages_per_s"]) + float(parts.get("parquet", 0.0))
        out["writer_ms_per_page"] = round(writer_ms, 2)
        out["writers"] = math.ceil(gpus * gpu_rate * writer_ms / 1000 - 1e-9)
    # the store's ingest
    rpp = rows_per_page(rows, store)
    measured = written.get("rows_per_s") if written.get("store") == "milvus" and store == "milvus" \
        and calibration.get("store_server") else None
    bulk = written.get("path") == "bulk"
    latency_bound = bool(measured) and bulk and int(written.get("rows") or 0) < BULK_RATE_MIN_ROWS
    if latency_bound:  # a sample's import is the server's fixed latency, not its rate
        measured = None
    per_node = float(store_rows_per_s or measured or STORE_ROWS_PER_S[store])
    what = "data node" if store == "milvus" else "writer"
    source = ("given (--store-rows-per-s)" if store_rows_per_s else
              f"measured by calibrate on the server given ({'its bulk import' if bulk else 'row inserts'})"
              if measured else "assumed (--store-rows-per-s to give yours)")
    if latency_bound and not store_rows_per_s:
        source += (f"; the calibration's bulk import of {int(written['rows']):,} rows took {written.get('import_s')} s, "
                   f"the server's latency rather than its rate (a rate needs {BULK_RATE_MIN_ROWS:,} rows or more)")
    fleet_rate = gpus * gpu_rate
    out["store"] = {"store": store, "rows_per_page": round(rpp, 1), "rows_per_s": round(fleet_rate * rpp),
                    f"rows_per_s_per_{what.replace(' ', '_')}": per_node, "figure": source,
                    f"{what.replace(' ', '_')}s": math.ceil(fleet_rate * rpp / per_node - 1e-9)}
    if store_nodes:
        limits["store"] = store_nodes * per_node / rpp
    # the object store
    parquet = sum(r["parquet_bytes_total"] for r in rows) / max(1, pages)
    puts = 1 / write_batch_pages + 1 / UNIT_PAGES + (1.0 if image_bytes else 0.0)
    out["object_store"] = {"puts_per_page": round(puts, 4), "puts_per_s": round(fleet_rate * puts, 1),
                           "bytes_per_page": round(parquet + image_bytes), "bytes_per_s": round(fleet_rate * (parquet + image_bytes)),
                           "puts_per_s_per_prefix": S3_PUTS_PER_S_PER_PREFIX}
    limits["object_store"] = S3_PUTS_PER_S_PER_PREFIX / puts
    binding = min(limits, key=limits.get)
    out["limits_pages_per_s"] = {k: round(v, 1) for k, v in limits.items()}
    out["binding"] = binding
    out["pages_per_s"] = round(limits[binding], 1)
    if binding == "cpu" and total_ms:
        out["bottleneck_stage"] = min(stage_limits, key=stage_limits.get) if stage_limits else max(ms, key=ms.get)
    elif binding == "gpu":
        out["bottleneck_stage"] = "embed"
    out["notes"] = notes + [f"store: {per_node:,.0f} rows/s per Milvus {what} " if store == "milvus" else
                            f"store: {per_node:,.0f} rows/s per LanceDB {what} "]
    out["notes"][-1] += f"({source})"
    return out


def format_fleet(f: dict) -> list[str]:
    shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(f["cpu_share"].items(), key=lambda kv: -kv[1]))
    lines = [f"fleet: {f['gpus']} GPU(s) at {f['gpu_pages_per_s']:.1f} pages/s each; CPU {f['cpu_ms_per_page_total']:.1f} "
             f"ms a page ({shares}) -> {f['cpu_cores_per_gpu']} cores per GPU"
             + (f"; {f['writers']} writer(s)" if "writers" in f else "")]
    s = f["store"]
    nodes = "data_nodes" if s["store"] == "milvus" else "writers"
    lines.append(f"store: {s['rows_per_page']:,.0f} rows a page, {s['rows_per_s']:,} rows/s -> {s[nodes]} "
                 f"{nodes.replace('_', ' ')} ({s['figure']})")
    o = f["object_store"]
    lines.append(f"object store: {o['puts_per_s']:,.1f} PUTs/s, {o['bytes_per_s'] / 1e6:,.1f} MB/s")
    if "actors" in f:
        lines.append("actors (the Ray executor's default on these CPUs): " + ", ".join(
            f"{k} {n}" + (f" ({f['stage_limits_pages_per_s'][k]:,.1f} pages/s)" if k in f["stage_limits_pages_per_s"] else "")
            for k, n in f["actors"].items()))
    limits = ", ".join(f"{k} {v:,.1f}" for k, v in f["limits_pages_per_s"].items())
    lines.append(f"binds first: {f['binding']} at {f['pages_per_s']:,.1f} pages/s (limits, pages/s: {limits})"
                 + (f"; bottleneck stage {f['bottleneck_stage']}" if f.get("bottleneck_stage") else ""))
    return lines
