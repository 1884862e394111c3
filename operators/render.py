"""Fetch documents and render their pages straight to the model's pixel budget.

MuPDF runs in a child process that this stage owns: a page that never finishes rendering (or a
crash in native code) costs one child, which is killed and restarted, and the document is
quarantined with ``render_timeout`` / ``render_crash``. Pixels travel as raw RGB bytes, never
re-encoded.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from urllib.parse import unquote

import numpy as np
import pyarrow as pa

from operators import faults
from operators import schema as S
from operators.counters import Stage
from operators.io.sources import DocumentRef, Source, read_unit_docs, unit_docs_json

# Quarantine reason codes (machine-readable; documented in the README).
OPEN_ERROR = "open_error"
ENCRYPTED = "encrypted"
WRONG_PASSWORD = "wrong_password"
ZERO_PAGES = "zero_pages"
TOO_LARGE = "too_large"
TOO_MANY_PAGES = "too_many_pages"
FETCH_ERROR = "fetch_error"
RENDER_ERROR = "render_error"
RENDER_TIMEOUT = "render_timeout"
RENDER_CRASH = "render_crash"
OCR_ERROR = "ocr_error"  # (a page: its text stays what the page had, said in the quarantine)

# Where a page's text came from (``text_source``)
NATIVE, OCR, NO_TEXT = "native", "ocr", "none"
THIN_CHARS_PER_SQ_IN = 1.0  # under this, a page's own text is too thin for its area: --ocr auto reads it
OCR_MAX_PIXELS = 40_000_000  # the most pixels OCR reads a page at (a 300 dpi A3 page is 17.4 M)


@dataclass(frozen=True)
class PixelBudget:
    """What a model wants: at most ``max_pixels`` per page, sides a multiple of ``multiple``."""

    max_pixels: int
    multiple: int = 1
    max_side: int = 8192
    min_side: int = 1


def target_size(width_pt: float, height_pt: float, budget: PixelBudget) -> tuple[int, int]:
    """Output (width, height) in pixels for a page of the given size in points.

    The page keeps its aspect ratio as nearly as the multiple allows, fills the pixel budget
    without exceeding it, and never exceeds ``max_side`` (so an 18000x36000 pt poster renders
    small instead of failing in MuPDF).

    >>> target_size(612, 792, PixelBudget(max_pixels=28 * 28 * 768, multiple=28))
    (672, 868)
    """
    if not (width_pt > 0 and height_pt > 0):
        raise ValueError(f"page has no area ({width_pt} x {height_pt} pt)")
    m = max(1, budget.multiple)
    scale = min(math.sqrt(budget.max_pixels / (width_pt * height_pt)), budget.max_side / max(width_pt, height_pt))
    w = max(m, int(width_pt * scale) // m * m, budget.min_side)
    h = max(m, int(height_pt * scale) // m * m, budget.min_side)
    # Rounding a very thin page up to one multiple can exceed the budget; shrink the long side.
    while w * h > budget.max_pixels and max(w, h) > m:
        if w >= h:
            w -= m
        else:
            h -= m
    return w, h


@dataclass
class RenderLimits:
    page_timeout_s: float = 60.0  # one page's render deadline; the document is abandoned past it
    max_pages: int = 100_000  # pages per document
    max_bytes: int = 512 * 1024 * 1024  # bytes per document
    passwords: tuple[str, ...] = field(default_factory=tuple)  # tried on every encrypted document
    password_map: tuple[tuple[str, str], ...] = ()  # (glob on the URI or file name, password), from --passwords
    extract_text: bool = True  # the page's text layer (about 4 ms a page), for text search and fidelity
    ocr: str = "never"  # never | auto (pages whose text is empty or too thin) | always
    ocr_languages: str = "eng"  # Tesseract's, joined by + (eng+deu)
    ocr_dpi: int = 300
    tessdata: str | None = None  # Tesseract's language files (operators.ocr.find_tessdata)
    office_timeout_s: float = 120.0  # LibreOffice's deadline for one Office file
    office_command: str = "soffice"
    page_images: tuple[str, int] | None = None  # (webp | jpeg | png, longest edge): an image a page for answers


# --------------------------------------------------------------------------------------------
# The child process: owns MuPDF. Protocol over a Pipe:
#   parent: ("doc", budget, options) then send_bytes(document)
#   child:  ("doc_error", reason, detail) | ("meta", page_count)
#           then per page ("page", i, w, h, text, text_source, ocr_s) + send_bytes(rgb)
#                       | ("page_error", i, reason, detail)
#           then ("end",)


def thin_text(text: str | None, width_pt: float, height_pt: float) -> bool:
    """A page's own text too thin for its area (fewer than 1 character a square inch: a scan, a
    photographed page, a page of images): what ``--ocr auto`` reads with OCR.

    >>> thin_text("", 612, 792), thin_text("x" * 200, 612, 792)
    (True, False)
    """
    chars = sum(1 for c in (text or "") if not c.isspace())
    return chars < THIN_CHARS_PER_SQ_IN * (width_pt / 72) * (height_pt / 72)


def _page_text(page, want_text: bool, ocr: dict, rect) -> tuple[str | None, str, float]:
    """(text, where it came from, OCR seconds) of a page: its own text layer, or Tesseract's
    reading of it where ``ocr`` asks (the whole page when it has no text; only its images when
    it has some)."""
    if not want_text:
        return None, NO_TEXT, 0.0
    text = page.get_text()
    mode = ocr.get("mode", "never")
    if mode == "never" or (mode == "auto" and not thin_text(text, rect.width, rect.height)):
        return text, NATIVE if text.strip() else NO_TEXT, 0.0
    full = mode == "always" or not text.strip()
    if not full and not page.get_images():
        return text, NATIVE, 0.0  # a short text and no image on the page: nothing for OCR to read
    t = time.perf_counter()
    # at most OCR_MAX_PIXELS: a page that declares itself huge is read at a lower resolution
    square_in = max(1e-6, (rect.width / 72) * (rect.height / 72))
    dpi = max(1, min(ocr["dpi"], int((OCR_MAX_PIXELS / square_in) ** 0.5)))
    try:
        tp = page.get_textpage_ocr(language=ocr["languages"], dpi=dpi, full=full, tessdata=ocr["tessdata"])
        read = page.get_text(textpage=tp)
    except Exception:  # Tesseract refused the page: it keeps its own text, the page is still indexed
        read = ""
    took = time.perf_counter() - t
    if not full and len(read.split()) <= len(text.split()):
        read = ""  # (its images held no more words than its own text layer)
    if read.strip():
        return read, OCR, took
    return text, NATIVE if text.strip() else NO_TEXT, took


def _render_child(conn) -> None:  # pragma: no cover - runs in the child process
    import numpy as np
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    conn.send(("ready",))  # imports done: from here on, every reply has a deadline
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        _, budget, opts = msg
        max_pages, passwords, want_text, ocr = opts["max_pages"], opts["passwords"], opts["text"], opts["ocr"]
        filetype = opts["filetype"]
        data = conn.recv_bytes()
        faults.segfault_if_marked(data)
        if not data:
            conn.send(("doc_error", OPEN_ERROR, "empty file"))
            continue
        try:
            doc = pymupdf.open(stream=data, filetype=filetype)
        except Exception as e:  # MuPDF raises several types for unreadable files
            conn.send(("doc_error", OPEN_ERROR, _short(e)))
            continue
        try:
            if filetype == "pdf" and not doc.is_pdf:  # MuPDF sniffs content: images and e-books open too
                conn.send(("doc_error", OPEN_ERROR, f"not a PDF (content looks like {doc.metadata.get('format') or 'another format'})"))
                continue
            if doc.needs_pass and not any(doc.authenticate(p) for p in passwords):
                if passwords:
                    conn.send(("doc_error", WRONG_PASSWORD, f"none of {len(passwords)} known password(s) opens it"))
                else:
                    conn.send(("doc_error", ENCRYPTED, "password required (add it to --passwords)"))
                continue
            n = doc.page_count
            if n == 0:
                conn.send(("doc_error", ZERO_PAGES, "document has no pages"))
                continue
            if n > max_pages:
                conn.send(("doc_error", TOO_MANY_PAGES, f"{n} pages > limit {max_pages}"))
                continue
            conn.send(("meta", n))
            for i in range(n):
                try:
                    page = doc.load_page(i)
                    rect = page.rect
                    w, h = target_size(rect.width, rect.height, budget)
                    pix = page.get_pixmap(
                        matrix=pymupdf.Matrix(w / rect.width, h / rect.height),
                        colorspace=pymupdf.csRGB,
                        alpha=False,
                    )
                    if pix.width == w and pix.height == h and pix.stride == w * 3:
                        rgb = pix.samples_mv
                    else:  # MuPDF rounded the size (off by one) or padded rows: fit exactly
                        arr = np.frombuffer(pix.samples_mv, np.uint8).reshape(pix.height, pix.stride)
                        arr = arr[:, : pix.width * 3].reshape(pix.height, pix.width, 3)
                        out = np.full((h, w, 3), 255, np.uint8)
                        hh, ww = min(h, pix.height), min(w, pix.width)
                        out[:hh, :ww] = arr[:hh, :ww]
                        rgb = out.tobytes()
                    text, source, ocr_s = _page_text(page, want_text, ocr, rect)
                    conn.send(("page", i, w, h, text, source, ocr_s))
                    conn.send_bytes(rgb)
                except Exception as e:
                    conn.send(("page_error", i, RENDER_ERROR, _short(e)))
            conn.send(("end",))
        finally:
            doc.close()


def _child_main(fd: int) -> None:  # pragma: no cover - runs in the child process
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _render_child(Connection(fd))


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (f"{type(e).__name__}: {text[0]}" if text else type(e).__name__)[:300]


class _ChildGone(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def large_binary_column(blobs: list[bytes]) -> pa.Array:
    """Pages' pixels as one ``large_binary`` array: one copy into one buffer. (``pa.array`` of the
    same list copies them value by value into memory it grows: about 10x the CPU, 5 ms a page at
    ColQwen2's budget, most of it the kernel handing out fresh pages.)"""
    lengths = np.fromiter((len(b) for b in blobs), np.int64, len(blobs))
    offsets = np.zeros(len(blobs) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(blobs),
                                            [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(blobs))])


STARTUP_TIMEOUT_S = 120.0  # a fresh renderer's imports; on a loaded machine they take seconds


class MuPdfWorker:
    """One renderer child process with a deadline on every reply.

    A page's deadline counts from a renderer that is ready: ``start`` waits for the child's imports
    (its own, longer deadline), so a renderer replaced after a kill never spends a document's
    deadline on start-up. A renderer that cannot start is this machine's problem, not the
    document's: ``start`` raises and the unit is retried; nothing is quarantined."""

    def __init__(self):
        self._proc = None
        self._conn = None
        self._cpu_before = 0.0  # CPU seconds of the children stopped so far
        self._cpu_last = 0.0  # of the running child, when last read

    def start(self) -> None:
        # A fresh interpreter, not fork (callers may be threaded Ray workers) and not
        # multiprocessing's spawn (it re-imports the caller's __main__).
        parent, child = socket.socketpair()
        # Room for a few pages in flight, so the child renders the next page while this process
        # copies the last one (capped by net.core.wmem_max; best effort).
        for sock in (parent, child):
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, 8 * 1024 * 1024)
                except OSError:
                    pass
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import sys, operators.render as r; r._child_main(int(sys.argv[1]))",
             str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self._conn = Connection(parent.detach())
        try:
            ready = self._conn.poll(STARTUP_TIMEOUT_S) and self._conn.recv() == ("ready",)
        except (EOFError, ConnectionError, OSError):
            ready = False
        if not ready:
            code = self._proc.poll()
            self.stop()
            state = f"exit code {code}" if code is not None else f"not ready after {STARTUP_TIMEOUT_S:g}s"
            raise RuntimeError(f"the renderer process did not start ({state})")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def cpu_s(self) -> float:
        """CPU seconds the child has used (user and system; its own children, Tesseract's, once
        they ended), plus those of the children before it (restarted after a crash or a deadline)."""
        import psutil

        try:
            t = psutil.Process(self._proc.pid).cpu_times() if self.alive() else None
        except psutil.Error:
            t = None
        if t is not None:  # a child that died keeps what was last read of it
            self._cpu_last = t.user + t.system + t.children_user + t.children_system
        return self._cpu_before + self._cpu_last

    def stop(self) -> None:
        if self._proc is not None:
            self._cpu_before, self._cpu_last = self.cpu_s(), 0.0
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def _recv(self, timeout: float, what: str):
        if not self._conn.poll(timeout):
            self.stop()
            raise _ChildGone(RENDER_TIMEOUT, f"{what} took longer than {timeout:g}s")
        try:
            return self._conn.recv()
        except (EOFError, ConnectionError, OSError):
            code = self._proc.wait(timeout=5) if self._proc else None
            self.stop()
            raise _ChildGone(RENDER_CRASH, f"renderer died during {what} (exit code {code})") from None

    def _recv_bytes(self) -> bytes:
        try:
            return self._conn.recv_bytes()
        except (EOFError, ConnectionError, OSError):
            self.stop()
            raise _ChildGone(RENDER_CRASH, "renderer died while sending pixels") from None

    def render(self, data: bytes, budget: PixelBudget, limits: RenderLimits, passwords: tuple[str, ...] = (),
               filetype: str = "pdf"):
        """Yield ("meta", n) / ("page", i, w, h, text, text_source, ocr_s, rgb) / ("page_error", i,
        reason, detail) / ("doc_error", reason, detail). Raises _ChildGone on timeout or crash."""
        if not self.alive():
            self.stop()
            self.start()
        ocr = {"mode": limits.ocr if limits.tessdata else "never", "languages": limits.ocr_languages,
               "dpi": limits.ocr_dpi, "tessdata": limits.tessdata}
        opts = {"max_pages": limits.max_pages, "passwords": tuple(passwords), "text": limits.extract_text, "ocr": ocr,
                "filetype": filetype}
        try:
            self._conn.send(("doc", budget, opts))
            self._conn.send_bytes(data)
        except (ConnectionError, OSError):
            self.stop()
            raise _ChildGone(RENDER_CRASH, "renderer died before the document was sent") from None
        # Opening a large damaged file can take as long as a page: same deadline.
        msg = self._recv(limits.page_timeout_s, "opening the document")
        yield msg
        if msg[0] == "doc_error":
            return
        while True:
            msg = self._recv(limits.page_timeout_s, "rendering a page")
            if msg[0] == "end":
                return
            if msg[0] == "page":
                yield (*msg, self._recv_bytes())
            else:
                yield msg


def passwords_for(uri: str, limits: RenderLimits) -> tuple[str, ...]:
    """Passwords to try on a document: those whose glob matches its URI, path or file name, then
    the global ones."""
    import fnmatch
    from urllib.parse import unquote

    plain = unquote(uri)
    name = plain.rsplit("/", 1)[-1]
    matched = [pw for pattern, pw in limits.password_map
               if fnmatch.fnmatch(plain, pattern) or fnmatch.fnmatch(name, pattern)
               or fnmatch.fnmatch(plain, "*/" + pattern.lstrip("/"))]
    return tuple(dict.fromkeys([*matched, *limits.passwords]))


def load_password_map(path: str) -> tuple[tuple[str, str], ...]:
    """A passwords file: ``<glob or path><TAB><password>`` per line (a header line ``file`` and
    ``#`` comments are skipped; extra columns are ignored, so the corpus' PASSWORDS.tsv works)."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) < 2:
                raise ValueError(f"{path}:{n}: expected '<glob><TAB><password>'")
            if n == 1 and cols[0].strip().lower() in ("file", "path", "glob", "pattern"):
                continue
            pairs.append((cols[0].strip(), cols[1]))
    return tuple(pairs)


# --------------------------------------------------------------------------------------------


def units_table(units: list[tuple[str, list[DocumentRef]]], may_hold=None) -> pa.Table:
    """The input of the fetch/render stage: one row per work unit, its documents as JSON
    (``operators.io.sources.unit_docs_json``; ``may_hold(doc)``: whether Milvus may hold rows of
    another version of it, default: it may)."""
    return pa.table({S.UNIT_ID: [u for u, _ in units],
                     "docs": [unit_docs_json(docs, [may_hold(d) for d in docs] if may_hold else None)
                              for _, docs in units]})


class RenderPages(Stage):
    """Work units in, rendered pages out (plus one marker row per unit with its bookkeeping).

    Each input row is a whole work unit: its documents are fetched from the source, opened and
    rendered in the MuPDF child. Failures become quarantine entries in the unit's marker row;
    they never raise.

    >>> stage = RenderPages(source, PixelBudget(max_pixels=200_000, multiple=28))  # doctest: +SKIP
    >>> stage.setup(); pages = stage(units_table([("u1", refs)]))                   # doctest: +SKIP
    """

    name = "render"
    extra_counters = {"documents": 0, "ocr_pages": 0, "ocr_read": 0, "ocr_s": 0.0, "converted": 0, "convert_s": 0.0,
                      "duplicates": 0, "images": 0, "image_bytes": 0, "images_s": 0.0, "hash_s": 0.0}

    def __init__(self, source: Source, budget: PixelBudget, limits: RenderLimits | None = None,
                 known_hashes=None):
        """``known_hashes``: the content hashes of the documents the index holds (a sorted uint64
        array of their first 8 bytes, ``LedgerState.content_keys``): a document whose bytes are one of
        them is not rendered again, but indexed as a duplicate when its unit is committed."""
        self.source = source
        self.budget = budget
        self.limits = limits or RenderLimits()
        self.known_hashes = known_hashes
        self._worker: MuPdfWorker | None = None
        super().__init__()

    def setup(self) -> None:
        if self._worker is None:
            self._worker = MuPdfWorker()
            self._worker.start()
            self.counters.cpu_time = self._cpu_time

    def _cpu_time(self) -> float:
        """This process' CPU seconds and its renderer child's (MuPDF, OCR: most of the work)."""
        return time.process_time() + (self._worker.cpu_s() if self._worker is not None else 0.0)

    def stage_stats(self) -> dict:
        """Cumulative counters of this worker (the driver keeps the latest per worker)."""
        return self.counters.snapshot()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def __del__(self):  # the child is a daemon anyway; this just frees it early
        try:
            self.close()
        except Exception:
            pass

    def __call__(self, batch: pa.Table) -> pa.Table:
        S.require_columns("RenderPages", batch, [S.UNIT_ID, "docs"])
        self.setup()
        self.counters.start()  # wall time counts from the first batch: set-up is start-up, not work
        t0 = self.counters.mark()
        cols: dict[str, list] = {f.name: [] for f in S.RENDERED_SCHEMA}
        for unit_id, docs_json in zip(batch[S.UNIT_ID].to_pylist(), batch["docs"].to_pylist()):
            info = {"docs": [], "quarantine": [], "n_pages": 0}
            seen: dict[str, str] = {}
            for ref, may_hold in read_unit_docs(docs_json):
                n_ok = self._render_document(unit_id, ref, cols, info, seen)
                info["docs"][-1]["may_hold"] = may_hold
                info["n_pages"] += n_ok
            self.counters.busy(t0)
            t0 = self.counters.mark()
            self._append(cols, unit_id, S.KIND_UNIT, None, None, 0, 0, b"", unit_info=json.dumps(info))
        self.counters.busy(t0)
        cols[S.PIXELS] = large_binary_column(cols[S.PIXELS])
        return S.stamp(pa.table(cols, schema=S.RENDERED_SCHEMA), self.name, self.stage_stats())

    @staticmethod
    def _append(cols, unit_id, kind, ref, page_number, w, h, pixels, unit_info=None, text=None, text_source=None,
                page_hash=None, image=None):
        cols[S.TEXT_SOURCE].append(text_source)
        cols[S.PAGE_HASH].append(page_hash)
        cols[S.PAGE_IMAGE].append(image)
        cols[S.UNIT_ID].append(unit_id)
        cols[S.KIND].append(kind)
        cols[S.PAGE_ID].append(S.page_id_for(ref.uri, page_number) if ref and page_number is not None else None)
        cols[S.DOC_ID].append(S.doc_id_for(ref.uri) if ref else None)
        cols[S.SOURCE_URI].append(ref.uri if ref else None)
        cols[S.DOC_VERSION].append(ref.version if ref else None)
        cols[S.PAGE_NUMBER].append(page_number)
        cols[S.WIDTH].append(w)
        cols[S.HEIGHT].append(h)
        cols[S.PIXELS].append(pixels)
        cols[S.TEXT].append(text)
        cols[S.UNIT_INFO].append(unit_info)

    def _render_document(self, unit_id: str, ref: DocumentRef, cols: dict, info: dict, seen: dict) -> int:
        """Render one document into ``cols``; record its outcome in ``info`` (``seen``: the content
        hashes of the unit's documents so far). Returns pages added."""
        from operators.io.formats import ConvertError, convert_office, format_of, is_office, via_pillow

        self.stats["documents"] += 1
        fmt = format_of(unquote(ref.uri)) or "pdf"
        doc = {"uri": ref.uri, "version": ref.version, "size": ref.size, "doc_id": S.doc_id_for(ref.uri),
               "format": fmt}
        info["docs"].append(doc)

        def quarantine(stage, reason, detail, page=None):
            info["quarantine"].append(
                {"source_uri": ref.uri, "doc_version": ref.version, "page_number": page,
                 "stage": stage, "reason": reason, "detail": detail}
            )

        if ref.size > self.limits.max_bytes:
            doc.update(status="quarantined", n_pages=0)
            quarantine("fetch", TOO_LARGE, f"{ref.size} bytes > limit {self.limits.max_bytes}")
            return 0
        try:
            data = self.source.read(ref)
        except Exception as e:
            doc.update(status="quarantined", n_pages=0)
            quarantine("fetch", FETCH_ERROR, _short(e))
            return 0
        content = content_hash(data)
        doc["content_hash"] = content
        if data and (content in seen or is_known(self.known_hashes, content)):
            # the same bytes as a document the index holds, or as one before it in this unit: its
            # pages are that document's, given to this one when the unit is committed
            doc.update(status="duplicate", n_pages=0, duplicate_of=seen.get(content))
            self.stats["duplicates"] += 1
            return 0
        filetype = "pdf" if is_office(fmt) else fmt
        try:
            if is_office(fmt):
                t = time.perf_counter()
                data = convert_office(data, fmt, self.limits.office_timeout_s, self.limits.office_command)
                self.stats["converted"] += 1
                self.stats["convert_s"] += time.perf_counter() - t
            elif fmt in ("webp",) and data:
                data, filetype = via_pillow(data)
        except ConvertError as e:
            doc.update(status="quarantined", n_pages=0)
            quarantine("convert", e.reason, e.detail)
            return 0
        except Exception as e:  # Pillow on a broken image
            doc.update(status="quarantined", n_pages=0)
            quarantine("render", OPEN_ERROR, _short(e))
            return 0

        pages: list[tuple] = []
        page_errors: list[tuple[int, str, str]] = []
        failure: tuple[str, str] | None = None
        for attempt in range(2):  # a crashed child gets one retry with a fresh process
            pages, page_errors, failure = [], [], None
            try:
                for msg in self._worker.render(data, self.budget, self.limits, passwords_for(ref.uri, self.limits),
                                               filetype=filetype):
                    if msg[0] == "doc_error":
                        failure = (msg[1], msg[2])
                    elif msg[0] == "page":
                        pages.append(msg[1:])
                    elif msg[0] == "page_error":
                        page_errors.append((msg[1], msg[2], msg[3]))
                break
            except _ChildGone as gone:
                failure = (gone.reason, gone.detail)
                if gone.reason != RENDER_CRASH or attempt == 1:
                    break
        if failure is not None:
            doc.update(status="quarantined", n_pages=0)
            quarantine("render", failure[0], failure[1])
            return 0
        for i, reason, detail in page_errors:
            quarantine("render", reason, detail, page=i)
        if not pages:
            doc.update(status="quarantined", n_pages=0)
            return 0
        seen[content] = ref.uri
        doc.update(status="partial" if page_errors else "indexed", n_pages=len(pages))
        for i, w, h, text, source, ocr_s, rgb in pages:
            if ocr_s:
                self.stats["ocr_read"] += 1
                self.stats["ocr_s"] += ocr_s
                self.stats["ocr_pages"] += source == OCR
            t = time.perf_counter()
            page_hash = image_hash(rgb, w, h)
            self.stats["hash_s"] += time.perf_counter() - t
            image = None
            if self.limits.page_images:
                t = time.perf_counter()
                image = page_image(rgb, w, h, *self.limits.page_images)
                self.stats["images"] += 1
                self.stats["image_bytes"] += len(image)
                self.stats["images_s"] += time.perf_counter() - t
            self._append(cols, unit_id, S.KIND_PAGE, ref, i, w, h, rgb, text=text, text_source=source,
                         page_hash=page_hash, image=image)
        self.stats["pages"] += len(pages)
        return len(pages)


def content_hash(data: bytes) -> str:
    """A document's content key: BLAKE2b-128 of its bytes, hex."""
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


def is_known(keys, content: str) -> bool:
    if keys is None or not len(keys):
        return False
    import numpy as np

    k = np.uint64(int(content[:16], 16))
    i = int(np.searchsorted(keys, k))
    return i < len(keys) and keys[i] == k


def image_hash(rgb, w: int, h: int) -> int:
    """A 64-bit difference hash of a rendered page (its 9 x 8 greyscale thumbnail, each pixel
    against its right neighbour): equal for a page and its re-rendering, a re-scan or a resave
    most of the time (near-duplicate pages), as a signed 64-bit integer."""
    import numpy as np
    from PIL import Image

    thumb = Image.frombuffer("RGB", (w, h), bytes(rgb), "raw", "RGB", 0, 1).convert("L").resize((9, 8), Image.BILINEAR)
    a = np.asarray(thumb, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).ravel()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


IMAGE_FORMATS = {"webp": ("WEBP", {"quality": 80, "method": 2}), "jpeg": ("JPEG", {"quality": 85}),
                 "jpg": ("JPEG", {"quality": 85}), "png": ("PNG", {"optimize": False})}


def parse_page_images(spec: str | None) -> tuple[str, int] | None:
    """``webp:1024`` -> ("webp", 1024); None for none."""
    if not spec or spec == "none":
        return None
    fmt, _, edge = spec.partition(":")
    fmt = fmt.strip().lower()
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"{spec!r}: the format is one of {', '.join(sorted(IMAGE_FORMATS))} (e.g. webp:1024)")
    try:
        side = int(edge) if edge else 1024
    except ValueError:
        raise ValueError(f"{spec!r}: the longest edge is a number of pixels (e.g. webp:1024)") from None
    if not 16 <= side <= 8192:
        raise ValueError(f"{spec!r}: the longest edge is 16 to 8192 pixels")
    return fmt, side


def page_image(rgb, w: int, h: int, fmt: str, edge: int) -> bytes:
    """The rendered page as an image file of at most ``edge`` pixels on its longest side (the
    rendered pixels, downscaled once where larger; never enlarged)."""
    import io

    from PIL import Image

    img = Image.frombuffer("RGB", (w, h), bytes(rgb), "raw", "RGB", 0, 1)
    if max(w, h) > edge:
        scale = edge / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    out = io.BytesIO()
    name, opts = IMAGE_FORMATS[fmt]
    img.save(out, name, **opts)
    return out.getvalue()
