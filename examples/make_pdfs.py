"""Generate the small example PDFs the Quickstart indexes (text, table, chart, two columns, scan).

    python examples/make_pdfs.py [OUT_DIR]     # default: examples/pdfs

Deterministic: the same files every time (fixed seed, no timestamps in the PDF metadata).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pymupdf

LOREM = (
    "Visual document retrieval indexes pages as images. A late-interaction retriever embeds each page "
    "into many patch vectors and scores a query by summing, for every query token, its best match among "
    "the page's patches. Layout, tables and charts survive because nothing is lost to text extraction. "
)
A4 = pymupdf.paper_rect("a4")


def _doc() -> pymupdf.Document:
    doc = pymupdf.open()
    doc.set_metadata({"producer": "pagemill examples", "creator": "pagemill examples"})
    return doc


def text_report(path: Path) -> None:
    doc = _doc()
    for n in range(2):
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 80), f"Quarterly operations report, part {n + 1}", fontsize=18)
        page.insert_textbox(pymupdf.Rect(72, 110, A4.width - 72, A4.height - 72), LOREM * 6, fontsize=11)
    doc.save(path, no_new_id=True)


def table(path: Path) -> None:
    doc = _doc()
    page = doc.new_page(width=A4.width, height=A4.height)
    page.insert_text((72, 80), "Revenue by region (million EUR)", fontsize=16)
    rows = [["Region", "2022", "2023", "2024"], ["North", "12.1", "13.4", "15.0"], ["South", "8.7", "9.9", "10.2"],
            ["East", "5.5", "6.1", "7.8"], ["West", "10.0", "10.4", "11.9"], ["Total", "36.3", "39.8", "44.9"]]
    x0, y0, cw, rh = 72, 110, 110, 28
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            rect = pymupdf.Rect(x0 + c * cw, y0 + r * rh, x0 + (c + 1) * cw, y0 + (r + 1) * rh)
            page.draw_rect(rect, color=(0, 0, 0), fill=(0.9, 0.9, 0.95) if r == 0 else None, width=0.7)
            page.insert_text((rect.x0 + 6, rect.y1 - 9), cell, fontsize=11)
    doc.save(path, no_new_id=True)


def chart(path: Path) -> None:
    doc = _doc()
    page = doc.new_page(width=A4.height, height=A4.width)  # landscape slide
    page.insert_text((60, 60), "Pages indexed per hour", fontsize=22)
    values = [120, 340, 560, 410, 720, 880]
    base, left, bw = 480, 90, 90
    page.draw_line((left - 10, base), (left + len(values) * (bw + 20), base), width=1.2)
    for i, v in enumerate(values):
        x = left + i * (bw + 20)
        page.draw_rect(pymupdf.Rect(x, base - v * 0.45, x + bw, base), fill=(0.2, 0.4, 0.8), color=None)
        page.insert_text((x + 25, base + 20), f"W{i + 1}", fontsize=12)
        page.insert_text((x + 25, base - v * 0.45 - 8), str(v), fontsize=11)
    doc.save(path, no_new_id=True)


def two_columns(path: Path) -> None:
    doc = _doc()
    page = doc.new_page(width=A4.width, height=A4.height)
    page.insert_text((72, 70), "Token pooling for multi-vector retrieval", fontsize=16)
    mid = A4.width / 2
    page.insert_textbox(pymupdf.Rect(72, 95, mid - 12, A4.height - 72), LOREM * 5, fontsize=9.5)
    page.insert_textbox(pymupdf.Rect(mid + 12, 95, A4.width - 72, A4.height - 72), LOREM[::-1][:400] + LOREM * 4,
                        fontsize=9.5)
    doc.save(path, no_new_id=True)


def scanned(path: Path) -> None:
    """A page that is only an image of text (no text layer), with scanner noise."""
    src = _doc()
    p = src.new_page(width=A4.width, height=A4.height)
    p.insert_text((72, 90), "Signed delivery note", fontsize=20)
    p.insert_textbox(pymupdf.Rect(72, 120, A4.width - 72, 600), LOREM * 3, fontsize=12)
    pix = p.get_pixmap(dpi=100, colorspace=pymupdf.csGRAY)
    img = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width).astype(np.int16)
    rng = np.random.default_rng(7)
    img = np.clip(img + rng.normal(0, 18, img.shape) - 20, 0, 255).astype(np.uint8)
    noisy = pymupdf.Pixmap(pymupdf.csGRAY, pix.width, pix.height, img.tobytes(), False)
    doc = _doc()
    page = doc.new_page(width=A4.width, height=A4.height)
    page.insert_image(page.rect, pixmap=noisy)
    doc.save(path, no_new_id=True, deflate=True)


MAKERS = {"report.pdf": text_report, "table.pdf": table, "chart.pdf": chart, "two-columns.pdf": two_columns,
          "scanned.pdf": scanned}


def main(out: str = "examples/pdfs") -> list[Path]:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in MAKERS.items():
        make(out_dir / name)
        paths.append(out_dir / name)
    return paths


if __name__ == "__main__":
    for p in main(*sys.argv[1:2]):
        print(p)
