"""Rebuild an index's vector store from its Parquet archive alone (``pagemill milvus-load``).

For a new cluster, a changed index type or vector layout, or after losing the store. The
committed shards (from the ledger, so a half-written unit is never loaded) are streamed in
batches of ``batch_pages`` rows, one shard at a time: memory holds one batch, not the corpus.
``recreate`` drops the index's tables first (needed to change a field's type or index).
"""

from __future__ import annotations

import io
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from operators import schema as S
from operators.errors import UsageError
from operators.io.store import OutputStore
from operators.layouts.layout import parse_layouts
from operators.stores.door import IndexShape, VectorStore
from operators.stores.run_metadata import RunMetadata
from pipelines.index.search import recorded_metadata
from pipelines.out.identity import active_generation
from pipelines.out.keys import PAGES_PREFIX
from pipelines.out.ledger import Ledger


def _open(store: OutputStore, key: str) -> pq.ParquetFile:
    local = store.local_path(key)
    return pq.ParquetFile(local) if local else pq.ParquetFile(io.BytesIO(store.read_bytes(key)))


def archive_shape(store: OutputStore, schema: pa.Schema, base: str, corpus: str | None = None) -> IndexShape:
    """What the archive's index is, from the shards' metadata and schema."""
    meta = recorded_metadata(store)
    text_dim = schema.field(S.SV_TEXT).type.list_size if S.SV_TEXT in schema.names else None
    sv_dim = schema.field(S.SV_VLM).type.list_size if S.SV_VLM in schema.names else None
    return IndexShape(base=base, dim=meta.dim, layouts=tuple(parse_layouts(list(meta.layouts))), fde_dim=meta.fde_dim,
                      text_dim=text_dim, page_vectors=(("sv-vlm", sv_dim),) if sv_dim else (),
                      corpus=corpus or meta.corpus,
                      # an archive of an index built before chunks: its text layer stays a vector a page
                      text_chunks=not (text_dim and S.TEXT_CHUNKS not in schema.names))


def rebuild(store: OutputStore, vectors: VectorStore, base: str, *, recreate: bool = False, batch_pages: int = 256,
            corpus: str | None = None, bulk_dir: str | None = None, log=None) -> dict:
    """Load ``vectors`` (``base``: the index's tables) from the committed shards; what was loaded.
    ``corpus``: the corpus value written (default: the one recorded in each shard)."""
    log = log or sys.stderr  # looked up now: a stream bound at import time may be closed since
    ledger = Ledger(store, active_generation(store))
    ledger.load()
    shards = sorted(k for k in ledger.state.files if k.startswith(PAGES_PREFIX + "/"))
    if not shards:
        raise UsageError(f"no committed shards under {store.uri}/pages: run pagemill ingest first")
    schema = _open(store, shards[-1]).schema_arrow
    vectors.prepare(archive_shape(store, schema, base, corpus), recreate=recreate)
    columns = vectors.archive_columns(schema.names)

    def batches():
        for key in shards:
            pf = _open(store, key)
            shard_corpus = corpus or RunMetadata.from_schema(pf.schema_arrow).corpus
            for batch in pf.iter_batches(batch_size=batch_pages, columns=columns):
                yield key, pa.Table.from_batches([batch]), shard_corpus

    try:
        return vectors.load(batches(), len(shards), bulk_dir=bulk_dir, log=log)
    finally:
        vectors.close()


def remember_store(store: OutputStore, vectors: VectorStore, out: str) -> str | None:
    """After a load into another store than the one the index records: ``_index.json`` records
    this one (later runs and readers use it); a note for the user, or None."""
    from operators.stores import record
    from pipelines.out.identity import load_state, save_state

    state = load_state(store)
    if state is None or state.active is None:
        return None
    now = {**record(vectors.uri, out), **vectors.record()}
    was = state.store or {"kind": "milvus", "uri": None}
    if (was.get("kind"), was.get("uri")) == (now["kind"], now["uri"]):
        return None
    state.store = now
    save_state(store, state)
    return f"the index's vectors are in {vectors.label} from now on (OUT/_index.json); runs and readers use it"
