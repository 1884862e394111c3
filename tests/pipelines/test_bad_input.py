"""Bad input is contained: generated breakage and the corpus' partly broken files.

The job completes (exit 0); every document ends indexed, partly indexed (its bad pages
quarantined one by one) or quarantined with a reason; nothing else is lost.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pymupdf
import pytest
from conftest import CORPUS

from pipelines.cli import main

GOOD = "text/pdfcpu+pdfcpu__Walden.pdf"


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    src = tmp_path_factory.mktemp("bad")
    good = (CORPUS / GOOD).read_bytes()
    (src / "truncated.pdf").write_bytes(good[: len(good) // 2])
    rng = np.random.default_rng(7)
    flipped = bytearray(good)
    for i in rng.integers(len(good) // 4, len(good), 300):
        flipped[i] ^= 0xFF
    (src / "flipped.pdf").write_bytes(bytes(flipped))
    (src / "notes.pdf").write_text("meeting notes, not a PDF\n" * 20)
    pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 20, 20), False)
    (src / "photo.pdf").write_bytes(pix.tobytes("png"))
    huge = pymupdf.open()
    page = huge.new_page(width=600, height=800)
    page.insert_text((50, 50), "A page that declares itself a kilometre wide", fontsize=20)
    page.set_mediabox(pymupdf.Rect(0, 0, 3_000_000, 3_000_000))  # zip-bomb-like declared size
    huge.save(src / "huge-page.pdf")
    many = pymupdf.open()
    for _ in range(10_000):
        many.new_page(width=200, height=200)
    many.save(src / "ten-thousand-pages.pdf", garbage=1)
    shutil.copyfile(CORPUS / GOOD, src / "good.pdf")
    partial = {}
    with open(CORPUS / "EXPECT.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["expectation_pymupdf_2.0"] == "partial_render_error":
                name = row["file"].split("/")[-1]
                shutil.copyfile(CORPUS / row["file"], src / name)
                partial[name] = int(row["pages"])
    out = tmp_path_factory.mktemp("bad_out")
    summary_path = out.parent / "bad-summary.json"
    rc = main(["ingest", str(src), "--out", str(out), "--executor", "local", "--max-pages", "5000",
               "--page-timeout", "20", "--summary", str(summary_path), "--quiet"])
    return rc, json.loads(summary_path.read_text()), partial


def _by_name(summary):
    out = {}
    for q in summary["quarantine"]:
        out.setdefault(q["source_uri"].rsplit("/", 1)[-1].replace("%2B", "+"), []).append(q)
    return out


def test_the_job_completes_and_accounts_for_every_document(bad_run):
    rc, summary, partial = bad_run
    assert rc == 0
    docs = summary["documents"]
    assert docs["seen"] == 7 + len(partial)
    fully_quarantined = {n for n, qs in _by_name(summary).items() if any(q["page_number"] is None for q in qs)}
    assert docs["indexed"] + docs["quarantined"] == docs["seen"]
    assert {"truncated.pdf", "notes.pdf", "photo.pdf", "ten-thousand-pages.pdf"} <= fully_quarantined


def test_reasons(bad_run):
    _, summary, _ = bad_run
    by = _by_name(summary)
    assert [q["reason"] for q in by["notes.pdf"]] == ["open_error"]
    assert [q["reason"] for q in by["photo.pdf"]] == ["open_error"]  # an image, whatever its name
    assert [q["reason"] for q in by["ten-thousand-pages.pdf"]] == ["too_many_pages"]
    assert by["truncated.pdf"][0]["reason"] in ("zero_pages", "open_error")
    assert "huge-page.pdf" not in by and "good.pdf" not in by  # the declared size is capped, not fatal
    flipped = by.get("flipped.pdf", [])
    assert all(q["reason"] in ("open_error", "zero_pages", "render_error") for q in flipped)


def test_partly_broken_documents_keep_their_good_pages(bad_run):
    _, summary, partial = bad_run
    by = _by_name(summary)
    assert summary["documents"]["partial"] >= 4
    page_errors = sum(1 for qs in by.values() for q in qs if q["page_number"] is not None)
    assert summary["pages"]["quarantined"] == page_errors
    for name, total in partial.items():
        bad_pages = [q for q in by.get(name, []) if q["page_number"] is not None]
        assert all(q["reason"] == "render_error" for q in bad_pages)
        assert len(bad_pages) <= total
