"""Where documents come from: list them with a version tag, read one document's bytes.

A source is small on purpose (two methods) so that object storage can stand beside the local
filesystem without touching the stages. Listing is a generator: a prefix with millions of
documents is never held in memory at once.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from operators.io.formats import Listing, extension, format_of


class SourceError(Exception):
    """The source cannot be listed at all (missing folder, bad URI): the job cannot start."""


@dataclass(frozen=True)
class DocumentRef:
    """One document version: the unit of change detection."""

    uri: str  # canonical URI, e.g. file:///data/a.pdf
    version: str  # changes whenever the bytes may have changed
    size: int


def unit_docs_json(docs: list[DocumentRef], may_hold: list[bool] | None = None) -> str:
    """A work unit's documents as the render stage receives them: JSON ``[[uri, version, size,
    may_hold], ...]`` (``may_hold``: Milvus may hold rows of another version of the document, so
    that its writer deletes them; default: it may)."""
    flags = may_hold if may_hold is not None else [True] * len(docs)
    return json.dumps([[d.uri, d.version, d.size, bool(f)] for d, f in zip(docs, flags)])


def read_unit_docs(text: str) -> list[tuple[DocumentRef, bool]]:
    """``unit_docs_json`` back: (document, may_hold) pairs."""
    return [(DocumentRef(uri, version, size), bool(flags[0]) if flags else True)
            for uri, version, size, *flags in json.loads(text)]


class Source:
    """Interface: ``list_documents()`` and ``read(ref)``."""

    uri: str

    def list_documents(self) -> Iterator[DocumentRef]:
        raise NotImplementedError

    def read(self, ref: DocumentRef) -> bytes:
        raise NotImplementedError

    listing: Listing  # what the last listing saw (by format) and skipped (by reason)

    def check(self) -> None:
        """Fail (SourceError) if the source cannot be listed at all, or lists nothing to index,
        before anything is written."""
        self.listing = Listing()
        if next(iter(self.list_documents()), None) is None:
            skipped = ", ".join(f"{n} {why}" for why, n in self.listing.skipped.most_common(4))
            raise SourceError(f"no documents found under {self.uri}: nothing to index (PDF, XPS, EPUB, images, Office "
                              f"files...; check the path, and --include / --exclude)"
                              + (f"; skipped: {skipped}" if skipped else ""))


def classify(rel: str, include: tuple[str, ...], exclude: tuple[str, ...], listing: Listing) -> str | None:
    """The document format of a file (its path relative to the source root) that passes the
    globs, counted in ``listing`` by format; None for a file skipped, counted by reason."""
    fmt = format_of(rel)
    if include and not any(fnmatch.fnmatch(rel, g) for g in include):
        listing.skipped["not matched by --include"] += 1
        return None
    if any(fnmatch.fnmatch(rel, g) for g in exclude):
        listing.skipped["matched by --exclude"] += 1
        return None
    if fmt is None:
        ext = extension(rel)
        listing.skipped[f"not a document (.{ext})" if ext else "not a document (no extension)"] += 1
        return None
    listing.by_format[fmt] += 1
    return fmt


class LocalSource(Source):
    """Documents under a local folder, recursively, in a stable (sorted) order (or one file).

    The version tag is ``<size>-<mtime_ns>``: cheap to compute for millions of files and it
    changes whenever a file is rewritten.
    """

    def __init__(self, root: str | os.PathLike, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()):
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()
        self.include = include
        self.exclude = exclude
        self.listing = Listing()

    def list_documents(self) -> Iterator[DocumentRef]:
        self.listing = Listing()
        if self.root.is_file():  # one document given as the source
            if format_of(self.root.name) is None:
                raise SourceError(f"{self.root} is not a document pagemill reads (PDF, XPS, EPUB, images, Office "
                                  f"files...): give one, or a folder of them")
            self.listing.by_format[format_of(self.root.name)] += 1
            st = self.root.stat()
            yield DocumentRef(uri=self.root.as_uri(), version=f"{st.st_size}-{st.st_mtime_ns}", size=st.st_size)
            return
        if not self.root.is_dir():
            raise SourceError(f"source folder does not exist: {self.root}")
        # os.walk with sorted names: stable order, streaming, no full list of the tree.
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                rel = path.relative_to(self.root).as_posix()
                if classify(rel, self.include, self.exclude, self.listing) is None:
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue  # vanished between listing and stat
                yield DocumentRef(uri=path.as_uri(), version=f"{st.st_size}-{st.st_mtime_ns}", size=st.st_size)

    def read(self, ref: DocumentRef) -> bytes:
        return Path(unquote(urlparse(ref.uri).path)).read_bytes()


class NoSource(Source):
    """No listing at all (``pagemill relayout``: the index's own documents, nothing new)."""

    uri = "(the index's documents)"
    listing = Listing()

    def check(self) -> None:
        pass

    def list_documents(self) -> Iterator[DocumentRef]:
        return iter(())

    def read(self, ref: DocumentRef) -> bytes:
        raise SourceError("relayout reads no documents")
