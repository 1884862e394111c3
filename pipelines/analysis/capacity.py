"""`pagemill plan`: what an index of N pages will cost, with no run: storage per layout (raw,
Parquet, Milvus memory and disk), money per month, and, from a calibration, GPU-hours and the
CPU cores per GPU that keep rendering ahead. A report given (``--report``) replaces the cost
model's Milvus overhead with the one measured there.
"""

from __future__ import annotations

import math
from dataclasses import asdict

from operators.errors import UsageError
from operators.layouts.encodings import ENCODINGS
from operators.layouts.layout import SV_VLM_LAYOUT, TEXT_LAYOUT, Layout, of_sv_model, parse_layout
from operators.models import ModelSpec, decide_budget
from operators.models.family import family, plan_name
from operators.models.presets import PLAN_ONLY, PRESETS
from operators.models.sv import SV_PRESETS
from operators.render import target_size
from pipelines.analysis import sizing
from pipelines.analysis.costs import (
    DEFAULT_PRICES,
    TEXT_CHUNKS_PER_PAGE,
    TEXT_DIM,
    Prices,
    human_bytes,
    lance_layout_cost,
    lance_text_cost,
    layout_cost,
    lite_memory_bytes,
    lite_memory_warning,
    pooled_vectors,
    short_count,
    text_layer_cost,
)

LETTER_PT = (612, 792)  # a US-letter page, in points: the page a derived plan shape is measured on


def plan_shapes() -> dict[str, dict]:
    """What ``pagemill plan`` knows of each model ``--model`` accepts: vectors per page, dim,
    stored dtype, the vectors besides the patches (the family's), single-vector or not, a note.
    A preset without published figures (the ``-tiny`` ones) gets its family's count for a
    US-letter page at its budget; a single-vector model (``sv:``) its dimension."""

    out = {}
    for name, preset in PRESETS.items():
        spec = decide_budget(ModelSpec(name=name))
        fam = family(spec)
        before, after = fam.special
        if "plan" in preset:
            out[name] = {**preset["plan"], "special": before + after}
            continue
        patches = fam.visual_tokens(spec, *target_size(*LETTER_PT, fam.pixel_budget(spec)))
        out[name] = {"vectors_per_page": patches + before + after, "dim": preset["embedding_dim"], "dtype": "bf16",
                     "special": before + after,
                     "note": f"a US-letter page at the preset's budget: {patches} patches + {before + after} other vectors"}
    out.update(PLAN_ONLY)
    for name, preset in SV_PRESETS.items():
        out.setdefault(name, {"vectors_per_page": 1, "dim": preset["text"]["hidden_size"], "dtype": "bf16",
                              "single": True, "note": "sv: a single vector a page (its hidden size)"})
    return out



MODEL_PRESETS: dict[str, dict] = plan_shapes()  # operators/models/presets.py: one table of models


def plan(*, preset: str | None = None, vectors_per_page: float | None = None, dim: int | None = None,
         dtype: str | None = None, pages: int = 1_000_000, layouts: list[str] | None = None,
         calibration: dict | None = None, deadline_hours: float | None = None, index: str = "HNSW",
         replicas: int = 1, prices: Prices = DEFAULT_PRICES, lite: bool = False, measured: dict | None = None,
         store: str = "milvus", ocr_fraction: float | None = None, duplicate_fraction: float = 0.0,
         page_images: str | None = None, fleet: dict | None = None) -> dict:
    """``measured``: a ``pagemill report --json`` whose Milvus server bytes were measured; each
    layout's Milvus disk is then its raw bytes times the overhead measured there (server bytes
    over raw bytes of the collection that held the layout, or of one of the same kind).
    ``store``: ``lancedb`` costs LanceDB's disk (data and index) and memory (its indexes) instead,
    ``index`` one of LanceDB's (``NONE``: exact search). ``ocr_fraction``: the share of pages that
    need OCR (default: the calibration's, else none); ``duplicate_fraction``: the share of pages
    that are duplicates (copied, not embedded); ``page_images``: ``--page-images``' spec, whose
    bytes the plan adds. ``fleet``: what the fleet has (``gpus``, ``cpus``, ``store_nodes``) and
    the store's rows/s per node (``store_rows_per_s``), for the fleet section
    (pipelines/analysis/sizing.py)."""
    for name, value in (("--ocr-fraction", ocr_fraction), ("--duplicate-fraction", duplicate_fraction)):
        if value is not None and not 0 <= value <= 1:
            raise UsageError(f"{name}: a share of the pages, 0 to 1, got {value:g}")
    asked_dtype = dtype
    extras = {"ocr_fraction": ocr_fraction, "duplicate_fraction": duplicate_fraction, "page_images": page_images,
              "fleet": fleet, "store": store}
    if preset:
        preset = plan_name(preset)
        if preset not in MODEL_PRESETS:
            raise UsageError(f"unknown model preset {preset!r} (known: {', '.join(sorted(MODEL_PRESETS))})")
        p = MODEL_PRESETS[preset]
        vectors_per_page = vectors_per_page or p["vectors_per_page"]
        dim = dim or p["dim"]
        dtype = dtype or p["dtype"]
        special = p.get("special", 0)
        single = p.get("single", False)
    else:
        if not (vectors_per_page and dim):
            raise UsageError("give --model PRESET, or --vectors-per-page and --dim")
        dtype = dtype or "bf16"
        special = 0
        single = vectors_per_page == 1
    if dtype not in ENCODINGS:
        raise UsageError(f"dtype: {dtype!r} is not one of {', '.join(ENCODINGS)}")
    # A single-vector model's page vector is the sv-vlm layout, in the encoding --dtype asks
    # (sv-vlm-bf16, costed as sv-mean-bf16); without --dtype as pagemill stores it today, float32.
    stored = (asked_dtype or "fp32") if single else dtype
    if single:  # --dtype is how the page vector is stored; the model computes in its own (bf16 if unknown)
        dtype = MODEL_PRESETS[preset]["dtype"] if preset else "bf16"
    base = (SV_VLM_LAYOUT if stored == "fp32" else f"{SV_VLM_LAYOUT}-{stored}") if single else f"mv-{dtype}"
    names = [base] + [x for x in (layouts or []) if x != base]
    if single:  # (no multi-vector to pool or to encode as FDE)
        names = [n for n in names if (n.startswith("sv-") and not n.startswith("sv-fde")) or n == TEXT_LAYOUT]
    rows = []
    m_index = index if store != "lancedb" else "HNSW"  # LanceDB's index is costed by lance_row
    for name in names:
        if name == TEXT_LAYOUT:  # the text layer: a row per chunk, dense and BM25
            cost = text_layer_cost(index=m_index)
            vpp = cost.vectors_per_page
        else:
            lay = costed_layout(name)
            vpp = pooled_vectors(vectors_per_page, lay, special)
            cost = layout_cost(lay, vpp, dim, index=m_index, lite=lite)
        cost.layout = name
        overhead = measured_overhead(measured, name) if measured and name != TEXT_LAYOUT else None
        if overhead:
            cost.milvus_disk_bytes_per_page = cost.milvus_raw_bytes_per_page * overhead["ratio"]
        rows.append({"layout": name, "vectors_per_page": vpp, "dim": cost.dim, "bytes_per_vector": cost.bytes_per_vector,
                     "raw_bytes_per_page": cost.raw_bytes_per_page, "raw_bytes_total": cost.raw_bytes_per_page * pages,
                     "parquet_bytes_total": cost.parquet_bytes_per_page * pages,
                     "milvus_memory_bytes": cost.milvus_memory_bytes_per_page * pages * replicas,
                     "milvus_disk_bytes": cost.milvus_disk_bytes_per_page * pages,
                     "monthly_cost_usd": round(cost.monthly_cost(pages, prices, replicas), 2)})
        if overhead:
            rows[-1]["milvus_disk_measured_overhead"] = overhead
        if store == "lancedb":
            rows[-1] = lance_row(rows[-1], name, base, vpp, dim, index, pages, prices)
    out = {"pages": pages, "model": preset, "vectors_per_page": vectors_per_page, "dim": dim, "dtype": dtype,
           "stored_dtype": stored, "index": index.upper(), "replicas": replicas, "layouts": rows, "prices": asdict(prices)}
    out["notes"] = []
    if store == "lancedb":
        out["store"] = "lancedb"
        out["notes"] += lance_notes(rows, base, index, pages)
        return with_compute(out, calibration, deadline_hours, pages, prices, **extras)
    lite_raw = sum(text_layer_cost().milvus_raw_bytes_per_page if r["layout"] == TEXT_LAYOUT else
                   layout_cost(costed_layout(r["layout"]), r["vectors_per_page"], dim, lite=True).milvus_raw_bytes_per_page for r in rows)
    out["lite_memory_bytes"] = lite_memory_bytes(pages, lite_raw)
    warning = lite_memory_warning(pages, lite_raw)
    if warning:
        out["notes"].append(warning)
    if index.upper() == "AUTOINDEX":
        out["notes"].append("AUTOINDEX is costed as HNSW (M=16), what a Milvus server builds for it")
    if TEXT_LAYOUT in names:
        out["notes"].append(f"text: the text layer ({TEXT_DIM}-dim text:all-MiniLM-L6-v2), {TEXT_CHUNKS_PER_PAGE:g} "
                            f"chunks a page (a row each: dense vector, BM25 text and sparse vector); pagemill report "
                            f"measures yours")
    with_overhead = [r for r in rows if "milvus_disk_measured_overhead" in r]
    if with_overhead:
        ratios = ", ".join(f"{r['layout']} x{r['milvus_disk_measured_overhead']['ratio']:.2f}" for r in with_overhead)
        measured_on = with_overhead[0]["milvus_disk_measured_overhead"]["pages_measured"]
        out["notes"].append(f"Milvus disk: raw bytes x the server's overhead measured by pagemill report on "
                            f"{measured_on:,} pages ({ratios})" + (
                                "; a small sample: per-file and per-segment costs weigh more than at scale"
                                if measured_on < 1000 else ""))
    elif measured is not None:
        out["notes"].append("the report given has no measured Milvus server bytes (report with --milvus and, for a "
                            "server, --milvus-storage): Milvus disk is the cost model's")
    return with_compute(out, calibration, deadline_hours, pages, prices, **extras)


def costed_layout(name: str) -> Layout:
    """The layout a plan row is costed as: a single-vector model's page vector (``sv-vlm``,
    ``sv-vlm-bf16``, ...) as the mean vector in the same encoding."""
    if of_sv_model(name):
        name = "sv-mean" + name[len(SV_VLM_LAYOUT):]
    return parse_layout(name)


def lance_row(row: dict, name: str, base: str, vpp: float, dim: int, index: str, pages: int, prices: Prices) -> dict:
    """A plan row costed for LanceDB: its disk (data and index) and memory (the index)."""
    if name == TEXT_LAYOUT:
        lc = lance_text_cost(index=index)
    else:
        # the base layout is pagemill's mv column: float16 whatever the model computes in
        lay = parse_layout("mv") if name == base and name.startswith("mv-") else costed_layout(name)
        lc = lance_layout_cost(lay, vpp, dim, index=index)
    out = {k: v for k, v in row.items() if not k.startswith("milvus_")}
    gb = 1e9
    out.update(lancedb_held=lc.held, lancedb_memory_bytes=lc.memory_bytes_per_page * pages,
               lancedb_disk_bytes=lc.disk_bytes_per_page * pages,
               monthly_cost_usd=round((row["parquet_bytes_total"] * prices.object_storage_gb_month
                                       + lc.memory_bytes_per_page * pages * prices.ram_gb_month
                                       + lc.disk_bytes_per_page * pages * prices.disk_gb_month) / gb, 2))
    return out


def lance_notes(rows: list[dict], base: str, index: str, pages: int) -> list[str]:
    held = f"{base} as pagemill's mv column, float16" if base.startswith("mv-") else f"{base} decoded to float32"
    notes = [f"LanceDB: a row per page, each layout a column ({held}); its memory "
             f"is its indexes (read into the index cache when searched), its disk the data and the indexes"]
    if any(not r["lancedb_held"] for r in rows):
        notes.append("LanceDB holds float16/32 multi-vectors only: " + ", ".join(
            r["layout"] for r in rows if not r["lancedb_held"]) + " stay in the Parquet archive (0 in LanceDB)")
    if index.upper() == "NONE":
        scan = sum(r["lancedb_disk_bytes"] for r in rows if r["layout"] == base)
        notes.append(f"index NONE (pagemill's default: exact search) reads the searched column whole for every query: "
                     f"{human_bytes(scan)} at {short_count(pages)} pages; --index IVF_PQ (or --lancedb-index at "
                     f"ingest) for a bounded search")
    return notes


DEFAULT_OCR_MS = 900.0  # Tesseract (eng, 300 dpi) on a page of the dev corpus, one core (pagemill calibrate)
DEFAULT_IMAGE_BYTES = 44_000  # a dev-corpus page as webp:1024 (pagemill calibrate: page_image_bytes)
IMAGE_FORMAT_RATIO = {"webp": 1.0, "jpeg": 1.6, "jpg": 1.6, "png": 4.0}  # bytes against WebP's, document pages


def page_image_bytes(spec: str, calibration: dict | None) -> tuple[float, str]:
    """Bytes of one page image for ``--page-images spec``: the calibration's measured webp:1024
    bytes (else the dev corpus'), scaled by the area and the format; and where that came from."""
    from operators.render import parse_page_images

    try:
        fmt, edge = parse_page_images(spec) or ("webp", 0)
    except ValueError as e:
        raise UsageError(f"--page-images {e}") from None
    measured = (calibration or {}).get("page_image_bytes")
    base = float(measured or DEFAULT_IMAGE_BYTES)
    where = "measured by pagemill calibrate" if measured else "the dev corpus' (calibrate measures yours)"
    return base * (edge / 1024) ** 2 * IMAGE_FORMAT_RATIO[fmt], where


def with_compute(out: dict, calibration: dict | None, deadline_hours: float | None, pages: int, prices: Prices,
                 ocr_fraction: float | None = None, duplicate_fraction: float = 0.0,
                 page_images: str | None = None, fleet: dict | None = None, store: str = "milvus") -> dict:
    """The plan's compute section from a calibration (GPU-hours, GPUs for a deadline, CPU cores
    per GPU: rendering and OCR for the share of pages that need it), fewer GPU-hours for the
    duplicates, and the page images' bytes."""
    if page_images and page_images != "none":
        per_page, where = page_image_bytes(page_images, calibration)
        out["page_images"] = {"spec": page_images, "bytes_per_page": round(per_page),
                              "bytes_total": round(per_page * pages),
                              "monthly_cost_usd": round(per_page * pages / 1e9 * prices.object_storage_gb_month, 2)}
        out["notes"].append(f"page images ({page_images}): {human_bytes(per_page)} a page, from webp:1024 bytes "
                            f"{where}, scaled by area and format")
    embedded = pages * (1 - (duplicate_fraction or 0.0))
    if duplicate_fraction:
        out["duplicate_fraction"] = duplicate_fraction
        out["notes"].append(f"duplicates: {duplicate_fraction:.0%} of the pages copied from the archive, not "
                            f"rendered or embedded ({short_count(round(pages - embedded))} pages); their rows are "
                            f"stored like the others'")
    if calibration:
        gpu_rate = float(calibration["pages_per_s"])
        render_rate = calibration.get("render_pages_per_s_per_core")
        if not render_rate:
            render_rate = DEFAULT_RENDER_RATE
            out["notes"].append(f"render rate: {DEFAULT_RENDER_RATE:g} pages/s per core assumed (the calibration "
                                f"has none; pagemill calibrate SOURCE measures yours)")
        elif (calibration.get("render_sample") or {}).get("source") == "synthetic":
            out["notes"].append("render rate measured on a synthetic page (calibrate --synthetic): real documents "
                                "render many times slower; calibrate on a sample of yours")
        render_rate = float(render_rate)
        if calibration.get("device") and not str(calibration["device"]).startswith("cuda"):
            out["notes"].append(f"the calibration ran on {calibration['device']}, not a GPU: its GPU-hours are that "
                                f"device's hours")
        gpu_hours = embedded / gpu_rate / 3600
        fraction = ocr_fraction if ocr_fraction is not None else float(calibration.get("ocr_fraction") or 0.0)
        ocr_ms = float(calibration.get("ocr_ms_per_page") or DEFAULT_OCR_MS)
        core_s = {"render": 1 / render_rate, "ocr": fraction * ocr_ms / 1000}
        compute = {"gpu_pages_per_s": gpu_rate, "gpu_hours": round(gpu_hours, 2),
                   "cpu_cores_per_gpu": math.ceil(gpu_rate * sum(core_s.values())),
                   "cpu_core_s_per_page": {k: round(v, 4) for k, v in core_s.items()},
                   "ocr_fraction": fraction, "ocr_ms_per_page": ocr_ms,
                   "gpu_cost_usd": round(gpu_hours * prices.gpu_hour, 2)}
        if fraction:
            out["notes"].append(f"OCR: {fraction:.1%} of the pages at {ocr_ms:.0f} ms a page on one core ("
                                + ("measured by pagemill calibrate" if calibration.get("ocr_ms_per_page") else
                                   "the dev corpus'; calibrate measures yours") + f"): {core_s['ocr'] * 1000:.1f} ms "
                                f"of CPU a page on average, beside rendering's {core_s['render'] * 1000:.1f} ms")
        if deadline_hours:
            compute["deadline_hours"] = deadline_hours
            compute["gpus_for_deadline"] = math.ceil(gpu_hours / deadline_hours)
        if calibration.get("cpu_ms_per_page"):  # every CPU stage measured: the fleet's sizing
            given = dict(fleet or {})
            gpus = given.pop("gpus", None) or compute.get("gpus_for_deadline") or 1
            image = out["page_images"]["bytes_per_page"] if "page_images" in out else 0.0
            f = sizing.fleet(calibration, out["layouts"], pages=pages, store=store, gpus=gpus, ocr_fraction=ocr_fraction,
                             ocr_ms=ocr_ms, image_bytes=image, **given)
            compute["cpu_cores_per_gpu"] = f["cpu_cores_per_gpu"]
            compute["cpu_core_s_per_page"] = {k: round(v / 1000, 4) for k, v in f["cpu_ms_per_page"].items()}
            compute["stages"] = True
            out["fleet"] = f
            out["notes"] += f.pop("notes")
        if calibration.get("peak_device_memory_bytes"):
            compute["peak_device_memory_bytes"] = calibration["peak_device_memory_bytes"]
        out["compute"] = compute
    return out


def measured_overhead(report: dict, layout: str) -> dict | None:
    """Server bytes over raw bytes measured for ``layout`` in a report (or for a layout of the same
    kind, multi- or single-vector, when the report did not hold that one)."""
    found = {r["layout"]: r["milvus"]["server"] for r in report.get("layouts", [])
             if (r.get("milvus") or {}).get("server", {}).get("ratio_to_raw")}
    kind = "mv" if layout.startswith("mv") else "sv"
    key = layout if layout in found else next((k for k in sorted(found) if k.startswith(kind)), None)
    if key is None:
        return None
    return {"ratio": found[key]["ratio_to_raw"], "from_layout": key, "collection": found[key]["collection"],
            "pages_measured": report.get("pages_measured", 0)}


DEFAULT_RENDER_RATE = 59.0  # pages/s per core at ColQwen2's budget on the dev corpus (benchmarks.render)


def check_calibration(calibration: dict, preset: str | None) -> str | None:
    """The model a calibration plans for: ``preset`` when it was measured with that model (or a
    simulation of it), the calibration's own when no model is asked; another model is refused
    with the commands that work."""
    measured = plan_name(str(calibration.get("model", "")))
    if not preset:
        return measured or None
    asked = plan_name(preset)
    if measured and measured != asked:
        raise UsageError(f"--calibration was measured with {calibration.get('model')}, the plan is for {preset}: plan "
                         f"that model (pagemill plan --model {measured} --calibration ...), or calibrate {asked} on "
                         f"the accelerator you will use (pagemill calibrate SOURCE --model {asked} --out calib.json)")
    return asked


def format_plan(p: dict) -> str:
    stored = p.get("stored_dtype", "fp32")
    shape = (f"1 x {p['dim']} (computed in {p['dtype']}, stored {'float32' if stored == 'fp32' else stored})"
             if p["vectors_per_page"] == 1
             else f"{p['vectors_per_page']} x {p['dim']} {p['dtype']}")
    store = "LanceDB" if p.get("store") == "lancedb" else "Milvus"
    key, ram_w, disk_w = store.lower(), len(store) + 6, len(store) + 7
    lines = [f"{short_count(p['pages'])} pages, {p['model'] or 'custom'}: {shape}; "
             f"{store} index {p['index']}" + (f", {p['replicas']} replica(s)" if store == "Milvus" else ""),
             f"{'layout':<15}{'vec/page':>10}{'bytes/page':>12}{'total raw':>12}{'Parquet':>12}{store + ' RAM':>{ram_w}}"
             f"{store + ' disk':>{disk_w}}{'$/month':>12}"]
    for r in p["layouts"]:
        lines.append(f"{r['layout']:<15}{r['vectors_per_page']:>10.1f}{human_bytes(r['raw_bytes_per_page']):>12}"
                     f"{human_bytes(r['raw_bytes_total']):>12}{human_bytes(r['parquet_bytes_total']):>12}"
                     f"{human_bytes(r[key + '_memory_bytes']):>{ram_w}}{human_bytes(r[key + '_disk_bytes']):>{disk_w}}"
                     f"{r['monthly_cost_usd']:>12,.0f}")
    if "compute" in p:
        c = p["compute"]
        kept = "every CPU stage" if c.get("stages") else "rendering" + (" and OCR" if c.get("ocr_fraction") else "")
        line = (f"compute: {c['gpu_pages_per_s']:.1f} pages/s per GPU -> {c['gpu_hours']:,.1f} GPU-hours "
                f"(${c['gpu_cost_usd']:,.0f}); {c['cpu_cores_per_gpu']} CPU cores per GPU keep {kept} ahead")
        if "gpus_for_deadline" in c:
            line += f"; {c['gpus_for_deadline']} GPUs to finish in {c['deadline_hours']:g} h"
        lines.append(line)
    if "fleet" in p:
        lines += sizing.format_fleet(p["fleet"])
    if "page_images" in p:
        im = p["page_images"]
        lines.append(f"page images {im['spec']}: {human_bytes(im['bytes_per_page'])} a page, "
                     f"{human_bytes(im['bytes_total'])} in all (${im['monthly_cost_usd']:,.0f}/month in object storage)")
    lines += [f"note: {n}" for n in p.get("notes", [])]
    return "\n".join(lines)
