"""Milvus reader: the plan of an existing index, rebuilt from the server's collections, and the
vectors it holds (for search's stage 2 and for report). Readers never create anything: a Milvus
Lite file that does not exist is an error, not a new database."""

from __future__ import annotations

import json
import os

import numpy as np

from operators import schema as S
from operators.stores.milvus.client import MilvusClientBase, from_milvus, patch_index, redact_uri
from operators.stores.milvus.schema import (
    BM25_LAYOUT,
    CORPUS,
    TEXT_LAYOUT,
    VECTOR,
    FieldPlan,
    IndexSpec,
    MilvusError,
    MilvusPlan,
)


class MilvusReader(MilvusClientBase):
    notes: list[str] = []
    _copy: str | None = None

    def _connect(self) -> None:
        if self.conn.lite and not os.path.exists(self.uri):
            raise MilvusError(f"no Milvus Lite database at {self.uri} (is this the OUT of a pagemill ingest? "
                              f"else pass --milvus)")
        if self.conn.lite and not os.access(self.uri, os.W_OK):
            self._open_a_copy()
        super()._connect()

    def _open_a_copy(self) -> None:
        """Milvus Lite opens its database to write (its lock file), even to read: a read-only
        one (a mounted archive, a snapshot) is read from a copy, removed at ``close``."""
        import dataclasses
        import shutil
        import tempfile

        from operators.humanize import human_bytes

        self._copy = tempfile.mkdtemp(prefix="pagemill-lite-")
        copy = os.path.join(self._copy, os.path.basename(self.uri.rstrip("/")))
        shutil.copytree(self.uri, copy, ignore=shutil.ignore_patterns("LOCK"))
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(copy) for f in files)
        self.notes = [f"{self.uri} is read-only: Milvus Lite reads a copy of it ({human_bytes(size)} in {self._copy}, "
                      f"removed at the end)"]
        self.conn = dataclasses.replace(self.conn, uri=copy)

    def close(self) -> None:
        super().close()
        if self._copy:
            import shutil

            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None

    @property
    def text_collection(self) -> str:
        return f"{self.collection}_text"

    @property
    def patches_collection(self) -> str:
        return f"{self.collection}_patches"

    def discover(self) -> MilvusPlan:
        """The plan of an existing index, from the collections on the server."""
        self.plan = self._guard("describe", self._discover)
        return self.plan

    def _discover(self) -> MilvusPlan:
        from pymilvus import DataType

        vtypes = {int(DataType.FLOAT_VECTOR): "float", int(DataType.FLOAT16_VECTOR): "float16",
                  int(DataType.BINARY_VECTOR): "binary", int(DataType.INT8_VECTOR): "int8"}
        names = [c for c in self.client.list_collections() if c.startswith(f"{self.collection}_")]
        if self.pages_collection not in names:
            raise MilvusError(f"no collection {self.pages_collection} at {redact_uri(self.uri)}: nothing indexed under "
                              f"--collection {self.collection}")
        fields, partition_key, mode = [], False, "rows"
        for name in sorted(names):
            if name == self.pages_collection:
                layout_of = lambda f: f.replace("_", "-")  # noqa: E731  (sv_fde -> sv-fde)
                page_mode = "page"
            elif name == self.text_collection:
                layout_of = lambda f: TEXT_LAYOUT  # noqa: E731
                page_mode = "chunks"  # (one row per page, sv_text, in an index built before chunks)
            elif name.startswith(f"{self.collection}_sv_"):
                layout_of = lambda f: f.replace("_", "-")  # noqa: E731
                page_mode = "page"
            elif name.startswith(self.patches_collection):
                rest = name[len(self.patches_collection):].lstrip("_")
                layout_of = lambda f, rest=rest: "mv" + (f"-{rest.replace('_', '-')}" if rest else "")  # noqa: E731
                page_mode = "rows"
            else:
                continue
            desc = self.client.describe_collection(name)
            for f in desc.get("fields", []):
                if f["name"] == CORPUS:
                    partition_key = True
                if int(f["type"]) == int(DataType.SPARSE_FLOAT_VECTOR) and name == self.text_collection:
                    fields.append(FieldPlan(BM25_LAYOUT, name, f["name"], "sparse", 0, "chunks",
                                            IndexSpec("SPARSE_INVERTED_INDEX")))
                elif int(f["type"]) in vtypes:
                    if name == self.text_collection and f["name"] == "sv_text":
                        page_mode = "page"
                    dim = int(f.get("params", {}).get("dim", 0))
                    fields.append(FieldPlan(layout_of(f["name"]), name, f["name"], vtypes[int(f["type"])], dim, page_mode,
                                            IndexSpec()))
            for f in desc.get("struct_array_fields", []) or []:
                mode = "struct"
                sub = next((x for x in f.get("fields", []) if x.get("name") == VECTOR), {})
                fields.append(FieldPlan(f["name"].replace("_", "-"), name, f["name"], "struct",
                                        int(sub.get("params", {}).get("dim", 0)), "struct", IndexSpec("HNSW")))
        return MilvusPlan(self.server, self.collection, fields, mode, partition_key)

    def fetch_vectors(self, layout: str, page_ids: list[str]) -> dict[str, np.ndarray]:
        """A multi-vector layout's vectors of some pages, read back from Milvus (float32; a binary
        field decodes to +-1 like the Parquet layout)."""
        return self._guard("query", self._fetch_vectors, layout, page_ids)

    def _fetch_vectors(self, layout: str, page_ids: list[str]) -> dict[str, np.ndarray]:
        fp = self.plan.by_layout(layout) if self.plan else None
        if fp is None or fp.mode == "page":
            held = [f.layout for f in (self.plan.fields if self.plan else []) if f.mode != "page"]
            raise MilvusError(f"--vectors-from milvus: layout {layout!r} is not in Milvus (it holds: {', '.join(held) or 'none'})")
        self.client.load_collection(fp.collection)
        out: dict[str, list] = {}
        for start in range(0, len(page_ids), 20):
            chunk = json.dumps(page_ids[start:start + 20])
            if fp.mode == "struct":
                for r in self.client.query(fp.collection, filter=f"{S.PAGE_ID} in {chunk}", output_fields=[S.PAGE_ID, fp.field]):
                    out[r[S.PAGE_ID]] = [(j, s[VECTOR]) for j, s in enumerate(r[fp.field])]
                continue
            from operators.stores.milvus.schema import PATCH_ID

            for r in self.client.query(fp.collection, filter=f"{S.PAGE_ID} in {chunk}",
                                       output_fields=[S.PAGE_ID, PATCH_ID, VECTOR]):
                out.setdefault(r[S.PAGE_ID], []).append((patch_index(r[PATCH_ID]), r[VECTOR]))
        return {pid: from_milvus([v for _, v in sorted(rows, key=lambda x: x[0])], fp) for pid, rows in out.items()}
