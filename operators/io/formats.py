"""Which files under a source are documents, and in which format: chosen by the file's extension,
confirmed by its content when it is opened (operators/render.py).

- ``pdf``; the page formats MuPDF opens (XPS, EPUB, CBZ, FB2, MOBI, SVG) and images (PNG, JPEG,
  TIFF, multi-page TIFF included, BMP, GIF, JPEG 2000, PNM, PSD, JPEG XR), each image frame a page;
  WebP, which this MuPDF does not open, goes through Pillow first;
- Office files (Word, Excel, PowerPoint, OpenDocument, RTF), converted to PDF by LibreOffice where
  it is installed (``soffice --headless --convert-to pdf``) and quarantined, naming what to install,
  where it is not;
- everything else is skipped, and counted by its extension: nothing under a source is silently
  ignored.

>>> format_of("scans/p1.TIF"), format_of("a.docx"), format_of("notes.txt"), format_of("book.epub")
('tiff', 'docx', None, 'epub')
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field

# extension -> the filetype MuPDF opens it as
PAGE_FORMATS = {
    "pdf": "pdf", "xps": "xps", "oxps": "xps", "epub": "epub", "cbz": "cbz", "fb2": "fb2", "mobi": "mobi",
    "svg": "svg", "png": "png", "jpg": "jpg", "jpeg": "jpg", "tif": "tiff", "tiff": "tiff", "bmp": "bmp",
    "gif": "gif", "jp2": "jp2", "jpx": "jpx", "j2k": "jp2", "pnm": "pnm", "pgm": "pnm", "ppm": "pnm", "pbm": "pnm",
    "pam": "pam", "psd": "psd", "jxr": "jxr", "webp": "webp",
}
IMAGES = {"png", "jpg", "tiff", "bmp", "gif", "jp2", "jpx", "pnm", "pam", "psd", "jxr", "webp"}
VIA_PILLOW = {"webp"}  # Pillow decodes it to PNG for MuPDF
OFFICE = {"docx", "doc", "docm", "dotx", "odt", "rtf", "pptx", "ppt", "pptm", "odp", "xlsx", "xls", "xlsm", "ods"}
OFFICE_PACKAGES = {"writer": "libreoffice-writer", "impress": "libreoffice-impress", "calc": "libreoffice-calc"}


def extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base.lstrip(".") else ""


def format_of(name: str) -> str | None:
    """The document format of a file name (its extension, any case), or None: not a document."""
    ext = extension(name)
    if ext in PAGE_FORMATS:
        return PAGE_FORMATS[ext]
    return ext if ext in OFFICE else None


def is_office(fmt: str | None) -> bool:
    return fmt in OFFICE


@dataclass
class Listing:
    """What a listing saw: documents by format, and the files it skipped by reason."""

    by_format: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {"by_format": dict(sorted(self.by_format.items())), "skipped": dict(sorted(self.skipped.items()))}


# --------------------------------------------------------------------------------------------
# Office files through LibreOffice

OFFICE_COMMAND = "soffice"


class ConvertError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def office_package(fmt: str) -> str:
    """The Debian package of LibreOffice that converts this format."""
    if fmt in ("pptx", "ppt", "pptm", "odp"):
        return OFFICE_PACKAGES["impress"]
    if fmt in ("xlsx", "xls", "xlsm", "ods"):
        return OFFICE_PACKAGES["calc"]
    return OFFICE_PACKAGES["writer"]


def convert_office(data: bytes, fmt: str, timeout_s: float, command: str = OFFICE_COMMAND) -> bytes:
    """An Office file's bytes as a PDF, by LibreOffice in a process of its own (its own profile,
    so that converters in parallel do not share one), killed past ``timeout_s``."""
    exe = shutil.which(command)
    if exe is None:
        raise ConvertError("needs_converter", f"a .{fmt} file: LibreOffice converts it to PDF and is not installed "
                                              f"(Debian: apt-get install {office_package(fmt)})")
    with tempfile.TemporaryDirectory(prefix="pagemill-office-") as tmp:
        src = os.path.join(tmp, f"document.{fmt}")
        with open(src, "wb") as f:
            f.write(data)
        cmd = [exe, f"-env:UserInstallation=file://{tmp}/profile", "--headless", "--norestore", "--convert-to", "pdf",
               "--outdir", tmp, src]
        # its own session: past the deadline the whole group goes (soffice starts soffice.bin)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise ConvertError("convert_timeout", f"LibreOffice took longer than {timeout_s:g}s") from None
        out = os.path.join(tmp, "document.pdf")
        if proc.returncode != 0 or not os.path.exists(out):
            why = (stderr or stdout).decode(errors="replace").strip().splitlines()
            raise ConvertError("convert_error", f"LibreOffice could not convert it (exit {proc.returncode}"
                                                + (f": {why[-1][:200]}" if why else "") + ")")
        with open(out, "rb") as f:
            return f.read()


def via_pillow(data: bytes) -> tuple[bytes, str]:
    """An image MuPDF does not open (WebP), as PNG bytes, or TIFF for several frames (a page a
    frame); with the filetype MuPDF opens them as."""
    import io

    from PIL import Image, ImageSequence

    with Image.open(io.BytesIO(data)) as img:
        frames = [f.convert("RGB") for f in ImageSequence.Iterator(img)]
    out = io.BytesIO()
    if len(frames) == 1:
        frames[0].save(out, "PNG")
        return out.getvalue(), "png"
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:])
    return out.getvalue(), "tiff"


__all__ = ["IMAGES", "OFFICE", "PAGE_FORMATS", "ConvertError", "Listing", "convert_office", "extension", "format_of",
           "is_office", "office_package", "via_pillow"]
