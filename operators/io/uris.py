"""Which source or output store a URI names: a local folder, ``file://`` or ``s3://``.

The one module that knows every kind, so that the kinds need not know each other (``s3``
implements ``sources.Source`` and ``store.OutputStore``; neither of those imports ``s3``).

>>> open_store("s3://bucket/out/").uri, type(open_source("/data/pdfs")).__name__
('s3://bucket/out/', 'LocalSource')
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from operators.io.sources import LocalSource, Source, SourceError
from operators.io.store import LocalStore, OutputStore, StoreError


def open_source(uri: str, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (), s3_options=None) -> Source:
    """A source for a local folder, a ``file://`` URI or an ``s3://bucket/prefix/`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        return LocalSource(path, include=include, exclude=exclude)
    if parsed.scheme == "s3":
        from operators.io.s3 import S3Source

        return S3Source(uri, s3_options, include=include, exclude=exclude)
    raise SourceError(f"unsupported source scheme {parsed.scheme!r} in {uri!r} (supported: a folder, file://, s3://)")


def open_store(uri: str, s3_options=None, create: bool = True) -> OutputStore:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return LocalStore(unquote(parsed.path) if parsed.scheme == "file" else uri, create=create)
    if parsed.scheme == "s3":
        from operators.io.s3 import S3Store

        return S3Store(uri, s3_options)
    raise StoreError(f"unsupported output scheme {parsed.scheme!r} in {uri!r} (supported: a folder, file://, s3://)")
