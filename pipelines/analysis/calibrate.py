"""`pagemill calibrate`: how fast this device embeds pages with a model, for capacity planning.

Runs the real architecture (random weights are fine: speed does not depend on weight values) on
pages of the user's own sample rendered at the model's pixel budget, after a warm-up batch, and
records pages/s, vectors per page, dim and peak device memory, plus how fast one CPU core renders
the sample's pages (real documents render at tens of pages/s per core; a repeated synthetic page
renders at a thousand, so ``--synthetic`` is for trying the command, not for planning).
The profile is the ``--calibration`` input of ``pagemill plan``.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone

import numpy as np
import psutil

from operators.errors import UsageError
from operators.io.sources import LocalSource
from operators.models import ModelSpec, adapter_for, decide_budget
from operators.render import RenderLimits, RenderPages, units_table


def _sample_pdf(path: str, pages: int) -> None:
    """A text-and-table document of ``pages`` US-letter pages (used when no source is given)."""
    import pymupdf

    doc = pymupdf.open()
    body = ("Calibration page. Quarterly revenue, operating margin and headcount by region, with notes. " * 30)
    for i in range(pages):
        page = doc.new_page(width=612, height=792)
        page.insert_text((72, 72), f"Calibration report, page {i + 1}", fontsize=16)
        page.insert_textbox(pymupdf.Rect(72, 100, 540, 480), body, fontsize=10)
        for r in range(8):
            for c in range(4):
                page.draw_rect(pymupdf.Rect(72 + c * 117, 500 + r * 28, 189 + c * 117, 528 + r * 28), width=0.6)
    doc.save(path)


def _quarantined(rendered) -> int:
    import json

    return sum(len(json.loads(info)["quarantine"]) for k, info in
               zip(rendered["kind"].to_pylist(), rendered["unit_info"].to_pylist()) if k == "unit" and info)


RENDER_SAMPLE_PAGES = 48  # pages of the user's sample the render rate is measured on (at least)
RENDER_SAMPLE_DOCS = 200  # documents at most, in the source's order


CPU_MAX_PARAMETERS = 1e9  # past this, a CPU run measures a couple of pages, not a sample
CPU_BIG_PAGES = 2


def parameters(spec: ModelSpec) -> int | None:
    """The model's parameters, counted on PyTorch's meta device (nothing allocated, nothing
    downloaded): a preset's architecture; None for a checkpoint pagemill has no preset of."""
    import torch

    from operators.models import PRESETS

    name = spec.name.removeprefix("sim:").split("@", 1)[0]
    if name not in PRESETS or spec.name.startswith("sim:"):
        return None
    with torch.device("meta"):
        model, _ = adapter_for(ModelSpec(name=name, weights="random"))._build_random()
    return sum(p.numel() for p in model.parameters())


def calibrate(spec: ModelSpec, n_pages: int = 16, batch_size: int = 8, source: str | None = None,
              workdir: str | None = None, s3_options=None, say=None, stage_pass=None) -> dict:
    """``source``: a folder or s3:// prefix of the user's PDFs; None: a generated document.
    ``say``: where the progress lines go (what starts, then each batch with its estimate). On a
    CPU, a model of more than a billion parameters embeds ``CPU_BIG_PAGES`` pages one at a time,
    and says so: a forward pass of a 2B model takes tens of seconds there. ``stage_pass(source,
    refs, say)``: what a page costs in every CPU stage, measured on the sample's documents
    (pipelines/ingest/stage_costs.py, given by the command: it runs an ingest's stages)."""
    import tempfile

    from operators.io.sources import SourceError
    from operators.io.uris import open_source
    from operators.models import resolve_device

    say = say or (lambda line: None)
    spec = decide_budget(spec)  # the checkpoint's own budget, decided as an ingest decides it
    adapter = adapter_for(spec)
    budget = adapter.pixel_budget()
    n_params = parameters(spec)
    if n_params and n_params > CPU_MAX_PARAMETERS and resolve_device(spec.device) == "cpu":
        n_pages, batch_size = min(n_pages, CPU_BIG_PAGES), 1
        say(f"calibrate: {spec.name} has {n_params / 1e9:.2f} B parameters and this run is on a CPU: measuring "
            f"{n_pages} pages one at a time (a CPU's rate plans nothing for a GPU: calibrate with --device cuda on "
            f"the accelerator you will use)")
    say(f"calibrate: rendering the sample at {spec.name}'s budget ({budget.max_pixels:,} px a page)")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        synthetic = source is None
        if synthetic:
            _sample_pdf(os.path.join(tmp, "calibration.pdf"), n_pages)
            src = LocalSource(tmp)
        else:
            try:
                src = open_source(source, s3_options=s3_options)
            except SourceError as e:
                raise UsageError(f"calibrate {source}: {e}") from None
        refs = []
        for ref in src.list_documents():
            refs.append(ref)
            if len(refs) >= RENDER_SAMPLE_DOCS:
                break
        if not refs:
            raise UsageError(f"no PDFs under {source}")
        stage = RenderPages(src, budget, RenderLimits(page_timeout_s=120, extract_text=False))
        stage.setup()
        try:
            stage(units_table([("warm-up", refs[:1])]))  # the child's start-up is not a per-page cost
            tables, render_s, docs = [], 0.0, 0
            for ref in refs:  # document by document, until enough pages are rendered
                t = time.perf_counter()
                tables.append(stage(units_table([("calibration", [ref])])))
                render_s += time.perf_counter() - t
                docs += 1
                if sum(tb["kind"].to_pylist().count("page") for tb in tables) >= max(n_pages, RENDER_SAMPLE_PAGES):
                    break
            pages_cost = page_costs(src, refs[:docs], say)
            cpu = stage_pass(src, refs[:docs], say) if stage_pass else {"cpu_ms_per_page": {}}
        finally:
            stage.close()
    import pyarrow as pa
    import torch

    rendered = pa.concat_tables(tables)
    kinds = rendered["kind"].to_pylist()
    rows = [i for i, k in enumerate(kinds) if k == "page"][:n_pages]
    if not rows:
        raise ValueError("no page could be rendered for calibration")
    images = [np.frombuffer(rendered["pixels"][i].as_py(), np.uint8).reshape(rendered["height"][i].as_py(),
                                                                              rendered["width"][i].as_py(), 3)
              for i in rows]
    params = f", {n_params / 1e6:,.0f} M parameters" if n_params else ""
    say(f"calibrate: loading {spec.name} ({spec.weights} weights{params})")
    adapter.load()
    cuda = str(adapter.device).startswith("cuda")
    process = psutil.Process()
    rss0 = process.memory_info().rss
    t = time.perf_counter()
    adapter.embed_images(images[:batch_size])  # warm-up: kernels, allocator, caches
    warm = time.perf_counter() - t
    say(f"calibrate: warm-up batch of {min(batch_size, len(images))} pages on {adapter.device} in {warm:.1f} s; "
        f"{len(images)} pages to measure, about {warm * len(images) / max(1, min(batch_size, len(images))):.0f} s")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t, cpu0 = time.perf_counter(), time.process_time()
    counts = []
    for start in range(0, len(images), batch_size):
        counts += [len(e.vectors) for e in adapter.embed_images(images[start:start + batch_size])]
        done, spent = len(counts), time.perf_counter() - t
        say(f"calibrate: embedded {done}/{len(images)} pages, {done / spent:.2f} pages/s, about "
            f"{(len(images) - done) * spent / done:.0f} s left")
    if cuda:
        torch.cuda.synchronize()
    embed_s, embed_cpu_s = time.perf_counter() - t, time.process_time() - cpu0
    if cuda and stage_pass:  # the model stage's host CPU (the processor, the batches): a GPU's own core(s)
        cpu["cpu_ms_per_page"]["embed"] = round(1000 * embed_cpu_s / len(images), 2)
    peak = torch.cuda.max_memory_allocated() if cuda else max(0, process.memory_info().rss - rss0)
    n_rendered = sum(1 for k in kinds if k == "page")
    return {
        "model": spec.name,
        "parameters": n_params,
        "weights": spec.weights,
        **{k: v for k, v in adapter.effective_settings().items() if k not in ("model", "weights")},
        "batch_size": batch_size,
        "pages": len(images),
        "pages_per_s": round(len(images) / embed_s, 3),
        "vectors_per_page": round(float(np.mean(counts)), 2),
        "peak_device_memory_bytes": int(peak),
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "host RSS growth",
        "render_pages_per_s_per_core": round(n_rendered / render_s, 2),
        "render_sample": {"source": "synthetic" if synthetic else source, "documents": docs, "pages": n_rendered,
                          "documents_quarantined": _quarantined(rendered)},
        **pages_cost,
        **cpu,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "gpu": torch.cuda.get_device_name(0) if cuda else None},
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


OCR_SAMPLE_PAGES = 4  # pages Tesseract reads to time it
PAGE_COST_SAMPLE = 32  # pages looked at for the OCR fraction and the page images


def page_costs(src, refs, say) -> dict:
    """What a page of the sample costs beyond rendering: the share of pages ``--ocr auto`` would
    read (empty or thin text), Tesseract's milliseconds per page on them (on full pages of the
    sample when none needs it: the cost the plan adds for the fraction it is given), and a page
    image's bytes and milliseconds at ``webp:1024``."""
    import pymupdf

    from operators.io.formats import format_of
    from operators.ocr import resolve
    from operators.render import page_image, thin_text

    engine = resolve("auto")
    seen, thin, ocr_ms, image_bytes, image_ms = 0, 0, [], [], []
    for ref in refs:
        if seen >= PAGE_COST_SAMPLE:
            break
        try:
            doc = pymupdf.open(stream=src.read(ref), filetype=format_of(ref.uri) or "pdf")
        except Exception:
            continue
        with doc:
            if doc.needs_pass:
                continue
            for page in doc:
                if seen >= PAGE_COST_SAMPLE:
                    break
                seen += 1
                rect = page.rect
                try:
                    is_thin = thin_text(page.get_text(), rect.width, rect.height)
                except Exception:  # a page MuPDF cannot read: the render stage quarantines it
                    continue
                thin += is_thin
                if engine.on and len(ocr_ms) < OCR_SAMPLE_PAGES and (is_thin or seen > PAGE_COST_SAMPLE // 2):
                    t = time.perf_counter()
                    try:
                        page.get_textpage_ocr(language="eng", dpi=300, full=True, tessdata=engine.tessdata)
                        ocr_ms.append(1000 * (time.perf_counter() - t))
                    except Exception:
                        pass
                if len(image_bytes) < 8 and max(rect.width, rect.height) < 5000:
                    pix = page.get_pixmap(dpi=100, alpha=False)
                    t = time.perf_counter()
                    image_bytes.append(len(page_image(pix.samples, pix.width, pix.height, "webp", 1024)))
                    image_ms.append(1000 * (time.perf_counter() - t))
    if engine.on and ocr_ms:
        say(f"calibrate: OCR {np.mean(ocr_ms):.0f} ms a page ({len(ocr_ms)} pages), {thin} of {seen} pages would need it")
    return {"ocr_fraction": round(thin / seen, 3) if seen else None,
            "ocr_ms_per_page": round(float(np.mean(ocr_ms)), 1) if ocr_ms else None,
            "ocr_engine": engine.note,
            "page_image_bytes": int(np.mean(image_bytes)) if image_bytes else None,
            "page_image_ms": round(float(np.mean(image_ms)), 1) if image_ms else None,
            "page_image_spec": "webp:1024"}
