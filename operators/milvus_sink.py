"""Milvus writer: a page-level collection and a patch-level collection, written by upsert.

- ``<name>_pages``: one row per page, primary key ``page_id``, with ``doc_id``, ``doc_version``,
  ``page_number``, ``source_uri`` and ``sv_mean`` (mean of the patch vectors, L2-normalised).
- ``<name>_patches``: one row per vector of the page's multi-vector (primary key
  ``<page_id>:<index>``), so that late interaction works on Milvus Lite, which stores float
  vectors only and has no multi-vector field.

Upserts by stable keys make a replayed unit harmless; rows of a document's older versions are
deleted after the new version is written.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from operators import schema as S

PATCH_ID = "patch_id"
PATCH_INDEX = "patch_index"
VECTOR = "vector"
UPSERT_BATCH_ROWS = 2000
_fault_hook = None  # set by pipelines.faults when PAGEMILL_KILL_AT is set (crash tests only)


class MilvusError(Exception):
    """Milvus cannot be reached or refuses the collection; the message never carries secrets."""


def redact_uri(uri: str) -> str:
    """The URI without user info (``http://user:pw@host`` -> ``http://host``)."""
    p = urlparse(uri)
    if p.username or p.password:
        host = p.hostname + (f":{p.port}" if p.port else "")
        return p._replace(netloc=host).geturl()
    return uri


def is_lite_uri(uri: str) -> bool:
    return urlparse(uri).scheme not in ("http", "https", "tcp", "grpc", "unix")


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


class MilvusSink:
    def __init__(self, uri: str, collection: str = "pagemill", dim: int = 128, token: str | None = None,
                 timeout_s: float = 60.0, text_dim: int | None = None):
        self.uri = uri
        self.collection = collection
        self.dim = dim
        self.text_dim = text_dim
        self._token = token
        self.timeout_s = timeout_s
        self.client = None
        self.rows_written: dict[str, int] = {}

    @property
    def pages_collection(self) -> str:
        return f"{self.collection}_pages"

    @property
    def patches_collection(self) -> str:
        return f"{self.collection}_patches"

    @property
    def text_collection(self) -> str:
        """One row per page that has a text layer (``text:<model>`` runs only)."""
        return f"{self.collection}_text"

    @property
    def collections(self) -> list[str]:
        return [self.pages_collection, self.patches_collection] + ([self.text_collection] if self.text_dim else [])

    def connect(self) -> None:
        """Open the client only (for readers); ``setup`` also creates the collections."""
        from pymilvus import MilvusClient

        if is_lite_uri(self.uri):
            parent = os.path.dirname(os.path.abspath(self.uri))
            os.makedirs(parent, exist_ok=True)
        kwargs = {"uri": self.uri, "timeout": self.timeout_s}
        if self._token:
            kwargs["token"] = self._token
        self.client = MilvusClient(**kwargs)

    def setup(self) -> None:
        self._guard("connect", self.connect, prefix="cannot use")
        self._guard("collection setup", self._ensure_collections, prefix="cannot use")
        for c in self.collections:
            self.rows_written.setdefault(c, 0)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _ensure_collections(self) -> None:
        from pymilvus import DataType

        c = self.client
        specs = {
            self.pages_collection: [
                (S.PAGE_ID, DataType.VARCHAR, dict(is_primary=True, max_length=64)),
                (S.DOC_ID, DataType.VARCHAR, dict(max_length=32)),
                (S.DOC_VERSION, DataType.VARCHAR, dict(max_length=256)),
                (S.SOURCE_URI, DataType.VARCHAR, dict(max_length=4096)),
                (S.PAGE_NUMBER, DataType.INT32, {}),
                (S.SV_MEAN, DataType.FLOAT_VECTOR, dict(dim=self.dim)),
            ],
            self.patches_collection: [
                (PATCH_ID, DataType.VARCHAR, dict(is_primary=True, max_length=80)),
                (S.PAGE_ID, DataType.VARCHAR, dict(max_length=64)),
                (S.DOC_ID, DataType.VARCHAR, dict(max_length=32)),
                (S.DOC_VERSION, DataType.VARCHAR, dict(max_length=256)),
                (PATCH_INDEX, DataType.INT32, {}),
                (VECTOR, DataType.FLOAT_VECTOR, dict(dim=self.dim)),
            ],
        }
        if self.text_dim:
            specs[self.text_collection] = [
                (S.PAGE_ID, DataType.VARCHAR, dict(is_primary=True, max_length=64)),
                (S.DOC_ID, DataType.VARCHAR, dict(max_length=32)),
                (S.DOC_VERSION, DataType.VARCHAR, dict(max_length=256)),
                (S.SV_TEXT, DataType.FLOAT_VECTOR, dict(dim=self.text_dim)),
            ]
        vector_field = {self.pages_collection: S.SV_MEAN, self.patches_collection: VECTOR,
                        self.text_collection: S.SV_TEXT}
        for name, fields in specs.items():
            if c.has_collection(name):
                self._check_dim(name, vector_field[name], self.text_dim if name == self.text_collection else self.dim)
                continue
            schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
            for fname, dtype, kw in fields:
                schema.add_field(fname, dtype, **kw)
            index = c.prepare_index_params()
            index.add_index(vector_field[name], index_type="AUTOINDEX", metric_type="IP")
            c.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

    def _check_dim(self, name: str, field: str, want: int) -> None:
        desc = self.client.describe_collection(name)
        for f in desc.get("fields", []):
            if f.get("name") == field:
                dim = int(f.get("params", {}).get("dim", want))
                if dim != want:
                    raise MilvusError(
                        f"collection {name!r} has {field} dim {dim}, this model produces {want}: "
                        f"use another --collection"
                    )

    def _upsert(self, collection: str, rows: list[dict]) -> None:
        for start in range(0, len(rows), UPSERT_BATCH_ROWS):
            self.client.upsert(collection, rows[start : start + UPSERT_BATCH_ROWS])
            if _fault_hook:
                _fault_hook("milvus_upsert")
        self.rows_written[collection] = self.rows_written.get(collection, 0) + len(rows)

    def _guard(self, what: str, fn, *args, prefix: str | None = None, **kwargs):
        """Run a client call; any failure becomes one MilvusError line naming the URI (no secret)."""
        try:
            return fn(*args, **kwargs)
        except MilvusError:
            raise
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if self._token:
                msg = msg.replace(self._token, "***")
            where = redact_uri(self.uri)
            head = f"{prefix} Milvus at {where}" if prefix else f"Milvus at {where} failed during {what}"
            raise MilvusError(f"{head}: {msg[:300]}") from None

    def write_pages(self, pages: pa.Table) -> None:
        """Upsert the page rows and their patch rows (``pages`` has the ``OUT/pages`` schema)."""
        self._guard("upsert", self._write_pages, pages)

    def _write_pages(self, pages: pa.Table) -> None:
        if pages.num_rows == 0:
            return
        ids = pages[S.PAGE_ID].to_pylist()
        doc_ids = pages[S.DOC_ID].to_pylist()
        versions = pages[S.DOC_VERSION].to_pylist()
        uris = pages[S.SOURCE_URI].to_pylist()
        numbers = pages[S.PAGE_NUMBER].to_pylist()
        sv = pages[S.SV_MEAN].combine_chunks()
        sv = sv.values.to_numpy(zero_copy_only=False).reshape(-1, self.dim)
        self._upsert(self.pages_collection, [
            {S.PAGE_ID: ids[i], S.DOC_ID: doc_ids[i], S.DOC_VERSION: versions[i], S.SOURCE_URI: uris[i],
             S.PAGE_NUMBER: numbers[i], S.SV_MEAN: sv[i].tolist()}
            for i in range(len(ids))
        ])
        mv = pages[S.MV].combine_chunks()
        offsets = mv.offsets.to_numpy()
        flat = mv.values.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, self.dim)
        rows = []
        for i, page_id in enumerate(ids):
            for j in range(offsets[i + 1] - offsets[i]):
                rows.append({PATCH_ID: f"{page_id}:{j}", S.PAGE_ID: page_id, S.DOC_ID: doc_ids[i],
                             S.DOC_VERSION: versions[i], PATCH_INDEX: j, VECTOR: flat[offsets[i] + j].tolist()})
        self._upsert(self.patches_collection, rows)
        if self.text_dim and S.SV_TEXT in pages.column_names:
            text = pages[S.SV_TEXT].to_pylist()
            self._upsert(self.text_collection, [
                {S.PAGE_ID: ids[i], S.DOC_ID: doc_ids[i], S.DOC_VERSION: versions[i], S.SV_TEXT: text[i]}
                for i in range(len(ids)) if text[i] is not None
            ])

    def delete_other_versions(self, doc_versions: dict[str, str | None]) -> None:
        self._guard("delete", self._delete_other_versions, doc_versions)

    def _delete_other_versions(self, doc_versions: dict[str, str | None]) -> None:
        """Delete rows of each doc_id whose version differs (None: delete every row of the doc)."""
        terms = []
        for doc_id, version in sorted(doc_versions.items()):
            term = f'{S.DOC_ID} == "{_escape(doc_id)}"'
            if version is not None:
                term = f'({term} and {S.DOC_VERSION} != "{_escape(version)}")'
            terms.append(term)
        if not terms:
            return
        # One filter per unit, not one per document: two deletes per commit.
        expr = " or ".join(terms)
        for c in self.collections:
            self.client.delete(c, filter=expr)

    def flush(self) -> None:
        for c in self.collections:
            self._guard("flush", self.client.flush, c)

    def count(self, collection: str) -> int:
        res = self._guard("count", self.client.query, collection, filter="", output_fields=["count(*)"],
                          consistency_level="Strong")
        return int(res[0]["count(*)"])
