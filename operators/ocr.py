"""Tesseract for pages without text: where its language files are, and one line naming the Debian
package when the engine or a language is missing.

PyMuPDF's wheels carry MuPDF's own Tesseract; what a machine must have is Tesseract's language
files (``tessdata``), which Debian's ``tesseract-ocr`` and ``tesseract-ocr-<lang>`` packages
install (``$TESSDATA_PREFIX`` points elsewhere). The OCR itself runs in the render workers'
MuPDF child processes (operators/render.py), a page at a time under the page deadline.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")


@dataclass(frozen=True)
class OcrEngine:
    """What ``--ocr`` resolved to: ``mode`` (never | auto | always) and the language files, or
    why OCR is off (``note``, said in the summary)."""

    mode: str
    languages: str = "eng"
    tessdata: str | None = None
    note: str | None = None

    @property
    def on(self) -> bool:
        return self.mode != "never" and self.tessdata is not None


class OcrMissing(Exception):
    """The engine or a language pack is missing: one line naming the Debian package."""


def package_of(language: str) -> str:
    return "tesseract-ocr-" + language.lower().replace("_", "-")


def find_tessdata() -> str | None:
    """Tesseract's language folder: ``$TESSDATA_PREFIX``, else where the installed engine keeps it."""
    env = os.environ.get("TESSDATA_PREFIX")
    if env and Path(env).is_dir():
        return env
    try:
        import pymupdf

        found = pymupdf.get_tessdata()
    except Exception:  # no tesseract on the PATH, no folder found
        found = None
    if found and Path(found).is_dir():
        return str(found)
    for root in sorted(Path("/usr/share/tesseract-ocr").glob("*/tessdata"), reverse=True):
        return str(root)
    return None


def resolve(mode: str, languages: str = "eng") -> OcrEngine:
    """``--ocr`` against this machine: ``always`` (and any language asked beyond the default) with
    the engine or a language missing raises OcrMissing; ``auto`` without the engine is off, said."""
    if mode == "never":
        return OcrEngine("never", languages, note="off (--ocr never)")
    if not LANGUAGES.match(languages or ""):
        raise OcrMissing(f"ocr_languages: {languages!r} is Tesseract's language codes joined by + (e.g. eng+deu)")
    tessdata = find_tessdata()
    if tessdata is None:
        why = "Tesseract is not installed (Debian: apt-get install tesseract-ocr tesseract-ocr-eng)"
        if mode == "always" or languages != "eng":
            raise OcrMissing(f"--ocr {mode}: {why}")
        return OcrEngine(mode, languages, None, note=f"off: {why}")
    missing = [lang for lang in languages.split("+") if not (Path(tessdata) / f"{lang}.traineddata").is_file()]
    if missing:
        pkgs = " ".join(package_of(m) for m in missing)
        why = f"Tesseract has no {'+'.join(missing)} language in {tessdata} (Debian: apt-get install {pkgs})"
        if mode == "always" or languages != "eng":
            raise OcrMissing(f"--ocr-languages {languages}: {why}")
        return OcrEngine(mode, languages, None, note=f"off: {why}")
    return OcrEngine(mode, languages, tessdata, note=f"{mode} ({languages}, Tesseract's data in {tessdata})")
