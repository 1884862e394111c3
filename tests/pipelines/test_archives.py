"""Real archives: scans get their words through Tesseract, every page format PyMuPDF opens comes in
(images, multi-page TIFF, EPUB, SVG, CBZ), nothing is ignored without a count, a document stored
twice is embedded once, near-duplicate pages are counted (and embedded once with --dedup pages),
and page images are written, committed and removed with their pages.

Real components: Tesseract's language data from Debian's ``tesseract-ocr-eng`` through PyMuPDF,
Milvus Lite, the ``local`` executor (the operators are Ray's), pages drawn by PyMuPDF and Pillow.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CORPUS, REPO, pagemill_cmd, run_pagemill

MODEL = "colqwen2-tiny,text:all-MiniLM-L6-v2"
# Tests of rows, copies and files, not of what the vectors mean, simulate both models (no torch in
# their processes). The searches run on the real ones.
SIM = "sim:colqwen2-tiny,text:sim:all-MiniLM-L6-v2"
ARGS = ["--executor", "local", "--quiet"]
SCAN_WORDS = "Invoice number 4471 for quarterly maintenance"
CORPUS_SCAN = "scanned/DS4SD+docling__ocr_test.pdf"  # a scan without a text layer (SMOKE.tsv)
CORPUS_BOOK = "scanned/ocrmypdf+OCRmyPDF__c02-22.pdf"  # a scanned book page


def text_page(text: str, size: float = 20):
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=400, height=300)
    page.insert_text((30, 80), text, fontsize=size)
    return page


def scan_of(text: str, dpi: int = 150):
    """A photographed page: ``text`` drawn, then only its pixels kept (a PIL image)."""
    from PIL import Image

    pix = text_page(text).get_pixmap(dpi=dpi)
    return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)


def image_pdf(path: Path, image) -> None:
    """A scanned PDF: one page that is an image, no text layer."""
    import pymupdf

    buf = io.BytesIO()
    image.save(buf, "PNG")
    doc = pymupdf.open()
    page = doc.new_page(width=400, height=300)
    page.insert_image(page.rect, stream=buf.getvalue())
    doc.save(path)


def text_pdf(path: Path, *texts: str) -> None:
    import pymupdf

    doc = pymupdf.open()
    for t in texts:
        doc.new_page(width=400, height=300).insert_text((30, 80), t, fontsize=14)
    doc.save(path)


def epub(path: Path, text: str) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml", '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:'
                   'tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="content.opf" media-type='
                   '"application/oebps-package+xml"/></rootfiles></container>')
        z.writestr("content.opf", '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="2.0" '
                   'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>T'
                   '</dc:title><dc:identifier id="id">x</dc:identifier></metadata><manifest><item id="c1" '
                   'href="c1.xhtml" media-type="application/xhtml+xml"/></manifest><spine><itemref idref="c1"/>'
                   '</spine></package>')
        z.writestr("c1.xhtml", f'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><p>{text}'
                   f'</p></body></html>')


def xps(path: Path, image) -> None:
    """An XPS document (OpenXPS' package: a fixed page filled with the page's image)."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    w, h = image.size
    ns = 'xmlns="http://schemas.microsoft.com/xps/2005/06"'
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.'
                   'openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/'
                   'vnd.openxmlformats-package.relationships+xml"/><Default Extension="fdseq" ContentType="application/'
                   'vnd.ms-package.xps-fixeddocumentsequence+xml"/><Default Extension="fdoc" ContentType="application/'
                   'vnd.ms-package.xps-fixeddocument+xml"/><Default Extension="fpage" ContentType="application/vnd.ms-'
                   'package.xps-fixedpage+xml"/><Default Extension="png" ContentType="image/png"/></Types>')
        z.writestr("_rels/.rels", '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
                   'openxmlformats.org/package/2006/relationships"><Relationship Type="http://schemas.microsoft.com/'
                   'xps/2005/06/fixedrepresentation" Target="/FixedDocSeq.fdseq" Id="R0"/></Relationships>')
        z.writestr("FixedDocSeq.fdseq", f'<FixedDocumentSequence {ns}><DocumentReference Source="/Documents/1/'
                   f'FixedDoc.fdoc"/></FixedDocumentSequence>')
        z.writestr("Documents/1/FixedDoc.fdoc", f'<FixedDocument {ns}><PageContent Source="/Documents/1/Pages/1.fpage"/>'
                   f'</FixedDocument>')
        z.writestr("Documents/1/Resources/p.png", buf.getvalue())
        z.writestr("Documents/1/Pages/1.fpage", f'<FixedPage {ns} Width="{w}" Height="{h}" xml:lang="en-US"><Path Data='
                   f'"M 0,0 L {w},0 {w},{h} 0,{h} Z"><Path.Fill><ImageBrush ImageSource="/Documents/1/Resources/p.png" '
                   f'Viewbox="0,0,{w},{h}" TileMode="None" ViewboxUnits="Absolute" ViewportUnits="Absolute" '
                   f'Viewport="0,0,{w},{h}"/></Path.Fill></Path></FixedPage>')


def corpus_page_image(name: str, dpi: int = 150):
    """A page of a dev-corpus document as the image a scanner would give."""
    import pymupdf
    from PIL import Image

    with pymupdf.open(CORPUS / name) as doc:
        pix = doc[0].get_pixmap(dpi=dpi)
    return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)


@pytest.fixture(scope="module")
def archive_src(tmp_path_factory):
    """A small archive as a backfill finds it: born-digital and scanned PDFs, page photos (PNG,
    JPEG, a two-page TIFF), an EPUB, an SVG drawing, a CBZ, one PDF stored twice, and files that
    are not documents or cannot be read."""
    src = tmp_path_factory.mktemp("archive")
    (src / "sub").mkdir()
    text_pdf(src / "born.pdf", "Turbine maintenance schedule for the spring", "Appendix of torque values")
    shutil.copy(src / "born.pdf", src / "sub" / "born-copy.pdf")  # the same bytes under another key
    image_pdf(src / "scan.pdf", scan_of(SCAN_WORDS))
    scan_of("Harbour pilot boarding report").save(src / "photo.png")
    scan_of("Customs declaration for grain cargo").save(src / "photo.jpg", quality=90)
    first, second = scan_of("Ballast water exchange record"), scan_of("Second sheet of the ballast log")
    first.save(src / "pages.tiff", save_all=True, append_images=[second], compression="tiff_deflate")
    epub(src / "book.epub", "Lighthouse keepers logbook from the northern coast")
    # from the dev corpus: a scanned PDF (no text layer), a scanned book page as an XPS
    shutil.copy(CORPUS / CORPUS_SCAN, src / "corpus-scan.pdf")
    xps(src / "chapter.xps", corpus_page_image(CORPUS_BOOK))
    (src / "drawing.svg").write_text(text_page("Vector drawing of a harbour crane").get_svg_image())
    (src / "notes.txt").write_text("not a document")
    (src / "empty.tiff").write_bytes(b"")
    with zipfile.ZipFile(src / "letter.docx", "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    return src


def ingest(src: Path, out: Path, *extra: str, model: str = MODEL, env: dict | None = None, check: bool = True):
    return run_pagemill("ingest", str(src), "--out", str(out), *ARGS, "--model", model, *extra, env=env, check=check)


def summary_of(out: Path) -> dict:
    return json.loads(max((out / "_runs").glob("*.json")).read_text())


def pages_of(out: Path) -> pa.Table:
    live = json.loads((out / "pages" / "_manifest.json").read_text())
    files = [out / (f if isinstance(f, str) else f["key"]) for f in live["files"]]
    return pa.concat_tables([pq.read_table(f) for f in files if str(f).endswith(".parquet")],
                            promote_options="default")


def search(out: Path, query: str, stage1: str = "text") -> list[dict]:
    r = subprocess.run(pagemill_cmd("search", query, "--out", str(out), "--stage1", stage1, "--rerank", "none",
                                    "--json", "-k", "20"), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)["results"]


@pytest.fixture(scope="module")
def indexed(archive_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("archive-out") / "out"
    ingest(archive_src, out, "--page-images", "webp:256")
    return out


def test_every_format_comes_in_and_nothing_is_skipped_without_a_count(indexed):
    s = summary_of(indexed)
    assert s["documents"]["by_format"] == {"docx": 1, "epub": 1, "jpg": 1, "pdf": 4, "png": 1, "svg": 1,
                                           "tiff": 2, "xps": 1}
    assert s["documents"]["skipped"] == {"not a document (.txt)": 1}
    reasons = {q["source_uri"].rsplit("/", 1)[-1]: q["reason"] for q in s["quarantine"]}
    assert reasons["empty.tiff"] == "open_error"
    if shutil.which("soffice") is None:  # no LibreOffice here: said, naming what to install
        assert reasons["letter.docx"] == "needs_converter"
        quarantine = pq.read_table(next((indexed / "quarantine").glob("*.parquet"))).to_pylist()
        detail = next(q["detail"] for q in quarantine if q["source_uri"].endswith("letter.docx"))
        assert "libreoffice-writer" in detail
    pages = pages_of(indexed)
    per_doc = {}
    for uri in pages["source_uri"].to_pylist():
        per_doc[uri.rsplit("/", 1)[-1]] = per_doc.get(uri.rsplit("/", 1)[-1], 0) + 1
    assert per_doc == {"born.pdf": 2, "born-copy.pdf": 2, "scan.pdf": 1, "photo.png": 1, "photo.jpg": 1,
                       "pages.tiff": 2, "book.epub": 1, "drawing.svg": 1, "corpus-scan.pdf": 1, "chapter.xps": 1}


def test_scans_get_their_words_from_ocr_and_say_so(indexed):
    pages = pages_of(indexed).to_pylist()
    source = {(p["source_uri"].rsplit("/", 1)[-1], p["page_number"]): p["text_source"] for p in pages}
    assert source[("born.pdf", 0)] == source[("book.epub", 0)] == "native"
    for key in (("scan.pdf", 0), ("photo.png", 0), ("photo.jpg", 0), ("pages.tiff", 0), ("pages.tiff", 1),
                ("drawing.svg", 0), ("corpus-scan.pdf", 0), ("chapter.xps", 0)):
        assert source[key] == "ocr", key
    scan_text = next(p["text"] for p in pages if p["source_uri"].endswith("/scan.pdf"))
    assert "4471" in scan_text and "quarterly" in scan_text.lower()
    s = summary_of(indexed)
    assert s["ocr"]["mode"] == "auto" and s["ocr"]["pages"] == 8 and s["ocr"]["s"] > 0
    assert s["ocr"]["read"] >= 8  # (and pages whose own text is thin for their area: read, kept native)
    # the OCR text feeds the text layer: BM25 and the dense chunks find a scanned page by its words
    hits = search(indexed, "quarterly maintenance invoice 4471")
    assert hits[0]["source_uri"].endswith("scan.pdf")
    # the dev corpus' scan, by BM25 alone, with a phrase of its page
    hits = search(indexed, "Docling bundles PDF document conversion", stage1="text-bm25")
    assert hits[0]["source_uri"].endswith("corpus-scan.pdf")
    hits = search(indexed, "went tip-toeing along a path amongst the trees", stage1="text-bm25")
    assert hits[0]["source_uri"].endswith("chapter.xps")
    hits = search(indexed, "second sheet ballast log")
    assert (hits[0]["source_uri"].endswith("pages.tiff") and hits[0]["page_number"] == 1)


def test_a_document_stored_twice_is_embedded_once_and_found_under_both_uris(indexed):
    s = summary_of(indexed)
    assert s["duplicates"]["documents"] == 1 and s["duplicates"]["pages"] == 2
    assert s["pages"]["embedded"] == s["pages"]["indexed"] - 2
    ledger = [d for p in (indexed / "_ledger" / "units").glob("*.json") for d in json.loads(p.read_text())["docs"]]
    copy = next(d for d in ledger if d["uri"].endswith("born-copy.pdf"))
    assert copy["duplicate_of"].endswith("/born.pdf") and copy["n_pages"] == 2
    uris = {h["source_uri"].rsplit("/", 1)[-1] for h in search(indexed, "turbine maintenance schedule spring")[:2]}
    assert uris == {"born.pdf", "born-copy.pdf"}


def test_page_images_one_per_page_with_their_uris(indexed):
    from PIL import Image

    pages = pages_of(indexed).to_pylist()
    files = sorted((indexed / "images").rglob("*.webp"))
    assert len(files) == len(pages)
    for p in pages:
        path = Path(p["image_uri"].removeprefix("file://"))
        assert path.is_file()
        with Image.open(path) as im:
            assert im.format == "WEBP" and max(im.size) <= 256
    s = summary_of(indexed)  # the images committed: the writers' and the duplicate's copies
    assert s["page_images"]["written"] == len(pages) == len(files)
    assert s["page_images"]["bytes"] == sum(f.stat().st_size for f in files)
    assert json.loads((indexed / "_index.json").read_text())["pages"] == {"page_images": "webp:256"}
    hit = search(indexed, "lighthouse keepers logbook")[0]
    assert hit["image_uri"].endswith(".webp") and hit["source_uri"].endswith("book.epub")


@pytest.mark.slow
def test_a_rerun_embeds_nothing_and_a_new_copy_is_copied_not_embedded(archive_src, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(archive_src, src)
    out = tmp_path / "out"
    ingest(src, out, "--ocr", "never", "--no-text", model="sim:colqwen2-tiny")
    ingest(src, out, model=SIM)
    assert summary_of(out)["pages"]["embedded"] == 0
    shutil.copy(src / "photo.png", src / "sub" / "photo-again.png")
    ingest(src, out, "--summary", str(tmp_path / "s.json"), model=SIM)
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["pages"]["embedded"] == 0 and s["duplicates"] == {**s["duplicates"], "documents": 1, "pages": 1}
    assert pages_of(out)["text_source"].to_pylist().count(None) == 0
    # the canonical document goes: its copies stay
    (src / "photo.png").unlink()
    (src / "born.pdf").unlink()
    ingest(src, out, "--delete-missing", model=SIM)
    left = {u.rsplit("/", 1)[-1] for u in pages_of(out)["source_uri"].to_pylist()}
    assert {"photo-again.png", "born-copy.pdf"} <= left and not {"photo.png", "born.pdf"} & left


@pytest.mark.slow
def test_near_duplicate_pages_counted_and_embedded_once_with_dedup_pages(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    text_pdf(src / "a.pdf", "Standard terms and conditions of carriage", "Cargo manifest for vessel Aurora")
    text_pdf(src / "b.pdf", "Standard terms and conditions of carriage", "Cargo manifest for vessel Borealis")
    out = tmp_path / "out"
    ingest(src, out, "--dedup", "pages", "--no-text", model="sim:colqwen2-tiny")  # vectors differ per page
    s = summary_of(out)
    assert s["duplicates"]["near_duplicate_pages"] >= 1
    assert s["duplicates"]["pages_embedded_once"] >= 1 and s["duplicates"]["model_s_saved"] > 0
    pages = pages_of(out).to_pylist()
    terms = [p for p in pages if p["page_number"] == 0]
    assert terms[0]["page_hash"] == terms[1]["page_hash"] and terms[0]["mv"] == terms[1]["mv"]


def test_missing_engine_or_language_is_one_line_naming_the_debian_package(archive_src, tmp_path):
    empty = tmp_path / "tessdata"
    empty.mkdir()
    env = {"TESSDATA_PREFIX": str(empty)}
    r = ingest(archive_src, tmp_path / "out", "--ocr-languages", "deu", env=env, check=False)
    assert r.returncode == 2 and "tesseract-ocr-deu" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "_index.json").exists()
    r = ingest(archive_src, tmp_path / "out", "--ocr", "always", "--page-images", "gif:10", check=False)
    assert r.returncode == 2 and "page_images" in r.stderr


@pytest.mark.slow
def test_sigkill_after_images_leaves_one_image_per_page(archive_src, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(archive_src, src)
    out = tmp_path / "out"
    killed = ingest(src, out, "--page-images", "png:128", "--unit-max-docs", "3", "--ocr", "never", model=SIM,
                    env={"PAGEMILL_KILL_AT": "store_committed:2"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    ingest(src, out, "--ocr", "never", model=SIM)  # the index keeps its page images without the flag
    pages = pages_of(out)
    files = sorted((out / "images").rglob("*.png"))
    assert len(files) == pages.num_rows == len(set(pages["image_uri"].to_pylist()))
    # a changed document's old images go with its old rows, even when the run dies right after
    # the commit record, before its deletes (the next run deletes what the record names)
    text_pdf(src / "born.pdf", "A rewritten single page")
    killed = ingest(src, out, "--ocr", "never", model=SIM, env={"PAGEMILL_KILL_AT": "committed:1"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    ingest(src, out, "--ocr", "never", model=SIM)
    pages = pages_of(out)
    assert sorted(str(f) for f in (out / "images").rglob("*.png")) == sorted(
        u.removeprefix("file://") for u in pages["image_uri"].to_pylist())


def test_status_report_and_plan_count_images_ocr_and_duplicates(indexed, tmp_path):
    def run(*args):
        r = subprocess.run(pagemill_cmd(*args), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    files = list((indexed / "images").rglob("*.webp"))
    status = json.loads(run("status", str(indexed), "--json"))
    assert status["page_images"] == {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
    assert status["near_duplicate_pages"] >= 2  # the stored-twice document's two pages
    assert status["text_sources"]["ocr"] == 8 and status["healthy"]
    report = json.loads(run("report", str(indexed), "--json"))
    assert report["page_images"]["bytes"] == sum(f.stat().st_size for f in files)
    assert report["text_sources"] == status["text_sources"]
    # plan: OCR's CPU for the share of pages that need it, duplicates not embedded, images' bytes
    calib = {"model": "colqwen2", "pages_per_s": 50.0, "render_pages_per_s_per_core": 50.0, "ocr_ms_per_page": 1000.0,
             "page_image_bytes": 40_000}
    (tmp_path / "c.json").write_text(json.dumps(calib))
    base = json.loads(run("plan", "--calibration", str(tmp_path / "c.json"), "--json"))
    more = json.loads(run("plan", "--calibration", str(tmp_path / "c.json"), "--json", "--ocr-fraction", "0.5",
                          "--duplicate-fraction", "0.25", "--page-images", "webp:512"))
    assert base["compute"]["cpu_cores_per_gpu"] == 1 and more["compute"]["cpu_cores_per_gpu"] == 26
    assert more["compute"]["gpu_hours"] == pytest.approx(base["compute"]["gpu_hours"] * 0.75, rel=0.01)
    assert more["page_images"]["bytes_per_page"] == 10_000
    r = subprocess.run(pagemill_cmd("plan", "--model", "colqwen2", "--ocr-fraction", "1.5"), cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--ocr-fraction" in r.stderr
