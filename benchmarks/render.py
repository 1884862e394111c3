"""Render throughput, four ways, side by side in one run, same pages, same output size.

    python -m benchmarks.render [--corpus DIR] [--tokens 768] [--repeat 7] [--docs N]

1. pagemill: the ``RenderPages`` stage (MuPDF in a killable child, raw RGB bytes back).
2. tutorial recipe: pdf2image ``convert_from_path(dpi=200)`` then PIL resize to the budget, as
   ColPali notebooks do.
3. pdf2image at the output size: ``convert_from_path(first_page=, last_page=, size=(w, h))``,
   poppler rendering each page straight at the budget's target size (one call per run of
   consecutive pages with the same target size; the sizes are read beforehand, untimed).
4. floor: a bare PyMuPDF ``get_pixmap`` loop at the target size, in this process, no deadline.

The pdf2image rows need poppler's ``pdftoppm`` (``apt-get install poppler-utils``).
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

from operators.io.sources import LocalSource
from operators.render import PixelBudget, RenderLimits, RenderPages, target_size, units_table

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


def page_sizes(docs: list[Path], budget: PixelBudget) -> dict[Path, list[tuple[tuple[int, int], int]]]:
    """Each page's target size (as pagemill and the floor render it) and its /Rotate, per document."""
    out = {}
    for p in docs:
        with pymupdf.open(p) as doc:
            out[p] = [(target_size(page.rect.width, page.rect.height, budget), page.rotation) for page in doc]
    return out


class Pdf2ImageAtSize:
    """pdf2image asked for the output size itself (``size=``): one ``convert_from_path`` per run
    of consecutive pages with the same target size (usually one per document)."""

    def __init__(self, sizes: dict[Path, list[tuple[tuple[int, int], int]]]):
        self.runs = {}
        for p, pages in sizes.items():
            runs = []  # [first_page, last_page (1-based, as pdftoppm counts), size asked, size expected]
            for i, ((w, h), rotation) in enumerate(pages, 1):
                # pdftoppm scales before it applies a page's /Rotate: a page turned by 90 or 270
                # degrees is asked for (h, w) to come out w x h
                ask = (h, w) if rotation % 180 else (w, h)
                if runs and runs[-1][2] == ask and runs[-1][3] == (w, h):
                    runs[-1][1] = i
                else:
                    runs.append([i, i, ask, (w, h)])
            self.runs[p] = runs

    def __call__(self, docs: list[Path], budget: PixelBudget):
        from pdf2image import convert_from_path

        t = time.perf_counter()
        n = 0
        off = []
        for p in docs:
            for first, last, ask, expect in self.runs[p]:
                for img in convert_from_path(str(p), first_page=first, last_page=last, size=ask):
                    img = img.convert("RGB")  # decodes the PPM, as the recipe row does
                    if img.size != expect:
                        off.append((p.name, img.size, expect))
                    n += 1
        dt = time.perf_counter() - t
        assert not off, f"pdf2image size= gave other sizes than asked: {off[:3]}"
        return n, dt


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--tokens", type=int, default=768, help="visual tokens per page (ColQwen2 v1.0: 768)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--docs", type=int, default=None, help="only the first N documents of the sample (tests)")
    args = ap.parse_args(argv)
    budget = PixelBudget(max_pixels=28 * 28 * args.tokens, multiple=28, min_side=56)
    docs = sample_docs(args.corpus)[: args.docs]
    results = {"pagemill RenderPages (killable MuPDF child, raw pixels)": [],
               "pdf2image 200 DPI + resize (the ColPali tutorial recipe)": [],
               "pdf2image at the output size (`size=(w, h)`)": [],
               "bare PyMuPDF `get_pixmap` loop (the floor, no deadline)": []}
    pages = None
    at_size = Pdf2ImageAtSize(page_sizes(docs, budget))
    pagemill = PagemillRender(budget)
    pagemill(docs, budget)  # warm-up pass for the child and the floor's process alike
    bench_floor(docs, budget)
    for _ in range(args.repeat):  # interleaved, so drift hits all three alike
        for name, fn in zip(results, (pagemill, bench_pdf2image, at_size, bench_floor)):
            n, dt = fn(docs, budget)
            pages = pages or n
            assert n == pages, f"{name} rendered {n} pages, expected {pages}"
            results[name].append(n / dt)
    med = {k: statistics.median(v) for k, v in results.items()}
    ours = next(iter(med.values()))
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
