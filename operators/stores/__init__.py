"""Where an index's pages and vectors are stored: the Parquet archive (``parquet``, with the
``pagemill.*`` facts of ``run_metadata``) and the vector stores behind one door (``door``).

Which vector store a URI names is decided here and nowhere else:

- ``milvus`` (``operators/stores/milvus/``): a Milvus Lite file path (the default, ``OUT/milvus.db``)
  or a Milvus server's URI (``http://``, ``https://``, ``tcp://``).

>>> store_kind("demo-out/milvus.db"), store_kind("http://milvus:19530")
('milvus', 'milvus')
"""

from __future__ import annotations

from operators.stores.door import IndexShape, Suspects, VectorStore, VectorStoreError  # noqa: F401


def store_kind(uri: str) -> str:
    """The kind of vector store a URI names."""
    return "milvus"


def default_vectors_uri(out: str) -> str | None:
    """The vector store of an OUT when none is given: its own Milvus Lite file; None for an OUT
    in an object store (Milvus Lite needs a local file)."""
    from operators.stores.milvus.client import default_uri

    return default_uri(out)


def vectors_uri(options: dict, out: str | None) -> str | None:
    """The vector store URI the store's options name (``--milvus``), else OUT's own."""
    return options.get("milvus") or (default_vectors_uri(out) if out else None)


def open_vectors(uri: str, options: dict, s3_options=None) -> VectorStore:
    """The vector store a URI names, configured from the store's options (pipelines/options.py,
    group ``store``, defaults filled in). Nothing is connected yet."""
    from operators.stores.milvus.store import MilvusStore

    return MilvusStore.from_options(uri, options, s3_options)


def check_store_options(options: dict, out: str) -> str | None:
    """What is wrong with the store's options for an OUT, naming the key; None when nothing is."""
    from operators.stores.milvus.store import MilvusStore

    return MilvusStore.check_options(options, out)


def local_file(uri: str) -> str | None:
    """The local file a store URI names (an embedded store), or None for a server."""
    from operators.stores.milvus.client import is_lite_uri

    return uri if is_lite_uri(uri) else None


__all__ = ["IndexShape", "Suspects", "VectorStore", "VectorStoreError", "check_store_options", "default_vectors_uri",
           "local_file", "open_vectors", "store_kind", "vectors_uri"]
