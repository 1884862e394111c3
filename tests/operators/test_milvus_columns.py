"""Upserts go as column requests built by pagemill (no per-row packing): the same protobuf that
pymilvus' row API builds, and the same collections when written through either."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pymilvus import DataType, MilvusClient
from pymilvus.client.prepare import Prepare

from operators.layouts.layout import LayoutEncoder, parse_layouts
from operators.models import PageEmbedding
from operators.stores.milvus.client import Columns
from operators.stores.milvus.writer import MilvusWriter


def test_column_fields_equal_what_the_row_api_builds_for_every_kind():
    rng = np.random.default_rng(3)
    n = 5
    cols = Columns(n, {
        "k": ("varchar", [f"p{i}:{i}" for i in range(n)]),
        "page_number": ("int32", list(range(n))),
        "f": ("float", rng.standard_normal((n, 8)).astype(np.float32)),
        "f16": ("float16", rng.standard_normal((n, 8)).astype(np.float16)),
        "b": ("binary", rng.integers(0, 256, (n, 2), dtype=np.uint8)),
        "i8": ("int8", rng.integers(-128, 128, (n, 8), dtype=np.int8)),
    })
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("k", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("page_number", DataType.INT32)
    schema.add_field("f", DataType.FLOAT_VECTOR, dim=8)
    schema.add_field("f16", DataType.FLOAT16_VECTOR, dim=8)
    schema.add_field("b", DataType.BINARY_VECTOR, dim=16)
    schema.add_field("i8", DataType.INT8_VECTOR, dim=8)
    theirs = Prepare.row_upsert_param("c", cols.rows()[1:4], "", schema.to_dict()["fields"], [], enable_dynamic=False)

    from pymilvus.grpc_gen import milvus_pb2

    ours = milvus_pb2.UpsertRequest(collection_name="c", num_rows=3)
    cols.to_field_data(ours.fields_data, 1, 4)
    by_name = {fd.field_name: fd for fd in theirs.fields_data}
    assert set(by_name) == set(cols.fields) and theirs.num_rows == ours.num_rows
    for fd in ours.fields_data:
        ref = by_name[fd.field_name]
        assert (fd.type, fd.scalars, fd.vectors) == (ref.type, ref.scalars, ref.vectors), fd.field_name


def _pages(n_pages: int = 4) -> tuple[pa.Table, list]:
    layouts = parse_layouts(["mv-pool3"])
    rng = np.random.default_rng(0)
    embs = []
    for i in range(n_pages):
        k = 10 + 4 * i
        v = rng.standard_normal((k, 128)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        embs.append(PageEmbedding(vectors=v, patch_offset=0, n_patches=k, grid_h=2, grid_w=k // 2))
    enc = LayoutEncoder(layouts, 128).columns(embs)
    mv = [e.vectors.astype(np.float16) for e in embs]
    table = pa.table({"page_id": [f"d{i // 2}-p{i:06d}" for i in range(n_pages)], "doc_id": [f"d{i // 2}" for i in range(n_pages)],
                      "source_uri": [f"file:///d{i // 2}.pdf" for i in range(n_pages)],
                      "doc_version": ["1-2"] * n_pages, "page_number": pa.array([i % 2 for i in range(n_pages)], pa.int32()),
                      "mv": pa.array([m.tolist() for m in mv], pa.list_(pa.list_(pa.float16(), 128))),
                      "sv_mean": pa.array([e.vectors.mean(0).tolist() for e in embs], pa.list_(pa.float32(), 128)),
                      "mv_pool3": enc["mv_pool3"]})
    return table, layouts


def _dump(sink: MilvusWriter) -> dict[str, list]:
    out = {}
    for c in sink.collections:
        key = "patch_id" if c.endswith("patches") or "patches_" in c else "page_id"
        rows = sink.client.query(c, filter=f'{key} != ""', output_fields=["*"], consistency_level="Strong", limit=10000)
        out[c.split("_", 1)[1]] = sorted(({k: (np.round(np.asarray(v, np.float32), 6).tolist() if isinstance(v, list) else v)
                                           for k, v in r.items()} for r in rows), key=lambda r: r[key])
    return out


def test_column_and_row_upserts_give_the_same_collections(tmp_path):
    table, layouts = _pages()
    dumps = []
    for name, columnar in (("viacols", None), ("viarows", False)):
        sink = MilvusWriter(str(tmp_path / "m.db"), name, 128, layouts=layouts)
        sink.setup()
        sink._columnar = columnar  # False: the row API, as with a pymilvus that lacks the column parts
        sink.write_pages(table)
        sink.write_pages(table)  # an upsert: the same rows again replace themselves
        assert sink.upsert_path == ("columns" if columnar is None else "rows")
        dumps.append(_dump(sink))
        sink.close()
    assert dumps[0] == dumps[1]
    assert len(dumps[0]["pages"]) == 4
    assert len(dumps[0]["patches"]) == sum(10 + 4 * i for i in range(4))
    assert {r["patch_id"] for r in dumps[0]["patches"]} >= {"d0-p000000:0", "d1-p000003:21"}
