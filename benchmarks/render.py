"""Render throughput, three ways, side by side in one run, same pages, same output size.

    python -m benchmarks.render [--corpus DIR] [--tokens 768] [--repeat 3]

1. pagemill: the ``RenderPages`` stage (MuPDF in a killable child, raw RGB bytes back).
2. tutorial recipe: pdf2image ``convert_from_path(dpi=200)`` then PIL resize to the budget, as
   ColPali notebooks do (needs poppler's pdftoppm).
3. floor: a bare PyMuPDF ``get_pixmap`` loop at the target size, in this process, no deadline.

Prints pages/s and ratios; targets: pagemill >= 2x the recipe and within 10% of the floor.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import pymupdf

from operators.render import PixelBudget, RenderLimits, RenderPages, target_size, units_table
from operators.sources import LocalSource

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SLOW = ("pathological/",)  # seconds per page: they would measure MuPDF, not the pipeline


def sample_docs(corpus: Path, max_pages: int = 3) -> list[Path]:
    """SMOKE's readable documents with at most ``max_pages`` pages (rendered whole)."""
    with open(corpus / "SMOKE.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for r in rows:
        if r["expectation"] != "ok" or r["file"].startswith(SLOW):
            continue
        with pymupdf.open(corpus / r["file"]) as d:
            if d.needs_pass or d.page_count > max_pages:
                continue
        out.append(corpus / r["file"])
    return out


class PagemillRender:
    """One long-lived stage, as in a render actor: the child and MuPDF's caches stay warm
    across calls, like the floor loop's in-process MuPDF."""

    def __init__(self, budget: PixelBudget):
        self.stage = RenderPages(LocalSource("/"), budget, RenderLimits(page_timeout_s=120, extract_text=False))
        self.stage.setup()

    def __call__(self, docs: list[Path], budget: PixelBudget):
        refs = [next(iter(LocalSource(p.parent, include=(p.name,)).list_documents())) for p in docs]
        t = time.perf_counter()
        out = self.stage(units_table([("u", refs)]))
        return out.num_rows - 1, time.perf_counter() - t


def bench_floor(docs: list[Path], budget: PixelBudget):
    t = time.perf_counter()
    n = 0
    for p in docs:
        with pymupdf.open(p) as doc:
            for page in doc:
                w, h = target_size(page.rect.width, page.rect.height, budget)
                pix = page.get_pixmap(matrix=pymupdf.Matrix(w / page.rect.width, h / page.rect.height),
                                      colorspace=pymupdf.csRGB, alpha=False)
                _ = pix.samples
                n += 1
    return n, time.perf_counter() - t


def bench_pdf2image(docs: list[Path], budget: PixelBudget):
    from pdf2image import convert_from_path

    t = time.perf_counter()
    n = 0
    for p in docs:
        for img in convert_from_path(str(p), dpi=200):
            w, h = target_size(img.width, img.height, budget)
            img.convert("RGB").resize((w, h))
            n += 1
    return n, time.perf_counter() - t


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--tokens", type=int, default=768, help="visual tokens per page (ColQwen2 v1.0: 768)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    budget = PixelBudget(max_pixels=28 * 28 * args.tokens, multiple=28, min_side=56)
    docs = sample_docs(args.corpus)
    results = {"pagemill RenderPages": [], "pdf2image 200 DPI + resize": [], "bare PyMuPDF loop (floor)": []}
    pages = None
    pagemill = PagemillRender(budget)
    pagemill(docs, budget)  # warm-up pass for the child and the floor's process alike
    bench_floor(docs, budget)
    for _ in range(args.repeat):  # interleaved, so drift hits all three alike
        for name, fn in zip(results, (pagemill, bench_pdf2image, bench_floor)):
            n, dt = fn(docs, budget)
            pages = pages or n
            assert n == pages, f"{name} rendered {n} pages, expected {pages}"
            results[name].append(n / dt)
    med = {k: statistics.median(v) for k, v in results.items()}
    ours = med["pagemill RenderPages"]
    lines = [f"Render: {len(docs)} documents, {pages} pages, budget {args.tokens} visual tokens "
             f"({budget.max_pixels} px), median of {args.repeat} interleaved runs, {os.cpu_count()} CPUs",
             "", "| method | pages/s | pagemill ÷ method |", "|---|---:|---:|"]
    for k, v in med.items():
        lines.append(f"| {k} | {v:.1f} | {ours / v:.2f}× |")
    table = "\n".join(lines)
    pagemill.stage.close()
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
