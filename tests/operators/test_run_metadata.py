"""A run's ``pagemill.*`` Parquet metadata: written by ParquetSink, read by RunMetadata."""

from __future__ import annotations

import pyarrow as pa

from operators.io.uris import open_store
from operators.layouts.fde import FdeParams
from operators.layouts.layout import parse_layouts
from operators.stores.parquet import ParquetSink
from operators.stores.run_metadata import RunMetadata


def _write_shard(tmp_path, metadata: dict) -> tuple:
    store = open_store(str(tmp_path / "out"))
    ParquetSink(store, metadata=metadata).write("pages/u0-0.parquet", pa.table({"page_id": ["a", "b"]}))
    return store, "pages/u0-0.parquet"


def test_a_shard_reads_back_what_the_run_wrote(tmp_path):
    fde = FdeParams(reps=3, bits=2, proj_dim=8, seed=7)
    layouts = {lay.name: lay.params(fde) for lay in parse_layouts(["sv-fde", "mv-bin"])}
    store, key = _write_shard(tmp_path, {"model": "colqwen2-tiny", "weights": "random", "dim": 128,
                                         "corpus": "acme", "text_model": "all-MiniLM-L6-v2", "sv_model": None,
                                         "layouts": layouts})
    meta = RunMetadata.read(store, key)
    assert (meta.model, meta.weights, meta.dim, meta.corpus) == ("colqwen2-tiny", "random", 128, "acme")
    assert (meta.text_model, meta.sv_model) == ("all-MiniLM-L6-v2", None)
    assert set(meta.layouts) == set(layouts) and "sv-fde" in meta.layouts
    assert meta.fde_params() == fde
    assert meta.fde_dim == fde.dim == 3 * 4 * 8


def test_a_shard_without_facts_has_the_defaults(tmp_path):
    store, key = _write_shard(tmp_path, {})
    meta = RunMetadata.read(store, key)
    assert (meta.model, meta.weights, meta.dim, meta.text_model) == (None, None, None, None)
    assert meta.corpus == "default" and meta.layouts == {}
    assert meta.fde_params() is None and meta.fde_dim is None


def test_other_schema_metadata_is_not_the_run(tmp_path):
    schema = pa.schema([]).with_metadata({b"ARROW:schema": b"x", **RunMetadata({"dim": 64}).encode()})
    assert RunMetadata.from_schema(schema).values == {"dim": 64}
    assert RunMetadata({"dim": 64}).updated(model="m").values == {"dim": 64, "model": "m"}
