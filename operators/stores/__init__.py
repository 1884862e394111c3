"""Where an index's pages and vectors are stored: the Parquet archive (``parquet``, with the
``pagemill.*`` facts of ``run_metadata``) and the vector stores behind one door (``door``).

Which vector store a URI names is decided here and nowhere else:

- ``milvus`` (``operators/stores/milvus/``): a Milvus Lite file path (the default, ``OUT/milvus.db``)
  or a Milvus server's URI (``http://``, ``https://``, ``tcp://``);
- ``lancedb`` (``operators/stores/lancedb/``): ``lancedb:PATH``, a local folder or an object-store
  prefix (``lancedb:s3://bucket/prefix``); ``lancedb:`` alone is OUT's ``lancedb`` folder.

The index records its store in ``OUT/_index.json`` (``record``), so that a nightly run and every
reader find it without being told.

>>> store_kind("demo-out/milvus.db"), store_kind("http://milvus:19530"), store_kind("lancedb:s3://b/idx")
('milvus', 'milvus', 'lancedb')
"""

from __future__ import annotations

import os

from operators.errors import UsageError
from operators.stores.door import IndexShape, Suspects, VectorStore, VectorStoreError  # noqa: F401

KINDS = {"milvus": "Milvus", "lancedb": "LanceDB"}


def store_kind(uri: str) -> str:
    """The kind of vector store a URI names."""
    return "lancedb" if uri.startswith("lancedb:") else "milvus"


def default_vectors_uri(out: str) -> str | None:
    """The vector store of an OUT when none is given: its own Milvus Lite file; None for an OUT
    in an object store (Milvus Lite needs a local file)."""
    from operators.stores.milvus.client import default_uri

    return default_uri(out)


def given_uri(options: dict) -> str | None:
    """The store the options name (``--vectors``, or ``--milvus`` as before it)."""
    vectors, milvus = options.get("vectors"), options.get("milvus")
    if vectors and milvus and vectors != milvus:
        raise UsageError(f"--vectors {vectors} and --milvus {milvus} name two stores: give one (--vectors)")
    return vectors or milvus


def vectors_uri(options: dict, out: str | None, recorded: dict | None = None) -> str | None:
    """The vector store URI: the options' (``--vectors``/``--milvus``), else the one the index
    records (``record``), else OUT's own Milvus Lite file."""
    uri = given_uri(options)
    if uri:
        return uri
    if recorded and recorded.get("uri"):
        return recorded["uri"]
    return default_vectors_uri(out) if out else None


def record(uri: str, out: str) -> dict:
    """What ``_index.json`` keeps of the store (``{"kind", "uri"}``): the URI as a reader can use it
    again (an absolute folder; None for OUT's own default store, which moves with OUT). A URI
    that carries credentials is not recorded (they are never written anywhere)."""
    from operators.stores.milvus.client import redact_uri

    kind = store_kind(uri)
    keep: str | None = uri
    if kind == "lancedb":
        path = uri[len("lancedb:"):]
        if path and "://" not in path:
            keep = "lancedb:" + os.path.abspath(path)
        if path and os.path.abspath(path) == os.path.abspath(os.path.join(out, "lancedb")) and "://" not in out:
            keep = "lancedb:"
    elif uri == default_vectors_uri(out):
        keep = None
    elif "://" not in uri:
        keep = os.path.abspath(uri)
    elif redact_uri(uri) != uri:
        keep = None
    return {"kind": kind, "uri": keep}


def check_recorded(uri: str, recorded: dict | None, out: str) -> str | None:
    """A store that is not the index's (another kind than ``_index.json`` records): one line."""
    if not recorded or store_kind(uri) == recorded.get("kind"):
        return None
    was = recorded.get("uri") or f"OUT's own {KINDS.get(recorded.get('kind'), recorded.get('kind'))}"
    return (f"vectors: {out} keeps its index's vectors in {KINDS.get(recorded.get('kind'))} ({was}); --vectors "
            f"{uri} is {KINDS[store_kind(uri)]}: load the archive into it with pagemill milvus-load OUT --vectors "
            f"{uri}, or use a new --out")


def _store_class(uri: str):
    if store_kind(uri) == "lancedb":
        from operators.stores.lancedb.store import LanceStore

        return LanceStore
    from operators.stores.milvus.store import MilvusStore

    return MilvusStore


def open_vectors(uri: str, options: dict, s3_options=None, out: str | None = None) -> VectorStore:
    """The vector store a URI names, configured from the store's options (pipelines/options.py,
    group ``store``, defaults filled in; ``out``: the OUT a relative store lives in). Nothing is
    connected yet."""
    return _store_class(uri).from_options(uri, options, s3_options=s3_options, out=out)


def check_store_options(options: dict, out: str) -> str | None:
    """What is wrong with the store's options for an OUT, naming the key; None when nothing is."""
    try:
        uri = given_uri(options) or default_vectors_uri(out) or ""
    except UsageError as e:
        return str(e)
    return _store_class(uri or "milvus").check_options(options, out)


def store_of_uri(options: dict, out: str) -> str:
    """The kind of store the options send the vectors to (OUT's own default when none is named)."""
    uri = given_uri(options) or default_vectors_uri(out)
    return store_kind(uri) if uri else "milvus"


def storage_lines(held: dict | None) -> list[str]:
    """The report's lines of a store's own measured section (``VectorStore.measure``'s ``store``)."""
    if not held:
        return []
    if held.get("kind") == "lancedb":
        from operators.stores.lancedb.storage import format_storage

        return format_storage(held)
    return []


def local_file(uri: str) -> str | None:
    """The local file or folder a store URI names (an embedded store), or None for a server or
    an object store."""
    if store_kind(uri) == "lancedb":
        path = uri[len("lancedb:"):]
        return path if path and "://" not in path else None
    from operators.stores.milvus.client import is_lite_uri

    return uri if is_lite_uri(uri) else None


__all__ = ["KINDS", "IndexShape", "Suspects", "VectorStore", "VectorStoreError", "check_recorded", "check_store_options",
           "default_vectors_uri", "given_uri", "local_file", "open_vectors", "record", "storage_lines", "store_kind",
           "store_of_uri", "vectors_uri"]
