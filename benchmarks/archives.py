"""What a real archive's pages cost beyond rendering, side by side in one run: OCR and page images
against rendering alone, on the same pages, in the render stage as a render actor runs it.

    python -m benchmarks.archives [--corpus DIR] [--tokens 768] [--repeat 3] [--image webp:1024]

Pages: the dev corpus' scanned documents of SMOKE.tsv and EXPECT.tsv (``scanned/``, readable, at
most 4 pages: pages without a text layer, what ``--ocr auto`` reads) and SMOKE's born-digital
ones. Configurations, each a long-lived ``RenderPages`` stage (MuPDF in its killable child),
interleaved ``--repeat`` times, the median kept:

1. render alone (the text layer extracted, no OCR): the baseline;
2. ``--ocr auto`` with Tesseract (eng, 300 dpi): the scans read, the born-digital pages not;
3. ``--page-images`` at ``--image``: each rendered page encoded from the pixels in memory.

Prints pages/s per core (the stage is one process and its child: one core at a time), and per
page: OCR's milliseconds (the stage's own ``ocr_s`` over the pages it read) and the page image's
milliseconds and bytes (``images_s``, ``image_bytes``).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import pymupdf

from operators.io.sources import LocalSource
from operators.ocr import resolve
from operators.render import PixelBudget, RenderLimits, RenderPages, parse_page_images, units_table

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def sample(corpus: Path, max_pages: int = 4) -> tuple[list[Path], list[Path]]:
    """(scanned, born-digital) documents: readable, at most ``max_pages`` pages."""
    def rows(name):
        with open(corpus / name, newline="") as f:
            return list(csv.DictReader(f, delimiter="\t"))

    scanned = sorted({r["file"] for r in rows("EXPECT.tsv") if r["file"].startswith("scanned/")
                      and r["expectation_pymupdf_2.0"] == "ok"})
    born = [r["file"] for r in rows("SMOKE.tsv") if r["expectation"] == "ok" and not r["file"].startswith(
        ("scanned/", "pathological/"))]

    def readable(files):
        out = []
        for name in files:
            with pymupdf.open(corpus / name) as d:
                if not d.needs_pass and 0 < d.page_count <= max_pages and max(d[0].rect.width, d[0].rect.height) < 2000:
                    out.append(corpus / name)
        return out

    return readable(scanned)[:12], readable(born)[:12]


class Stage:
    def __init__(self, budget: PixelBudget, limits: RenderLimits):
        self.stage = RenderPages(LocalSource("/"), budget, limits)
        self.stage.setup()

    def __call__(self, docs: list[Path]) -> tuple[int, float, dict]:
        refs = [next(iter(LocalSource(p.parent, include=(p.name,)).list_documents())) for p in docs]
        before = dict(self.stage.stats)
        t = time.perf_counter()
        out = self.stage(units_table([("u", refs)]))
        took = time.perf_counter() - t
        delta = {k: v - before.get(k, 0) for k, v in self.stage.stats.items() if isinstance(v, (int, float))}
        return out["kind"].to_pylist().count("page"), took, delta


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--tokens", type=int, default=768, help="visual tokens per page (ColQwen2 v1.0: 768)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--image", default="webp:1024", help="the page images' FORMAT:LONGEST_EDGE")
    ap.add_argument("--docs", type=int, default=None, help="only the first N documents of each kind (tests)")
    args = ap.parse_args(argv)
    engine = resolve("auto")
    if not engine.on:
        raise SystemExit(f"benchmarks.archives needs Tesseract: {engine.note}")
    budget = PixelBudget(max_pixels=28 * 28 * args.tokens, multiple=28, min_side=56)
    scanned, born = sample(args.corpus)
    scanned, born = scanned[: args.docs], born[: args.docs]
    base = dict(page_timeout_s=300)
    configs = {"render alone (text layer, no OCR)": RenderLimits(**base),
               "render + --ocr auto (Tesseract eng, 300 dpi)": RenderLimits(
                   **base, ocr="auto", tessdata=engine.tessdata),
               f"render + --page-images {args.image}": RenderLimits(**base, page_images=parse_page_images(args.image))}
    stages = {name: Stage(budget, limits) for name, limits in configs.items()}
    lines = [f"Archive pages: {len(scanned)} scanned and {len(born)} born-digital documents of the dev corpus, budget "
             f"{args.tokens} visual tokens ({budget.max_pixels:,} px), median of {args.repeat} interleaved runs, one "
             f"render stage each (one core)", "",
             "| pages | configuration | pages/s per core | ÷ render alone | OCR ms/page read | pages read by OCR "
             "| image ms/page | image KB/page |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    try:
        for kind, docs in (("scanned", scanned), ("born-digital", born)):
            for stage in stages.values():
                stage(docs)  # warm-up: the child, MuPDF's caches, Tesseract's data
            rates: dict[str, list[float]] = {name: [] for name in stages}
            stats: dict[str, dict] = {}
            for _ in range(args.repeat):
                for name, stage in stages.items():
                    n, took, delta = stage(docs)
                    rates[name].append(n / took)
                    stats[name] = {**delta, "pages": n}
            alone = statistics.median(rates[next(iter(stages))])
            for name in stages:
                rate, d = statistics.median(rates[name]), stats[name]
                read, images = d.get("ocr_read", 0), d.get("images", 0)
                lines.append(f"| {kind} ({d['pages']}) | {name} | {rate:.2f} | {rate / alone:.2f}× | "
                             + (f"{1000 * d['ocr_s'] / read:.0f}" if read else "-") + f" | {read} | "
                             + (f"{1000 * d['images_s'] / images:.1f} | {d['image_bytes'] / images / 1024:.1f}"
                                if images else "- | -") + " |")
    finally:
        for stage in stages.values():
            stage.stage.close()
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
