"""Which collections, fields, vector types and indexes a layout gets on which server: decided
before anything is created, and built as real pymilvus schema objects."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pymilvus import DataType

from operators.layouts.layout import LayoutEncoder, parse_layouts
from operators.stores.milvus.schema import (
    MilvusError,
    build_collection,
    parse_index_specs,
    plan_fields,
    server_info,
)

LITE, V23, V24, V264 = (server_info(v) for v in ("milvus_lite-3.2.2", "v2.3.5-lite", "v2.4.17", "v2.6.4"))
LAYOUTS = parse_layouts(["mv-pool3", "mv-bin", "mv-int8", "mv-bf16", "sv-fde"])


def vtypes(plan) -> dict[str, str]:
    return {f.layout: f.vtype for f in plan.fields}


def test_server_versions():
    assert LITE.lite and LITE.vector_types == ("float",)
    assert not V23.lite and V23.version == (2, 3, 5) and "float16" not in V23.vector_types
    assert "float16" in V24.vector_types and not V24.struct_arrays
    assert V264.struct_arrays and "int8" in V264.vector_types
    assert server_info("something odd").version == (2, 4, 0)


def test_vector_types_follow_the_encoding_where_the_server_has_one():
    kw = dict(fde_dim=2560, mv_mode="rows")
    assert vtypes(plan_fields(LITE, "c", LAYOUTS, 128, **kw)) == {
        "sv-mean": "float", "mv": "float", "mv-pool3": "float", "mv-bin": "float", "mv-int8": "float",
        "mv-bf16": "float", "sv-fde": "float"}
    assert vtypes(plan_fields(V23, "c", LAYOUTS, 128, **kw))["mv-bin"] == "binary"
    assert vtypes(plan_fields(V24, "c", LAYOUTS, 128, **kw)) == {
        "sv-mean": "float", "mv": "float16", "mv-pool3": "float16", "mv-bin": "binary", "mv-int8": "float16",
        "mv-bf16": "float16", "sv-fde": "float"}
    assert vtypes(plan_fields(V264, "c", LAYOUTS, 128, **kw))["mv-int8"] == "int8"


def test_collections_and_the_one_vector_field_limit_of_2_3():
    p23 = plan_fields(V23, "c", LAYOUTS, 128, fde_dim=2560)
    assert {f.layout: f.collection for f in p23.fields} == {
        "sv-mean": "c_pages", "mv": "c_patches", "mv-pool3": "c_patches_pool3", "mv-bin": "c_patches_bin",
        "mv-int8": "c_patches_int8", "mv-bf16": "c_patches_bf16", "sv-fde": "c_sv_fde"}
    p24 = plan_fields(V24, "c", LAYOUTS, 128, fde_dim=2560)
    assert p24.by_layout("sv-fde").collection == "c_pages"
    assert plan_fields(V24, "c", LAYOUTS, 128, fde_dim=2560, milvus_layouts=["mv-pool3"]).collections == [
        "c_pages", "c_patches_pool3"]


def test_index_specs_and_their_errors():
    specs = parse_index_specs(["sv-mean=HNSW:M=32,efConstruction=100", "mv=ivf_pq:nlist=64,m=16,metric=L2", "*=FLAT"])
    assert specs["sv-mean"].params_dict() == {"M": 32, "efConstruction": 100}
    assert specs["mv"].index_type == "IVF_PQ" and specs["mv"].metric == "L2"
    assert specs["*"].index_type == "FLAT"
    for bad, words in [("sv-mean", "LAYOUT=TYPE"), ("mv=NOPE", "unknown index type"),
                       ("mv=HNSW:nlist=3", "has no parameter 'nlist'"), ("mv=HNSW:M", "not key=value")]:
        with pytest.raises(MilvusError, match=words):
            parse_index_specs([bad])


def test_what_the_server_would_refuse_fails_before_anything_is_created():
    with pytest.raises(MilvusError, match=r"mv \(float vectors.*cannot use IVF_PQ on Milvus Lite.*accepts: AUTOINDEX"):
        plan_fields(LITE, "c", LAYOUTS, 128, fde_dim=2560, index_specs=parse_index_specs(["mv=IVF_PQ"]))
    with pytest.raises(MilvusError, match="m=48 must divide the dimension 128"):
        plan_fields(V24, "c", LAYOUTS, 128, fde_dim=2560, index_specs=parse_index_specs(["mv=IVF_PQ:m=48"]))
    with pytest.raises(MilvusError, match="metric IP does not apply to binary"):
        plan_fields(V24, "c", LAYOUTS, 128, fde_dim=2560, index_specs=parse_index_specs(["mv-bin=BIN_FLAT:metric=IP"]))
    with pytest.raises(MilvusError, match="struct needs Milvus >= 2.6.4"):
        plan_fields(V24, "c", LAYOUTS, 128, fde_dim=2560, mv_mode="struct")
    with pytest.raises(MilvusError, match="milvus_partition_key"):
        plan_fields(V23, "c", LAYOUTS, 128, fde_dim=2560, partition_key=True)
    with pytest.raises(MilvusError, match="not a layout of this run"):
        plan_fields(V24, "c", LAYOUTS, 128, fde_dim=2560, milvus_layouts=["mv-pool9"])


def test_row_collections_as_pymilvus_schemas():
    plan = plan_fields(V24, "c", LAYOUTS, 128, fde_dim=2560, partition_key=True,
                       index_specs=parse_index_specs(["mv-bin=BIN_IVF_FLAT:nlist=64"]))
    schema, index = build_collection(plan, "c_patches_bin")
    fields = {f.name: f for f in schema.fields}
    assert fields["patch_id"].is_primary and fields["vector"].dtype == DataType.BINARY_VECTOR
    assert fields["vector"].params["dim"] == 128 and fields["corpus"].is_partition_key
    idx = {i.field_name: i for i in index}
    assert idx["vector"].index_type == "BIN_IVF_FLAT" and idx["vector"].to_dict()["metric_type"] == "HAMMING"
    schema, index = build_collection(plan, "c_pages")
    assert {f.name for f in schema.fields} >= {"page_id", "sv_mean", "sv_fde", "corpus"}


def test_array_of_structs_on_2_6_4_only_when_asked():
    # auto keeps one row per vector (the path the tests run against real servers)
    assert plan_fields(V264, "c", LAYOUTS, 128, fde_dim=2560).mv_mode == "rows"
    plan = plan_fields(V264, "c", LAYOUTS, 128, fde_dim=2560, mv_mode="struct")
    assert plan.mv_mode == "struct" and plan.collections == ["c_pages"]
    schema, index = build_collection(plan, "c_pages")
    structs = {s.name: s for s in schema.struct_fields}
    assert set(structs) == {"mv", "mv_pool3", "mv_bin", "mv_int8", "mv_bf16"}
    assert structs["mv_pool3"].max_capacity == 4096
    sub = {f.name: f for f in structs["mv_pool3"].fields}
    assert sub["vector"].dtype == DataType.FLOAT_VECTOR and sub["vector"].params["dim"] == 128
    idx = {i.field_name: i for i in index}
    assert idx["mv_pool3[vector]"].index_type == "HNSW" and idx["mv_pool3[vector]"].to_dict()["metric_type"] == "MAX_SIM_IP"
    assert plan_fields(V264, "c", LAYOUTS, 128, fde_dim=2560, mv_mode="rows").collections[1] == "c_patches"


class RecordingClient:
    """Records upserts: the struct rows cannot be sent to a real server here (none >= 2.6.4)."""

    def __init__(self):
        self.rows: dict[str, list] = {}

    def upsert(self, collection, rows):
        self.rows.setdefault(collection, []).extend(rows)


def test_struct_rows_carry_each_pages_vectors():
    from operators.models import PageEmbedding
    from operators.stores.milvus.writer import MilvusWriter as MilvusSink

    layouts = parse_layouts(["mv-pool3"])
    rng = np.random.default_rng(0)
    embs = []
    for n in (12, 20):
        v = rng.standard_normal((n, 128)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        embs.append(PageEmbedding(vectors=v, patch_offset=0, n_patches=n, grid_h=2, grid_w=n // 2))
    cols = LayoutEncoder(layouts, 128).columns(embs)
    mv = [e.vectors.astype(np.float16) for e in embs]
    table = pa.table({"page_id": ["p0", "p1"], "doc_id": ["d", "d"], "source_uri": ["u", "u"], "doc_version": ["v", "v"],
                      "page_number": pa.array([0, 1], pa.int32()),
                      "mv": pa.array([m.tolist() for m in mv], pa.list_(pa.list_(pa.float16(), 128))),
                      "sv_mean": pa.array([e.vectors.mean(0).tolist() for e in embs], pa.list_(pa.float32(), 128)),
                      "mv_pool3": cols["mv_pool3"]})
    sink = MilvusSink("unused", "c", 128, layouts=layouts)
    sink.plan = plan_fields(V264, "c", layouts, 128, mv_mode="struct")
    sink.client = RecordingClient()
    sink.write_pages(table)
    rows = sink.client.rows["c_pages"]
    assert [r["page_id"] for r in rows] == ["p0", "p1"]
    for r, m in zip(rows, mv):
        assert np.array_equal(np.array([s["vector"] for s in r["mv"]], np.float32), m.astype(np.float32))
    assert len(rows[1]["mv_pool3"]) == len(cols["mv_pool3"][1])
    assert set(sink.client.rows) == {"c_pages"}  # no row-per-vector collection in struct mode


def test_transient_failures_are_retried_and_others_are_not():
    from operators.stores.milvus.client import MilvusConnection
    from operators.stores.milvus.writer import MilvusWriter as MilvusSink

    sink = MilvusSink(MilvusConnection("unused.db", retries=3))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("StatusCode.UNAVAILABLE: connection reset by peer")
        return "ok"

    assert sink._call("upsert", flaky) == "ok" and len(calls) == 3

    def refused():
        calls.append(1)
        raise ValueError("field vector: dim mismatch")

    calls.clear()
    with pytest.raises(ValueError):
        sink._call("upsert", refused)
    assert len(calls) == 1  # not transient: no retry


def test_milvus_errors_become_one_readable_line():
    from operators.stores.milvus.client import first_line

    class MilvusException(Exception):
        pass

    raw = MilvusException("<MilvusException: (code=1100, message=invalid parameter[expected=valid index params]"
                          "[actual=invalid index params: M out of range: [2, 2048]]. Check the parameters. "
                          + "More details follow. " * 30 + ")>")
    line = first_line(raw, secrets=[])
    assert line.startswith("invalid parameter[expected=valid index params]") and "MilvusException" not in line
    assert len(line) <= 310 and line.endswith("...") and "Check the parameters." in line  # cut at a sentence
    assert first_line(Exception("token root:s3cr3t refused"), secrets=["root:s3cr3t"]) == "token *** refused"
