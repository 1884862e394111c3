"""Render stage on real PDFs: sizes, deadlines, broken input, passwords."""

from __future__ import annotations

import json

import numpy as np
import pymupdf
import pytest
from conftest import CORPUS

from operators import schema as S
from operators.io.sources import LocalSource
from operators.render import PixelBudget, RenderLimits, RenderPages, target_size, units_table


def test_target_size_fills_budget_on_the_grid():
    b = PixelBudget(max_pixels=28 * 28 * 768, multiple=28)
    w, h = target_size(612, 792, b)  # US letter
    assert (w % 28, h % 28) == (0, 0)
    assert w * h <= b.max_pixels
    assert (w + 28) * (h + 28) > b.max_pixels  # no room for one more row and column
    assert abs(w / h - 612 / 792) < 0.05


@pytest.mark.parametrize("size", [(18000 * 72 / 72, 36000), (4, 4), (8400, 20), (20, 8400)])
def test_target_size_extreme_pages(size):
    b = PixelBudget(max_pixels=28 * 28 * 96, multiple=28, max_side=4096)
    w, h = target_size(*size, b)
    assert w * h <= b.max_pixels and w >= 28 and h >= 28 and max(w, h) <= 4096


def test_target_size_rejects_empty_page():
    with pytest.raises(ValueError):
        target_size(0, 100, PixelBudget(1000))


SMALL = PixelBudget(28 * 28 * 64, 28)


def _render(tmp_path, files, limits=None, budget=SMALL):
    src = LocalSource(tmp_path)
    refs = [r for r in src.list_documents() if any(r.uri.endswith(f) for f in files)]
    stage = RenderPages(src, budget, limits or RenderLimits(page_timeout_s=10))
    try:
        out = stage(units_table([("u", refs)]))
    finally:
        stage.close()
    info = json.loads(out.filter(np.array(out[S.KIND].to_pylist()) == S.KIND_UNIT)[S.UNIT_INFO][0].as_py())
    pages = out.filter(np.array(out[S.KIND].to_pylist()) == S.KIND_PAGE)
    return pages, info


def _copy(tmp_path, rel):
    data = (CORPUS / rel).read_bytes()
    name = rel.split("/")[-1].replace("+", "_")
    (tmp_path / name).write_bytes(data)
    return name


def test_pixels_match_pymupdf(tmp_path):
    name = _copy(tmp_path, "tables/camelot-dev+camelot__us-005.pdf")
    pages, info = _render(tmp_path, [name])
    assert info["n_pages"] == pages.num_rows == 1
    w, h = pages[S.WIDTH][0].as_py(), pages[S.HEIGHT][0].as_py()
    got = np.frombuffer(pages[S.PIXELS][0].as_py(), np.uint8).reshape(h, w, 3)
    with pymupdf.open(tmp_path / name) as doc:
        page = doc[0]
        pix = page.get_pixmap(matrix=pymupdf.Matrix(w / page.rect.width, h / page.rect.height), alpha=False)
        ref = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width, 3)
    hh, ww = min(h, ref.shape[0]), min(w, ref.shape[1])
    assert np.array_equal(got[:hh, :ww], ref[:hh, :ww])
    assert got.std() > 0  # not a blank page


def test_never_finishing_page_is_abandoned(tmp_path):
    slow = _copy(tmp_path, "pathological/pymupdf__test_2548.pdf")
    good = _copy(tmp_path, "tables/camelot-dev+camelot__us-005.pdf")
    pages, info = _render(tmp_path, [slow, good], RenderLimits(page_timeout_s=2))
    reasons = {q["source_uri"].rsplit("/", 1)[-1]: q["reason"] for q in info["quarantine"]}
    assert reasons == {slow: "render_timeout"}
    # The renderer was replaced after the kill: the next document still renders.
    assert pages.num_rows == 1 and pages[S.SOURCE_URI][0].as_py().endswith(good)


def test_a_slow_renderer_start_is_not_a_documents_timeout(tmp_path, monkeypatch):
    """A renderer's start-up (a fresh interpreter's imports: seconds on a loaded machine) is not
    counted against a page's deadline: a renderer that takes 3 s to start still renders a page
    under a 2 s deadline, and one that cannot start fails the unit rather than blaming a document."""
    import os

    from operators import render

    slow_site = tmp_path / "site"
    slow_site.mkdir()
    (slow_site / "sitecustomize.py").write_text("import time\ntime.sleep(3)\n")  # the child's start-up only
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(slow_site), os.environ.get("PYTHONPATH", "")]))
    good = _copy(tmp_path, "tables/camelot-dev+camelot__us-005.pdf")
    pages, info = _render(tmp_path, [good], RenderLimits(page_timeout_s=2))
    assert info["quarantine"] == [] and pages.num_rows == 1

    monkeypatch.setattr(render, "STARTUP_TIMEOUT_S", 0.5)
    with pytest.raises(RuntimeError, match="renderer process did not start"):
        _render(tmp_path, [good], RenderLimits(page_timeout_s=2))


def test_password_list_opens_encrypted(tmp_path):
    name = _copy(tmp_path, "encrypted/Unstructured-IO+unstructured__password.pdf")
    _, info = _render(tmp_path, [name])
    assert info["quarantine"][0]["reason"] == "encrypted"
    pages, info = _render(tmp_path, [name], RenderLimits(passwords=("wrong", "password")))
    assert pages.num_rows >= 1 and not info["quarantine"]
    _, info = _render(tmp_path, [name], RenderLimits(password_map=(("*password*", "nope"),)))
    assert info["quarantine"][0]["reason"] == "wrong_password"


def test_passwords_file_from_the_corpus(tmp_path):
    """The corpus' own PASSWORDS.tsv (file, password, ...) opens its encrypted files by path."""
    from operators.render import load_password_map, passwords_for

    pairs = load_password_map(str(CORPUS / "PASSWORDS.tsv"))
    assert ("encrypted/Unstructured-IO+unstructured__password.pdf", "password") in pairs
    limits = RenderLimits(password_map=pairs)
    uri = "file:///x/encrypted/Unstructured-IO%2Bunstructured__password.pdf"
    assert passwords_for(uri, limits)[0] == "password"
    dest = tmp_path / "encrypted"
    dest.mkdir()
    (dest / "Unstructured-IO+unstructured__password.pdf").write_bytes(
        (CORPUS / "encrypted/Unstructured-IO+unstructured__password.pdf").read_bytes())
    pages, info = _render(dest, ["Unstructured-IO%2Bunstructured__password.pdf"], limits)
    assert pages.num_rows >= 1 and not info["quarantine"]


def test_limits_quarantine_without_rendering(tmp_path):
    name = _copy(tmp_path, "tables/texlive-latex-recommended-doc__booktabs.pdf")
    _, info = _render(tmp_path, [name], RenderLimits(max_pages=3))
    assert [q["reason"] for q in info["quarantine"]] == ["too_many_pages"]
    _, info = _render(tmp_path, [name], RenderLimits(max_bytes=1000))
    assert [q["reason"] for q in info["quarantine"]] == ["too_large"]


def test_non_pdf_and_truncated_bytes(tmp_path):
    (tmp_path / "notes.pdf").write_bytes(b"this is a text file, not a PDF\n" * 10)
    good = (CORPUS / "tables/camelot-dev+camelot__us-005.pdf").read_bytes()
    (tmp_path / "cut.pdf").write_bytes(good[:200])
    _, info = _render(tmp_path, ["notes.pdf", "cut.pdf"])
    reasons = {q["source_uri"].rsplit("/", 1)[-1]: q["reason"] for q in info["quarantine"]}
    # MuPDF repairs a cut file into a document without pages; plain text does not open at all.
    assert reasons == {"notes.pdf": "open_error", "cut.pdf": "zero_pages"}


def test_source_lists_pdfs_recursively_case_insensitive(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.PDF", "b.pdf", "c.txt", "a/d.Pdf"):
        (tmp_path / name).write_bytes(b"%PDF-1.4")
    refs = list(LocalSource(tmp_path).list_documents())
    # A folder's own files first, then its sub-folders, each sorted: stable across runs.
    assert [r.uri.rsplit("/", 2)[-2:] for r in refs] == [[tmp_path.name, "b.pdf"], ["a", "d.Pdf"], ["a", "x.PDF"]]
    assert all(r.size == 8 and r.version.startswith("8-") for r in refs)
    refs = list(LocalSource(tmp_path, exclude=("a/*",)).list_documents())
    assert len(refs) == 1


def _doc_with(tmp_path, name, marker):
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), f"page with {marker}")
    doc.set_metadata({"keywords": marker})
    doc.save(tmp_path / name)


def test_a_segfaulting_renderer_costs_one_document(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("PAGEMILL_RENDER_SEGFAULT", "CRASHME")
    _doc_with(tmp_path, "a-crash.pdf", "CRASHME")
    good = _copy(tmp_path, "tables/camelot-dev+camelot__us-005.pdf")
    pages, info = _render(tmp_path, ["a-crash.pdf", good])
    assert [(q["source_uri"].rsplit("/", 1)[-1], q["reason"]) for q in info["quarantine"]] == [("a-crash.pdf", "render_crash")]
    assert "exit code -11" in info["quarantine"][0]["detail"]
    assert pages.num_rows == 1  # the next document rendered in a fresh child


def test_a_renderer_crash_is_retried_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("PAGEMILL_RENDER_SEGFAULT", "FLAKY:once")
    _doc_with(tmp_path, "flaky.pdf", "FLAKY")
    pages, info = _render(tmp_path, ["flaky.pdf"])
    assert pages.num_rows == 1 and not info["quarantine"]
    assert (tmp_path / "pagemill-segv-FLAKY").exists()


def _converter(tmp_path, body: str) -> str:
    """A stand-in for ``soffice`` on the PATH: a real executable that takes LibreOffice's arguments."""
    exe = tmp_path / "bin" / "soffice-stand-in"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    return str(exe)


def test_office_files_converted_in_a_process_with_a_deadline(tmp_path):
    """LibreOffice's command line as pagemill runs it (``--convert-to pdf --outdir DIR FILE``): a
    converter that writes the PDF gives its pages; one that hangs (and its children) is killed at
    the deadline and the file quarantined; a missing one names the Debian package."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "letter.docx").write_bytes(b"PK\x03\x04 a word file")
    (docs / "deck.pptx").write_bytes(b"PK\x03\x04 slides")
    pdf = CORPUS / "tables/camelot-dev+camelot__us-005.pdf"
    # $7 is --outdir's folder, $8 the file: "convert" by copying a real PDF there
    writes = _converter(tmp_path, f'cp "{pdf}" "$7/document.pdf"\n')
    pages, info = _render(docs, ["letter.docx"], RenderLimits(page_timeout_s=30, office_command=writes))
    assert pages.num_rows == pymupdf.open(pdf).page_count and info["docs"][0]["status"] == "indexed"
    hangs = _converter(tmp_path, "sleep 60 & sleep 60\n")
    import time

    t = time.monotonic()
    _, info = _render(docs, ["letter.docx"], RenderLimits(page_timeout_s=30, office_command=hangs,
                                                          office_timeout_s=1.0))
    assert time.monotonic() - t < 20
    assert [q["reason"] for q in info["quarantine"]] == ["convert_timeout"]
    _, info = _render(docs, ["deck.pptx"], RenderLimits(page_timeout_s=30, office_command="no-such-soffice"))
    (q,) = info["quarantine"]
    assert q["reason"] == "needs_converter" and "libreoffice-impress" in q["detail"]
