"""Milvus for production, against a real Milvus server (2.3.x standalone, TLS, user and
password, a named database): typed vector fields (binary; float16 is >= 2.4, see milvus_schema), configured indexes
(IVF_PQ, HNSW, BIN_FLAT), one row per vector, idempotent writes, version changes, the corpus
partition key, rebuilding from Parquet, and the cascade search over all of it."""

from __future__ import annotations

import json
import re
import shutil
from urllib.parse import urlparse
from urllib.request import url2pathname

import pymupdf
import pytest
from conftest import index_store, read_pages
from milvus_server import ROOT_PASSWORD, ROOT_USER

from operators.io.store import LocalStore
from operators.schema import doc_id_for
from operators.stores.milvus.client import MilvusConnection
from operators.stores.milvus.reader import MilvusReader
from pipelines.cli import main
from pipelines.index.search import search

DB = "pagemill_ci"
QUERY = "quarterly revenue table"
INDEXES = ["mv=IVF_PQ:nlist=16,m=16", "mv-pool3=HNSW:M=8,efConstruction=64", "mv-bin=BIN_FLAT"]


@pytest.fixture(scope="module")
def server(milvus_server, monkeypatch_module):
    client = milvus_server.client()
    if DB not in client.list_databases():
        client.create_database(DB)
    client.close()
    monkeypatch_module.setenv("MILVUS_PASSWORD", ROOT_PASSWORD)
    return milvus_server


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def conn_args(server) -> list[str]:
    return ["--milvus", server.uri, "--milvus-user", ROOT_USER, "--milvus-db", DB, "--milvus-ca-file", server.ca_file,
            "--milvus-server-name", "localhost"]


def server_store(server, out, collection: str):
    """The index's store on the server, as the commands open it (the password from the environment)."""
    return index_store(out, uri=server.uri, base=collection, milvus_user=ROOT_USER, milvus_db=DB,
                       milvus_ca_file=server.ca_file, milvus_server_name="localhost")


def connection(server) -> MilvusConnection:
    return MilvusConnection(server.uri, user=ROOT_USER, password=ROOT_PASSWORD, db_name=DB, ca_file=server.ca_file,
                            server_name="localhost")


def ingest(source, out, server, *extra: str) -> dict:
    summary = out.parent / f"{out.name}-summary.json"
    rc = main(["ingest", str(source), "--out", str(out), "--executor", "local", "--layouts", "mv-pool3,mv-bin,sv-fde",
               "--summary", str(summary), "--quiet", *conn_args(server), *extra])
    assert rc == 0
    return json.loads(summary.read_text())


def counts(server, collection: str) -> dict[str, int]:
    client = server.client(db_name=DB)
    try:
        names = sorted(c for c in client.list_collections() if c.startswith(collection + "_"))
        return {c: int(client.query(c, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
                for c in names}
    finally:
        client.close()


def import_tasks(server, collection: str) -> dict[str, int]:
    """The server's import tasks for each of the index's collections (its own task list, not
    pagemill's)."""
    client = server.client(db_name=DB)
    try:
        handler = client._get_connection()
        names = sorted(c for c in client.list_collections() if c.startswith(collection + "_"))
        return {c: len(handler.list_bulk_insert_tasks(0, c, context=client._generate_call_context())) for c in names}
    finally:
        client.close()


def search_in(server, out, collection: str, stage1: str) -> list[dict]:
    """The cascade against one collection, both stages from Milvus."""
    vectors = server_store(server, out, collection)
    try:
        return search(QUERY, LocalStore(out), vectors, k=10, candidates=20, stage1_mode=stage1, rerank="mv-pool3",
                      vectors_from="milvus")
    finally:
        vectors.close()


@pytest.fixture(scope="module")
def direct(server, small_corpus, tmp_path_factory):
    """The small corpus, ingested straight into the server."""
    source = tmp_path_factory.mktemp("srv-src")
    shutil.copytree(small_corpus.root, source, dirs_exist_ok=True)
    out = tmp_path_factory.mktemp("srv-out")
    summary = ingest(source, out, server, "--collection", "direct", *sum((["--milvus-index", i] for i in INDEXES), []))
    return source, out, summary


def test_typed_fields_and_configured_indexes(server, direct):
    _, out, summary = direct
    fields = summary["milvus"]["fields"]
    assert summary["milvus"]["server"] == f"Milvus {server.version}" and summary["milvus"]["mv_mode"] == "rows"
    assert {k: (f["vector_type"], f["index"]) for k, f in fields.items()} == {
        "mv": ("float", "IVF_PQ"), "mv-pool3": ("float", "HNSW"), "mv-bin": ("binary", "BIN_FLAT"),
        "sv-mean": ("float", "AUTOINDEX"), "sv-fde": ("float", "AUTOINDEX")}
    client = server.client(db_name=DB)
    try:
        for layout, collection, field, itype in [("mv", "direct_patches", "vector", "IVF_PQ"),
                                                 ("mv-pool3", "direct_patches_pool3", "vector", "HNSW"),
                                                 ("mv-bin", "direct_patches_bin", "vector", "BIN_FLAT")]:
            idx = client.describe_index(collection, field)
            assert idx["index_type"] == itype, layout
        assert client.describe_index("direct_patches_bin", "vector")["metric_type"] == "HAMMING"
    finally:
        client.close()
    pages = read_pages(out)
    n = pages.num_rows
    vectors = sum(pages["n_vectors"].to_pylist())
    pooled = sum(len(v) for v in pages["mv_pool3"].to_pylist())
    # v2.3 holds one vector field per collection: sv-fde gets a page-level collection of its own.
    assert fields["sv-fde"]["collection"] == "direct_sv_fde"
    assert counts(server, "direct") == {"direct_pages": n, "direct_patches": vectors, "direct_patches_bin": vectors,
                                        "direct_patches_pool3": pooled, "direct_sv_fde": n}
    assert summary["milvus"]["row_counts"] == counts(server, "direct")


def test_vectors_read_back_equal_parquet(server, direct):
    """Rows come back equal to the Parquet layouts: fp16 widened exactly, binary as the same bits."""
    import numpy as np

    from operators.layouts.layout import LayoutScorer, parse_layout

    _, out, _ = direct
    pages = read_pages(out).slice(0, 4)
    ids = pages["page_id"].to_pylist()
    sink = MilvusReader(connection(server), "direct")
    sink.connect()
    sink.discover()
    try:
        for layout in ("mv-pool3", "mv-bin", "mv"):
            got = sink.fetch_vectors(layout, ids)
            want = LayoutScorer(parse_layout(layout), pages, 128).docs
            for pid, w in zip(ids, want):
                assert np.array_equal(got[pid], w), layout
    finally:
        sink.close()


def test_search_over_the_server_equals_brute_force(server, direct):
    from operators.layouts.layout import LayoutScorer, parse_layout
    from operators.models import ModelSpec, adapter_for

    _, out, _ = direct
    pages = read_pages(out)
    q = adapter_for(ModelSpec()).embed_queries([QUERY])[0]
    import numpy as np

    scores = LayoutScorer(parse_layout("mv"), pages, 128).scores(q)
    expected = [pages["page_id"][int(i)].as_py() for i in np.argsort(-scores, kind="stable")[:10]]
    vectors = server_store(server, out, "direct")
    try:
        for stage1 in ("sv-mean", "sv-fde", "patches", "mv-bin", "mv-pool3"):
            got = search(QUERY, LocalStore(out), vectors, k=10, candidates=pages.num_rows, stage1_mode=stage1,
                         vectors_from="milvus")
            assert [r["page_id"] for r in got] == expected, stage1
    finally:
        vectors.close()


def test_same_job_twice_and_a_changed_version(server, direct, tmp_path):
    source, out, _ = direct
    before = counts(server, "direct")
    # The same job again, from a fresh output root: every row is upserted again, none added.
    again = ingest(source, tmp_path / "again", server, "--collection", "direct")
    assert again["pages"]["indexed"] > 0 and counts(server, "direct") == before
    # One document replaced by a new version with one more page: its old rows go, everywhere.
    doc = sorted(set(read_pages(out)["source_uri"].to_pylist()))[0]
    path = url2pathname(urlparse(doc).path)
    with pymupdf.open(path) as d:
        n_old = d.page_count
        d.fullcopy_page(0)
        d.save(path + ".tmp", garbage=1)
    shutil.move(path + ".tmp", path)
    changed = ingest(source, out, server, "--collection", "direct")
    assert changed["pages"]["indexed"] == n_old + 1
    after = counts(server, "direct")
    assert after["direct_pages"] == before["direct_pages"] + 1
    doc_id = doc_id_for(doc)
    client = server.client(db_name=DB)
    try:
        versions = {r["doc_version"] for c in ("direct_pages", "direct_patches", "direct_patches_bin", "direct_patches_pool3")
                    for r in client.query(c, filter=f'page_id like "{doc_id}-%"', output_fields=["doc_version"],
                                          consistency_level="Strong", limit=16384)}
    finally:
        client.close()
    assert versions == {changed_version(out, doc)}  # only the new version's rows are left
    assert after["direct_patches"] == sum(read_pages(out)["n_vectors"].to_pylist())


def changed_version(out, doc: str) -> str:
    pages = read_pages(out)
    return {v for u, v in zip(pages["source_uri"].to_pylist(), pages["doc_version"].to_pylist()) if u == doc}.pop()


def test_milvus_load_rebuilds_the_same_index(server, direct, capsys):
    _, out, _ = direct
    rc = main(["milvus-load", str(out), "--collection", "loaded", "--batch-pages", "3", "--json",
               *sum((["--milvus-index", i] for i in INDEXES), []), *conn_args(server)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    direct_counts = counts(server, "direct")
    loaded = counts(server, "loaded")
    assert {c.replace("loaded", "direct"): n for c, n in loaded.items()} == direct_counts
    assert summary["pages"] == read_pages(out).num_rows
    # Same search results as the direct sink, stage 1 and stage 2 both from Milvus.
    first, second = (search_in(server, out, c, "mv-pool3") for c in ("direct", "loaded"))
    assert [r["page_id"] for r in first] == [r["page_id"] for r in second]
    assert [r["score"] for r in first] == [r["score"] for r in second]
    # --recreate with another index type for mv: the collection is rebuilt with it.
    assert main(["milvus-load", str(out), "--collection", "loaded", "--recreate", "--milvus-index", "mv=HNSW",
                 *conn_args(server)]) == 0
    client = server.client(db_name=DB)
    try:
        assert client.describe_index("loaded_patches", "vector")["index_type"] == "HNSW"
    finally:
        client.close()
    assert counts(server, "loaded") == loaded


def _collections(server, prefix: str) -> list[str]:
    client = server.client(db_name=DB)
    try:
        return [c for c in client.list_collections() if c.startswith(prefix)]
    finally:
        client.close()


def test_a_refused_index_fails_before_anything_is_written(server, small_corpus, tmp_path, capsys):
    # Refused by pagemill's table of what v2.3 accepts: nothing is created at all.
    rc = main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "a"), "--executor", "local", "--quiet",
               "--collection", "refused", "--milvus-index", "sv-mean=HNSW_SQ", *conn_args(server)])
    err = capsys.readouterr().err
    assert rc == 2 and "sv-mean" in err and "HNSW_SQ" in err and "it accepts: AUTOINDEX, FLAT" in err
    assert err.count("pagemill: error") == 1
    # Refused by the server itself (a parameter out of range): one line, no half-made collection.
    rc = main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "b"), "--executor", "local", "--quiet",
               "--collection", "refused", "--milvus-index", "sv-mean=HNSW:M=100000", *conn_args(server)])
    err = capsys.readouterr().err
    assert rc == 1 and "refused collection refused_pages" in err and "HNSW" in err
    assert _collections(server, "refused_") == []
    assert not list((tmp_path / "a").glob("pages/*")) and not list((tmp_path / "b").glob("pages/*"))


def test_wrong_password_and_missing_ca_are_one_line_without_secrets(server, small_corpus, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setenv("MILVUS_PASSWORD", "not-the-password-4711")
    rc = main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "o"), "--executor", "local", "--quiet",
               *conn_args(server)])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot use Milvus at https://127.0.0.1" in err
    assert "not-the-password-4711" not in err and ROOT_PASSWORD not in err
    rc = main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "o"), "--executor", "local", "--quiet",
               *conn_args(server)[:-4], "--milvus-ca-file", str(tmp_path / "nope.pem")])
    err = capsys.readouterr().err
    assert rc == 2 and "milvus_ca_file: no such file" in err


def test_partition_key_keeps_tenants_apart(server, small_corpus, tmp_path, capsys):
    """On Milvus Lite (the partition key works there); Milvus 2.3 refuses it up front, because its
    upserts into a partition-key collection lose rows (seen: 1 of 5 rows left)."""
    rc = main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "refused"), "--executor", "local", "--quiet",
               "--collection", "tenants", "--milvus-partition-key", *conn_args(server)])
    assert rc == 2 and "milvus_partition_key" in capsys.readouterr().err
    files = sorted(p for p in small_corpus.root.rglob("*.pdf") if p.resolve().as_uri() in small_corpus.ok_pages)
    half = len(files) // 2
    lite = str(tmp_path / "tenants.db")
    roots = {}
    for tenant, group in (("acme", files[:half]), ("globex", files[half:])):
        src = tmp_path / f"src-{tenant}"
        for f in group:
            (src / f.relative_to(small_corpus.root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, src / f.relative_to(small_corpus.root))
        out = tmp_path / f"out-{tenant}"
        rc = main(["ingest", str(src), "--out", str(out), "--executor", "local", "--quiet", "--collection", "tenants",
                   "--milvus-partition-key", "--corpus", tenant, "--milvus", lite, "--summary", str(tmp_path / "s.json")])
        assert rc == 0
        # The other tenant's rows are not unexplained rows of this one: new documents, no deletes.
        assert json.loads((tmp_path / "s.json").read_text())["milvus"]["delete_calls"] == 0
        roots[tenant] = (out, set(read_pages(out)["page_id"].to_pylist()))
    assert half > 0 and all(ids for _, ids in roots.values())
    for tenant, (out, ids) in roots.items():
        vectors = index_store(out, uri=lite, base="tenants")
        try:
            got = search(QUERY, LocalStore(out), vectors, k=50, candidates=50, rerank="none", corpus=tenant)
        finally:
            vectors.close()
        assert {r["page_id"] for r in got} == ids  # every page of the tenant, none of the other's


def test_bulk_import_path_gives_the_same_index(server, direct, tmp_path, capsys):
    """milvus-load --bulk-dir: row files staged where the server reads them, imported by Milvus
    itself; the same counts as the direct sink, and the same search results."""
    _, out, _ = direct
    stage = tmp_path / "bulk-stage"
    args = ["milvus-load", str(out), "--collection", "bulked", "--bulk-dir", str(stage), "--json",
            *sum((["--milvus-index", i] for i in INDEXES), []), *conn_args(server)]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == "bulk" and summary["format"] == "parquet" and list(stage.rglob("*.parquet"))
    direct_counts = counts(server, "direct")
    assert {c.replace("bulked", "direct"): n for c, n in counts(server, "bulked").items()} == direct_counts
    assert summary["rows_imported"] == sum(direct_counts.values())
    assert import_tasks(server, "bulked") == {c: 1 for c in counts(server, "bulked")}
    first, second = (search_in(server, out, c, "mv-bin") for c in ("direct", "bulked"))
    assert [r["page_id"] for r in first] == [r["page_id"] for r in second]
    # Import inserts, it cannot replace: a second bulk load into full collections is refused.
    assert main(args) == 1
    assert "already hold rows" in capsys.readouterr().err


def test_ingest_first_load_by_bulk_import(server, direct, tmp_path, capsys):
    """ingest --milvus-bulk-dir: the writers stage Parquet import files instead of upserting and
    Milvus imports them at the end of the run: the same index as the upserts'. A run killed
    before the import leaves the load pending: a plain run refuses, the bulk run finishes it."""
    import os
    import subprocess

    from conftest import REPO, pagemill_cmd

    source, direct_out, _ = direct
    stage = tmp_path / "stage"
    out = tmp_path / "out"
    args = ["ingest", str(source), "--out", str(out), "--executor", "local", "--layouts", "mv-pool3,mv-bin,sv-fde",
            "--collection", "firstload", "--milvus-bulk-dir", str(stage), "--quiet", *conn_args(server),
            *sum((["--milvus-index", i] for i in INDEXES), [])]
    # killed after two units committed: their files are staged, nothing imported (units of 4
    # documents: 3 units, a file each and collection, gathered into one import task a collection)
    killed = subprocess.run(pagemill_cmd(*args, "--unit-max-docs", "4"), cwd=REPO, capture_output=True,
                            env=dict(os.environ, PAGEMILL_KILL_AT="committed:2"))
    assert killed.returncode == -9
    assert sum(counts(server, "firstload").values()) == 0 and list(stage.rglob("*.parquet"))
    plain = [a for a in args if a not in ("--milvus-bulk-dir", str(stage))]
    assert main(plain) == 1
    assert "bulk import is unfinished" in capsys.readouterr().err
    summary_path = tmp_path / "s.json"
    assert main([*args, "--unit-max-docs", "4", "--summary", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    direct_counts = counts(server, "direct")
    assert {c.replace("firstload", "direct"): n for c, n in counts(server, "firstload").items()} == direct_counts
    assert summary["milvus"]["bulk_imported"] == counts(server, "firstload")
    assert import_tasks(server, "firstload") == {c: 1 for c in counts(server, "firstload")}
    assert summary["milvus"]["rows_written"] == {} and not list(stage.rglob("*.parquet"))  # imported, then removed
    assert [r["page_id"] for r in search_in(server, out, "firstload", "mv-bin")] == \
        [r["page_id"] for r in search_in(server, direct_out, "direct", "mv-bin")]
    # the load is done: a plain run goes on with upserts; another first load is refused
    assert main(plain) == 0
    assert main(args) == 1 and "already hold rows" in capsys.readouterr().err


def tree_bytes(root) -> int:
    from pathlib import Path

    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def test_report_measures_the_servers_files(server, direct, tmp_path, capsys):
    """report --milvus-storage: each collection's rows, raw bytes and the bytes of the server's own
    binlogs and index files; plan --report uses the overhead measured there."""
    _, out, _ = direct
    server.wait_for_indexes("direct", db_name=DB)
    assert main(["report", str(out), "--collection", "direct", "--milvus-storage", server.storage, "--json",
                 *conn_args(server)]) == 0
    report = json.loads(capsys.readouterr().out)
    colls = {c["collection"]: c for c in report["milvus"]["collections"]}
    assert {k: c["rows"] for k, c in colls.items()} == counts(server, "direct")
    # The binlogs are zstd-compressed Parquet: float32 vectors computed in bf16 keep about their
    # bf16 bytes (the low halves are zeros); binary codes most of theirs (the tiny random model's
    # sign bits are correlated: 78% of them were kept in one CI run, so half is the floor here).
    dims = {"direct_patches": 0.9 * 128 * 2, "direct_patches_pool3": 0.9 * 128 * 2,
            "direct_patches_bin": 0.5 * 128 / 8, "direct_pages": 0.9 * 128 * 2}
    for name, c in colls.items():
        assert c["server_bytes"] == c["server_data_bytes"] + c["server_index_bytes"] and c["files"] > 0, name
        assert c["ratio"] == pytest.approx(c["server_bytes"] / c["raw_bytes"], rel=1e-3)
        if name in dims:
            assert c["server_data_bytes"] >= c["rows"] * dims[name], name
        assert c["pending_index_rows"] == 0, name
        # the query nodes' own figure where they report one (Milvus 2.3.5 reports 0 for some loaded
        # segments, seen for a 1,511-row collection: then None, never a 0 shown as a measurement)
        assert c["loaded_memory_bytes"] is None or c["loaded_memory_bytes"] > 0, name
        # Milvus 2.3 builds index files only for segments of 1,024 rows or more (and says so)
        flat = set(c["index_types"].values()) <= {"FLAT", "BIN_FLAT"}  # brute force: no index files
        assert (c["server_index_bytes"] > 0) == (c["rows"] >= 1024 and not flat), name
    small = [n for n, c in colls.items() if c["rows"] < 1024 and set(c["index_types"].values()) - {"FLAT", "BIN_FLAT"}]
    assert all(any(n in note and "1,024 rows" in note for note in report["notes"]) for n in small)
    assert colls["direct_patches"]["index_types"] == {"vector": "IVF_PQ"}
    assert colls["direct_patches_pool3"]["index_types"] == {"vector": "HNSW"}
    # HNSW, on fewer than 1,024 rows here, has no files
    pool3 = colls["direct_patches_pool3"]
    assert pool3["rows"] < 1024 and "direct_patches_pool3" in small
    mv = colls["direct_patches"]
    # IVF_PQ: smaller than the vectors it indexes, its codebooks included (16 x 256 centroids of 8
    # floats, a fixed ~131 KB that dominates at a thousand rows)
    assert mv["server_index_bytes"] < mv["rows"] * 128 * 4
    assert sum(c["server_bytes"] for c in colls.values()) < tree_bytes(server.storage)
    by_layout = {r["layout"]: r for r in report["layouts"]}
    assert by_layout["mv-pool3"]["milvus"]["index_built"] == "HNSW"
    assert by_layout["mv-pool3"]["milvus"]["server"]["ratio_to_raw"] == pool3["ratio"]
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(report))
    assert main(["plan", "--model", "colqwen2", "--layouts", "mv-pool3", "--report", str(saved), "--json"]) == 0
    planned = {r["layout"]: r for r in json.loads(capsys.readouterr().out)["layouts"]}
    assert planned["mv-pool3"]["milvus_disk_measured_overhead"]["ratio"] == pool3["ratio"]
    # without the storage, server bytes are unknown and the report says how to measure them
    assert main(["report", str(out), "--collection", "direct", "--json", *conn_args(server)]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert all(c["server_bytes"] is None for c in bare["milvus"]["collections"])
    assert any("--milvus-storage" in n for n in bare["notes"])


def test_text_layer_on_a_server_without_bm25_is_dense_and_says_so(server, smoke_corpus, tmp_path, capsys):
    """Milvus 2.3.5 has no BM25 function: the text layer is dense only, said in one line at
    ingest and at search, and text search still finds pages."""
    source = tmp_path / "src"
    source.mkdir()
    for uri in smoke_corpus.ok_pages:
        if "/text/" in uri:
            shutil.copy(url2pathname(urlparse(uri).path), source)
    out = tmp_path / "out"
    summary = ingest(source, out, server, "--collection", "textsrv", "--layouts", "sv-mean", "--model",
                     "colqwen2-tiny,text:all-MiniLM-L6-v2")
    assert "text" in summary["milvus"]["fields"] and "text-bm25" not in summary["milvus"]["fields"]
    assert any("lexical search unavailable" in n for n in summary["milvus"]["notes"])
    pages = read_pages(out)
    assert counts(server, "textsrv")["textsrv_text"] == sum(len(c) for c in pages["text_chunks"].to_pylist() if c)
    text = next(t for t in pages["text"].to_pylist() if t and len(t.split()) > 40)
    query = " ".join(text.split()[10:30])
    capsys.readouterr()
    assert main(["search", query, "--out", str(out), "--collection", "textsrv", "--stage1", "text", "--rerank", "none",
                 "--json", *conn_args(server)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count(f"lexical search unavailable on Milvus {server.version}: dense text only") == 1
    results = json.loads(captured.out)["results"]
    assert results and all(r["lists"] == ["text-dense"] for r in results)
    assert main(["search", query, "--out", str(out), "--collection", "textsrv", "--stage1", "text-bm25",
                 *conn_args(server)]) == 2
    assert "--stage1 text-dense" in capsys.readouterr().err


def test_calibrate_measures_the_servers_ingest_by_rows_and_by_bulk_import(server, direct, tmp_path):
    """calibrate against a server: the stage pass writes a scratch index there, by a first
    load's bulk import (the server's import timed) or by row upserts, and removes it; plan sizes
    the data nodes from the rate measured, and says which path it came from."""
    from operators.io.sources import LocalSource
    from pipelines.analysis.capacity import plan
    from pipelines.analysis.sizing import STORE_ROWS_PER_S
    from pipelines.ingest.stage_costs import stage_costs

    sample = tmp_path / "sample"
    sample.mkdir()
    for pdf in [p for p in sorted(direct[0].rglob("*.pdf")) if "/charts/" in str(p)][:2]:  # born-digital: no OCR
        shutil.copy(pdf, sample / pdf.name)
    out = tmp_path / "bulk.json"
    # the command, with the connection's options as ingest takes them: a first load by bulk import
    assert main(["calibrate", str(sample), "--model", "colqwen2-tiny", "--pages", "2", "--batch-size", "2",
                 "--layouts", "mv-pool3", "--vectors", server.uri, *conn_args(server),
                 "--milvus-bulk-dir", str(tmp_path / "stage"), "--out", str(out)]) == 0
    profiles = {"bulk": json.loads(out.read_text())}
    # the stage pass alone, by row upserts
    store = {"milvus_user": ROOT_USER, "milvus_db": DB, "milvus_ca_file": server.ca_file,
             "milvus_server_name": "localhost"}
    source = LocalSource(str(sample))
    profiles["rows"] = {**stage_costs(source, list(source.list_documents()), model="colqwen2-tiny",
                                      layouts=["mv-pool3"], vectors=server.uri, store_options=store),
                        "model": "colqwen2-tiny", "pages_per_s": 50.0}
    for path, profile in profiles.items():
        written = profile["store_write"]
        assert profile["store_server"] and written["store"] == "milvus" and written["path"] == path
        assert written["rows_per_s"] > 0 and written["rows"] > profile["stage_pages"]
        assert not counts(server, "pagemill_calibrate")  # its scratch index is gone
        fleet = plan(preset="colqwen2", layouts=["mv-pool3"], calibration=profile)["fleet"]["store"]
        if path == "rows":
            assert fleet["rows_per_s_per_data_node"] == written["rows_per_s"]
            assert fleet["figure"] == "measured by calibrate on the server given (row inserts)"
        else:  # a sample's import is the server's wait before it starts: named, not taken as a rate
            assert fleet["rows_per_s_per_data_node"] == STORE_ROWS_PER_S["milvus"]
            assert f"the calibration's bulk import of {written['rows']:,} rows took" in fleet["figure"]
            big = {**profile, "store_write": {**written, "rows": 500_000}}
            fleet = plan(preset="colqwen2", layouts=["mv-pool3"], calibration=big)["fleet"]["store"]
            assert fleet["figure"] == "measured by calibrate on the server given (its bulk import)"
            assert fleet["rows_per_s_per_data_node"] == written["rows_per_s"]
    bulk = profiles["bulk"]["store_write"]
    assert bulk["import_s"] > 0 and not list((tmp_path / "stage").rglob("*.parquet"))  # imported, then removed
    # the same pages and layouts: the same rows, whichever way they went in
    assert bulk["rows"] == profiles["rows"]["store_write"]["rows"]


def test_server_write_benchmark_sets_upserts_bulk_import_and_a_plain_insert_side_by_side(milvus_server, capsys):
    """On the real 2.3.5 server: pagemill's row upserts, its bulk import (the server's import
    timed) and pymilvus' insert of the same rows, each with the client's and the server's CPU."""
    from conftest import CORPUS
    from test_benchmarks import rows

    from benchmarks import server_write

    table = server_write.main(["--corpus", str(CORPUS), "--pages", "4"], server=milvus_server)
    body = rows(table)
    upserts, bulk = body["pagemill, row upserts"], body["pagemill, bulk import"]
    plain = body["pymilvus `MilvusClient.insert`"]
    assert upserts[0] == bulk[0] == plain[0] and int(upserts[0].replace(",", "")) > 4 * 770  # the same rows
    assert all(float(r[1]) > 0 and float(r[2]) > 0 and float(r[3]) > 0 for r in (upserts, bulk, plain))
    assert float(upserts[4]) == 1.0 and re.search(r"bulk import: the server's import took [0-9.]+ s for [0-9,]+ rows", table)
