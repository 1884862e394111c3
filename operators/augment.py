"""What an index gains after the fact, from the archive: added layouts, an added text or
single-vector model, for pages already committed.

The full multi-vector ``mv`` is in every shard, so a new layout (pooled, encoded, FDE) is
computed from it by the CPU, with no model: bit for bit what an ingest would have written, since
ingest computes layouts from the same archived float16 vectors. A text model reads the pages'
text from the shards (no rendering). A single-vector model needs the pages' pixels: the shard's
documents are rendered again at the index's budget (a document whose source changed since is
left to the next ingest, which re-embeds it anyway). Each shard is rewritten whole with the new
columns under a new key, and the new fields' rows written to the vector store; the driver's ledger
record swaps the old key for the new one (a rewrite), so it is exactly-once and resumable like
any commit: a shard that already has the columns is skipped. The vector store's writer gets only
the new layouts' fields.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from operators import schema as S
from operators.counters import Stage
from operators.encode import sv_vectors
from operators.io.store import OutputStore
from operators.layouts.encodings import read_ragged
from operators.layouts.layout import Layout, LayoutEncoder
from operators.models import PageEmbedding
from operators.stores.parquet import ParquetSink
from operators.stores.run_metadata import RunMetadata


def augmented_key(key: str, job: str) -> str:
    stem = key.rsplit(".parquet", 1)[0]
    return f"{stem}~{job}.parquet"


def archived_embeddings(table: pa.Table, dim: int) -> list[PageEmbedding]:
    """Each page's multi-vector as the archive holds it (float16, as float32)."""
    offsets, flat = read_ragged(table[S.MV], "fp16", dim)
    flat = flat.astype(np.float32)
    meta = {c: table[c].to_pylist() for c in (S.PATCH_OFFSET, S.N_PATCHES, S.PATCH_GRID_H, S.PATCH_GRID_W)}
    return [PageEmbedding(flat[offsets[i]:offsets[i + 1]], meta[S.PATCH_OFFSET][i], meta[S.N_PATCHES][i],
                          meta[S.PATCH_GRID_H][i], meta[S.PATCH_GRID_W][i]) for i in range(table.num_rows)]


class AugmentShards(Stage):
    """Shard keys in (a ``key`` column), one result per shard out (``key``, ``new_key``, ``pages``,
    ``result`` JSON)."""

    name = "augment"
    extra_counters = {"files": 0, "skipped": 0, "store_rows": 0}

    def __init__(self, store: OutputStore, job: str, pages_schema: pa.Schema, dim: int, layouts: list[Layout],
                 fde=None, text_model: str | None = None, sv=None, vectors=None, device: str = "auto"):
        """``layouts``: the layouts to add; ``sv``: (sv model spec, visual ModelSpec, source,
        pixel budget, render limits) to add a single-vector model; ``vectors``: the vector store's
        writer of the added fields only (``VectorStore.writer(layouts=...)``)."""
        self.store = store
        self.job = job
        self.pages_schema = pages_schema
        self.dim = dim
        self.layouts = layouts
        self.fde = fde
        self.text_model = text_model
        self.sv = sv
        self.vectors = vectors
        self.device = device
        self.wanted = [f.name for f in pages_schema]
        self._text = self._sv = self._render = None
        super().__init__()

    def setup(self) -> None:
        if self.text_model and self._text is None:
            from operators.models.text import text_embedder

            self._text = text_embedder(self.text_model, device=self.device)
            self._text.load()
        if self.sv and self._sv is None:
            from operators.embed import EmbedSinglePages
            from operators.render import RenderPages

            sv_model, spec, source, budget, limits = self.sv
            self._sv = EmbedSinglePages(sv_model, spec)
            self._sv.setup()
            self._render = RenderPages(source, budget, limits)
            self._render.setup()
        if self.vectors is not None and not getattr(self, "_open", False):
            self.vectors.open()
            self._open = True

    def close(self) -> None:
        if self._render is not None:
            self._render.close()
        if self.vectors is not None and getattr(self, "_open", False):
            self.vectors.close()
            self._open = False

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.setup()
        self.counters.start()
        t0 = self.counters.mark()
        rows = {"key": [], "new_key": [], "pages": [], "result": []}
        for key in batch["key"].to_pylist():
            new_key, pages, res = self._augment(key)
            rows["key"].append(key)
            rows["new_key"].append(new_key)
            rows["pages"].append(pages)
            rows["result"].append(json.dumps(res))
        self.counters.busy(t0)
        self.stats["batches"] += 1
        return pa.table(rows)

    def _augment(self, key: str) -> tuple[str | None, int, dict]:
        have = pq.read_schema(self.store.open_input(key)).names
        missing = [c for c in self.wanted if c not in have]
        if not missing:
            self.stats["skipped"] += 1
            return None, 0, {"skipped": True}
        table = ParquetSink(self.store).read(key)
        cols = {}
        if self._sv is not None and S.SV_VLM in missing:
            cols[S.SV_VLM] = self._sv_column(table)
        if self.layouts:
            embs = archived_embeddings(table, self.dim)
            sv = cols.get(S.SV_VLM, table[S.SV_VLM] if S.SV_VLM in table.column_names else None)
            cols.update(LayoutEncoder([*self.layouts], self.dim, self.fde).columns(embs, sv=sv_vectors(sv) if sv is not None else None))
        if self._text is not None and (S.SV_TEXT in missing or S.TEXT_CHUNKS in missing):
            cols[S.SV_TEXT], cols[S.TEXT_CHUNKS] = self._text_columns(table)
        for name, col in cols.items():
            if name in missing:
                table = table.append_column(self.pages_schema.field(name), col)
        table = table.select([c for c in self.wanted if c in table.column_names]).cast(
            pa.schema([self.pages_schema.field(c) for c in self.wanted if c in table.column_names]),
            safe=False).replace_schema_metadata(table.schema.metadata)
        new_key = augmented_key(key, self.job)
        buf_metadata = dict(RunMetadata.from_schema(table.schema).values)
        buf_metadata["layouts"] = {**buf_metadata.get("layouts", {}),
                                   **{lay.name: lay.params(self.fde) for lay in self.layouts}}
        if self._text is not None:
            buf_metadata["text_model"] = self.text_model
        if self._sv is not None:
            buf_metadata["sv_model"] = self.sv[0]
        ParquetSink(self.store, metadata=buf_metadata).write(new_key, table)
        stored = self.vectors.write(self.job, table) if self.vectors is not None else {"rows": {}}
        sent = stored["rows"]
        self.stats["files"] += 1
        self.stats["pages"] += table.num_rows
        self.stats["store_rows"] += sum(sent.values())
        return new_key, table.num_rows, {"columns": missing, "store_rows": sent, "store": stored,
                                         "docs": sorted(set(table[S.SOURCE_URI].to_pylist()))}

    def _text_columns(self, table: pa.Table) -> tuple[pa.Array, pa.Array]:
        from operators.embed import text_columns
        from operators.models.text import has_text

        texts = table[S.TEXT].to_pylist()
        return text_columns(self._text, texts, [i for i, t in enumerate(texts) if has_text(t)])

    def _sv_column(self, table: pa.Table) -> pa.Array:
        """Render the shard's documents again (their pages of this shard), embed with the
        single-vector model, and line the vectors up with the shard's rows."""
        from operators.embed import fixed_vectors
        from operators.io.sources import DocumentRef
        from operators.render import units_table

        docs = dict(zip(table[S.SOURCE_URI].to_pylist(), table[S.DOC_VERSION].to_pylist()))
        refs = []
        for uri, version in docs.items():
            ref = _ref_for(self._render.source, uri)
            if ref is not None and ref.version == version:  # the committed version: its pages
                refs.append(DocumentRef(ref.uri, ref.version, ref.size))
        want = {pid: i for i, pid in enumerate(table[S.PAGE_ID].to_pylist())}
        d = self._sv.model.dim
        vectors = np.zeros((table.num_rows, d), np.float32)
        found: set[int] = set()
        if refs:
            rendered = self._render(units_table([("augment", refs)]))
            keep = [i for i, pid in enumerate(rendered[S.PAGE_ID].to_pylist()) if pid in want]
            if keep:
                embedded = self._sv(rendered.take(pa.array(keep)))
                for pid, v in zip(embedded[S.PAGE_ID].to_pylist(), embedded[S.SV_VLM].to_pylist()):
                    if v is not None:
                        vectors[want[pid]] = v
                        found.add(want[pid])
        return fixed_vectors(vectors, d, [i not in found for i in range(table.num_rows)])


def _ref_for(source, uri: str):
    """The source's current version of one document (a small shard: no full listing)."""
    import os
    from urllib.parse import unquote, urlparse

    from operators.io.sources import DocumentRef

    p = urlparse(uri)
    if p.scheme == "file":
        path = unquote(p.path)
        if not os.path.isfile(path):
            return None
        st = os.stat(path)
        return DocumentRef(uri, f"{st.st_size}-{st.st_mtime_ns}", st.st_size)
    head = getattr(source, "head", None)
    return head(uri) if head else None


def augment_job_id(names: list[str]) -> str:
    return "a" + hashlib.blake2b(",".join(sorted(names)).encode(), digest_size=4).hexdigest()


