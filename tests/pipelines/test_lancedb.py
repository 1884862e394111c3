"""LanceDB behind the store door, for real: ingests into a LanceDB folder (and a bucket of the local
S3 server), SIGKILLed at every point of a unit's write and commit, documents changed and deleted,
a reindex, a relayout, the text layer's BM25, a read-only OUT, and what a standard LanceDB, DuckDB
or Polars reader sees."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pytest
from conftest import REPO, pagemill_cmd, read_only, run_pagemill, s3_client, upload_folder

from pipelines.cli import main

TEXT = "colqwen2-tiny,text:all-MiniLM-L6-v2"
# The crash, change and generation tests check rows, versions and files, not what the vectors mean:
# their runs simulate both models (no torch in the process: 4 s a run instead of 12 to 15).
SIM = "sim:colqwen2-tiny,text:sim:all-MiniLM-L6-v2"
ARGS = ["--executor", "local", "--unit-max-docs", "2", "--quiet", "--vectors", "lancedb:"]


def tables(root: Path | str, **storage) -> dict[str, pa.Table]:
    """Every table of a LanceDB folder, read by a standard LanceDB client."""
    import lancedb

    db = lancedb.connect(str(root), storage_options=storage or None)
    return {name: db.open_table(name).to_arrow() for name in db.list_tables().tables}


def archive(out: Path) -> pa.Table:
    import pyarrow.dataset as ds

    return ds.dataset(str(out / "pages"), format="parquet").to_table()


def chunks_of(pages: pa.Table) -> int:
    """The text layer's chunks in the archive (a row each in LanceDB)."""
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(pages["text_chunks"])).as_py() or 0)


def assert_matches_archive(out: Path, base: str = "pagemill", root: Path | None = None) -> dict[str, pa.Table]:
    """LanceDB holds exactly the archive's pages: each once, at its committed version, and a text
    row per chunk."""
    pages = archive(out)
    held = tables(root or out / "lancedb")
    rows = held[f"{base}_pages"]
    ids = rows["page_id"].to_pylist()
    assert len(ids) == len(set(ids)), "a page twice in LanceDB"
    assert dict(zip(ids, rows["doc_version"].to_pylist())) == dict(zip(pages["page_id"].to_pylist(),
                                                                          pages["doc_version"].to_pylist()))
    text = held[f"{base}_text"]
    assert text.num_rows == chunks_of(pages) > 0
    assert set(text["page_id"].to_pylist()) <= set(ids)
    return held


def ingest(src: Path, out: Path, *extra: str, model: str = SIM, env: dict | None = None, check: bool = True):
    return run_pagemill("ingest", str(src), "--out", str(out), *ARGS, "--model", model, *extra, env=env, check=check)


@pytest.fixture(scope="module")
def src(small_corpus, tmp_path_factory):
    """Six good documents of the small corpus and one broken one."""
    dest = tmp_path_factory.mktemp("lance-src")
    good = sorted(small_corpus.ok_pages)[:6]
    for uri in good:
        path = Path(unquote(uri.replace("file://", "")))
        shutil.copy(path, dest / path.name)
    (dest / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    return dest


@pytest.fixture(scope="module")
def clean(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("lance-clean")
    ingest(src, out, "--summary", str(out.parent / "clean.json"), model=TEXT)
    return out


# -- the store's own checks, in this process --------------------------------------------------------


def test_a_clean_run_holds_the_archive_and_records_its_store(clean):
    held = assert_matches_archive(clean)
    summary = json.loads((clean.parent / "clean.json").read_text())
    assert summary["lancedb"]["row_counts"] == {name: t.num_rows for name, t in held.items()}
    assert summary["lancedb"]["upsert_path"] == "fragments"
    state = json.loads((clean / "_index.json").read_text())
    assert state["store"]["kind"] == "lancedb" and state["store"]["uri"] == "lancedb:"  # moves with OUT
    # a standard client sees pagemill's columns: a multi-vector of float16 per page, single vectors of float32
    pages = held["pagemill_pages"]
    assert pa.types.is_float16(pages.schema.field("mv").type.value_type.value_type)
    assert pages.schema.field("sv_mean").type == pa.list_(pa.float32(), 128)


def test_options_of_the_other_store_and_two_stores_are_refused(src, tmp_path, capsys):
    for extra, key in ((["--vectors", "lancedb:", "--milvus-index", "sv-mean=HNSW"], "milvus_index"),
                       (["--vectors", "lancedb:", "--milvus", str(tmp_path / "m.db")], "--vectors"),
                       (["--lancedb-index", "mv=IVF_PQ"], "lancedb_index"),
                       (["--vectors", "lancedb:", "--lancedb-index", "mv=IVF_HNSW"], "lancedb_index"),
                       (["--vectors", "lancedb:", "--lancedb-index", "text=IVF_PQ"], "lancedb_index")):
        code = main(["ingest", str(src), "--out", str(tmp_path / "o"), "--executor", "local", *extra])
        err = capsys.readouterr().err
        assert code == 2 and key in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


def test_an_index_recorded_in_lancedb_refuses_milvus(clean, src, capsys):
    code = main(["ingest", str(src), "--out", str(clean), "--executor", "local", "--milvus", str(clean / "x.db")])
    err = capsys.readouterr().err
    assert code == 2 and "keeps its index's vectors in LanceDB" in err, err
    assert not (clean / "x.db").exists()


@pytest.mark.slow
def test_search_status_report_and_a_read_only_out(clean):
    before = sorted(p.relative_to(clean).as_posix() for p in clean.rglob("*"))
    r = read_only(clean, "search", "a table of figures", "--out", str(clean), "-k", "3", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    hits = json.loads(r.stdout)["results"]
    assert len(hits) == 3 and all(h["source_uri"] for h in hits)
    r = read_only(clean, "search", "a table", "--out", str(clean), "--stage1", "patches", "--vectors-from", "store",
                  "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["results"], r.stderr[-2000:]
    r = read_only(clean, "status", str(clean), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    status = json.loads(r.stdout)
    assert status["healthy"], status["problems"]
    assert status["store"]["kind"] == "lancedb"
    assert all(t["rows"] == t["expected"] for t in status["lancedb"].values())
    r = read_only(clean, "report", str(clean))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "LanceDB storage at" in r.stdout and "pagemill_pages" in r.stdout
    r = read_only(clean, "fidelity", str(clean), "--queries", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "searched in LanceDB" in r.stdout
    assert sorted(p.relative_to(clean).as_posix() for p in clean.rglob("*")) == before


def test_report_measures_lancedb_files_and_bytes(clean):
    from conftest import index_store

    from operators.io.store import LocalStore
    from pipelines.analysis.report import measure_run

    measured = measure_run(LocalStore(str(clean)), vectors=index_store(clean, "lancedb:"))
    held = measured["store"]
    files = {t["table"]: t for t in held["tables"]}
    on_disk = sum(p.stat().st_size for p in (clean / "lancedb" / "pagemill_pages.lance").rglob("*") if p.is_file())
    assert files["pagemill_pages"]["files_bytes"] == on_disk  # its folder, listed: measured, not derived
    assert files["pagemill_pages"]["rows"] == archive(clean).num_rows
    mv = held["layouts"]["mv"]
    # float16 vectors: 2 bytes a value, as many as the archive's own column holds
    pages = archive(clean)
    assert mv["raw_bytes_per_page"] > 0 and mv["data_bytes_per_page"] >= 0.9 * mv["raw_bytes_per_page"]
    assert abs(mv["raw_bytes_per_page"] - 2 * 128 * np.mean(pages["n_vectors"].to_numpy())) / mv["raw_bytes_per_page"] < 0.5


def test_text_search_finds_a_copied_sentence(clean):
    pages = archive(clean)
    texts = [(pid, t) for pid, t in zip(pages["page_id"].to_pylist(), pages["text"].to_pylist()) if t and len(t) > 200]
    pid, text = texts[len(texts) // 2]
    sentence = " ".join(text.split()[10:22])
    out = subprocess.run(pagemill_cmd("search", sentence, "--out", str(clean), "--stage1", "text-bm25", "--rerank",
                                      "none", "-k", "1", "--json"), cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["results"][0]["page_id"] == pid


def test_lancedb_duckdb_and_polars_read_what_pagemill_wrote(clean):
    """README's readers block, run on a real OUT; then what it read is checked."""
    import re

    block = re.search(r"<!-- lancedb-readers -->\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    scope: dict = {}
    exec(block.replace('"demo-out/', f'"{clean}/'), scope)  # noqa: S102 - the README's own code
    pages = archive(clean)
    assert len(scope["best"]) == 5 and {r["page_id"] for r in scope["best"]} <= set(pages["page_id"].to_pylist())
    assert sum(n for _, n in scope["per_doc"]) == pages.num_rows
    assert scope["chunks"].item() == chunks_of(pages)
    # and LanceDB's MaxSim finds a page from its own vectors
    table = scope["pages"]
    first = table.to_arrow().slice(0, 1)
    query = np.asarray(first["mv"][0].values.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, 128)
    best = table.search(query[:4], vector_column_name="mv").distance_type("cosine").limit(1).to_list()
    assert best[0]["page_id"] == first["page_id"][0].as_py()


def synthetic_pages(n: int, start: int = 0, dim: int = 16, seed: int = 0) -> pa.Table:
    """``n`` pages of ``OUT/pages`` (3 to 6 unit vectors each, their normalised mean), one document each."""
    from operators import schema as S

    rng = np.random.default_rng(seed + start)
    mv, sv = [], []
    for _ in range(n):
        v = rng.standard_normal((int(rng.integers(3, 7)), dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        mv.append(v.astype(np.float16))
        m = v.mean(axis=0)
        sv.append(m / np.linalg.norm(m))
    ids = [f"d{start + i:05d}" for i in range(n)]
    return pa.table({S.PAGE_ID: [f"{d}-p000000" for d in ids], S.DOC_ID: ids,
                     S.SOURCE_URI: [f"file:///x/{d}.pdf" for d in ids], S.DOC_VERSION: ["v1"] * n,
                     S.PAGE_NUMBER: pa.array([0] * n, pa.int32()),
                     S.MV: pa.array([list(x) for x in mv], pa.list_(pa.list_(pa.float16(), dim))),
                     S.SV_MEAN: pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(sv)), dim)})


def test_indexes_are_built_kept_retrained_when_the_table_doubles_and_dropped(tmp_path):
    from operators.layouts.layout import parse_layouts
    from operators.stores import IndexShape, open_vectors
    from pipelines.options import store_options

    def store(*specs):
        s = open_vectors(f"lancedb:{tmp_path / 'idx'}", store_options({"lancedb_index": list(specs)}))
        s.prepare(IndexShape(base="syn", dim=16, layouts=tuple(parse_layouts(["mv", "sv-mean"]))))
        return s

    def add(s, pages, unit):
        s.commit(unit, [s.writer().write(unit, pages)])

    s = store("sv-mean=IVF_PQ:num_sub_vectors=4", "mv=IVF_HNSW_SQ")
    add(s, synthetic_pages(100), "u1")
    report = s.finish({})
    assert "not yet" in report["maintenance"]["indexes"]["sv-mean"]  # 100 rows: too few to train on
    recorded = s.record()["indexes"]
    add(s, synthetic_pages(200, start=100), "u2")
    report = s.finish(s.record())  # what _index.json recorded of the store
    recorded = s.record()["indexes"]
    assert recorded["sv-mean"] == {"type": "IVF_PQ", "params": {"num_sub_vectors": 4}, "metric": "dot",
                                   "trained_rows": 300}
    assert recorded["mv"]["metric"] == "cosine" and recorded["mv"]["trained_rows"] == 300
    table = s._connect().open_table("syn_pages")
    assert {i.name for i in table.list_indices()} >= {"sv_mean_idx", "mv_idx", "doc_id_idx"}
    q = synthetic_pages(100)  # page d00007's own vectors find it, through the indexes
    mv = np.asarray(q["mv"][7].values.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, 16)
    assert s.search("mv", mv, 5)[0].page_id == "d00007-p000000"
    add(s, synthetic_pages(200, start=300), "u3")  # 500 rows: less than twice 300, the index is kept
    report = s.finish({"indexes": recorded})
    assert "sv-mean" not in report["maintenance"]["indexes"] and s.record()["indexes"]["sv-mean"]["trained_rows"] == 300
    assert table.index_stats("sv_mean_idx").num_unindexed_rows == 0  # the new rows folded into it
    add(s, synthetic_pages(150, start=500), "u4")  # 650 rows: more than twice 300, trained again
    report = s.finish(s.record())
    assert s.record()["indexes"]["sv-mean"]["trained_rows"] == 650
    recorded = s.record()
    s = store("mv=NONE")  # a nightly run without --lancedb-index keeps what was recorded; NONE drops it
    report = s.finish(recorded)
    assert report["maintenance"]["indexes"]["mv"] == "index dropped: exact search"
    assert "mv_idx" not in {i.name for i in s._connect().open_table("syn_pages").list_indices()}
    assert s.counts() == {"syn_pages": 650}
    import lance

    path = str(tmp_path / "idx" / "syn_pages.lance")
    assert len(lance.dataset(path).versions()) > 5  # a version per commit, index and compaction, kept 7 days
    pruned = open_vectors(f"lancedb:{tmp_path / 'idx'}", store_options({"lancedb_keep_days": 0}))
    pruned.prepare(IndexShape(base="syn", dim=16, layouts=tuple(parse_layouts(["mv", "sv-mean"]))))
    report = pruned.finish(recorded)
    assert report["maintenance"]["versions_pruned"] > 0 and len(lance.dataset(path).versions()) <= 2
    assert pruned.counts() == {"syn_pages": 650}


def test_a_layout_lancedb_cannot_hold_is_said_in_one_line_not_widened():
    from operators.layouts.layout import parse_layouts
    from operators.stores.door import IndexShape
    from operators.stores.lancedb.tables import plan_tables

    plan = plan_tables(IndexShape(base="x", dim=128, layouts=tuple(parse_layouts(["mv", "sv-mean", "mv-bf16",
                                                                                   "mv-pool3-bin"]))))
    assert [c.layout for c in plan.columns] == ["mv", "sv-mean"]
    assert len(plan.notes) == 2 and all("stays in the Parquet archive" in n for n in plan.notes)


def test_plans_cost_of_lancedb_indexes_is_what_lancedb_builds(tmp_path):
    """``pagemill plan --store lancedb``'s bytes per indexed vector against the index files LanceDB
    writes for 4,500 128-d float16 vectors (a PQ's codebook, a fixed 256 x D of them, aside)."""
    import lancedb
    from lancedb.index import IvfFlat, IvfHnswSq, IvfPq

    from pipelines.analysis.costs import lance_index_bytes

    pages = synthetic_pages(1000, dim=128)
    vectors = int(sum(len(v) for v in pages["mv"].to_pylist()))
    table = lancedb.connect(str(tmp_path)).create_table("t", pages.select(["page_id", "mv"]))
    for name, config, fixed in (("IVF_FLAT", IvfFlat(distance_type="cosine"), 0),
                                ("IVF_HNSW_SQ", IvfHnswSq(distance_type="cosine"), 0),
                                ("IVF_PQ", IvfPq(distance_type="cosine"), 256 * 128 * 2)):
        table.create_index("mv", config=config, replace=True, name="mv_idx")
        built = next(i for i in table.list_indices() if i.name == "mv_idx").size_bytes - fixed
        model = vectors * lance_index_bytes(name, 128, 256.0)
        assert built > 0 and abs(model - built) / built < 0.1, (name, model, built)


def test_plan_costs_lancedb_beside_milvus():
    from pipelines.analysis.capacity import format_plan, plan

    lance = plan(preset="colqwen2", pages=1_000_000, layouts=["mv-pool3", "mv-bin", "sv-mean"], index="IVF_PQ",
                 store="lancedb")
    milvus = plan(preset="colqwen2", pages=1_000_000, layouts=["mv-pool3", "mv-bin", "sv-mean"], index="IVF_PQ")
    rows = {r["layout"]: r for r in lance["layouts"]}
    # one row a page: the multi-vector's float16 values and its PQ codes, no keys repeated per vector
    assert rows["mv-bf16"]["lancedb_disk_bytes"] == 750 * (128 * 2 + 8 + 2) * 1_000_000
    assert rows["mv-bf16"]["lancedb_memory_bytes"] == 750 * (8 + 2) * 1_000_000
    assert rows["mv-bin"]["lancedb_held"] is False and rows["mv-bin"]["lancedb_disk_bytes"] == 0
    assert rows["sv-mean"]["lancedb_disk_bytes"] == (512 + 10) * 1_000_000
    m = {r["layout"]: r for r in milvus["layouts"]}
    assert rows["mv-bf16"]["lancedb_disk_bytes"] < m["mv-bf16"]["milvus_disk_bytes"]
    text = format_plan(lance)
    assert "LanceDB RAM" in text and "mv-bin stay in the Parquet archive" in text


# -- crashes, changes, generations (subprocesses: slow) ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("point,n,committed", [
    ("rendered", 2, 1),          # a unit rendered, nothing of it written
    ("lance_fragments", 3, None),  # a unit's pages fragments written, its text ones (or the next table's) not
    ("vectors_written", 2, 1),   # its shard and every fragment written, no commit
    ("store_committed", 2, 1),   # LanceDB committed it, the ledger has no record of it
    ("committed", 2, 2),         # the ledger record too
])
def test_sigkill_at_each_point_then_rerun(src, clean, tmp_path, point, n, committed):
    out = tmp_path / "out"
    killed = ingest(src, out, env={"PAGEMILL_KILL_AT": f"{point}:{n}"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    done = len(list((out / "_ledger" / "units").glob("*.json")))
    assert done == committed or committed is None
    rerun = ingest(src, out, "--summary", str(tmp_path / "s.json"))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["documents"]["skipped_unchanged"] == 2 * done  # committed units are not redone
    assert_matches_archive(out)
    assert sorted(archive(out)["page_id"].to_pylist()) == sorted(archive(clean)["page_id"].to_pylist())
    # no data file that no version names is left behind (uncommitted fragments removed)
    import lance

    for table in ("pagemill_pages", "pagemill_text"):
        path = str(out / "lancedb" / f"{table}.lance")
        named = {f.path for v in lance.dataset(path).versions()
                 for frag in lance.dataset(path, version=v["version"]).get_fragments() for f in frag.data_files()}
        on_disk = {p.name for p in (out / "lancedb" / f"{table}.lance" / "data").iterdir()}
        assert on_disk == named, (table, rerun.stderr[-1000:])


def _copy_of(src: Path, tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A copy of the source to change (its good documents listed) and an OUT for it."""
    work = tmp_path / "src"
    shutil.copytree(src, work)
    return work, tmp_path / "out", sorted(p for p in work.glob("*.pdf") if p.name != "broken.pdf")


def _pages(path: Path) -> int:
    import pymupdf

    with pymupdf.open(path) as d:
        return d.page_count


@pytest.mark.slow
def test_changed_and_deleted_documents_leave_no_stale_rows(src, tmp_path):
    work, out, docs = _copy_of(src, tmp_path)
    ingest(work, out)
    longest = max(docs, key=_pages)
    one_page = next(p for p in docs if _pages(p) == 1 and p != longest)
    gone = next(p for p in docs if p not in (longest, one_page))
    n_before = _pages(longest)
    shutil.copyfile(one_page, longest)
    gone.unlink()
    ingest(work, out, "--delete-missing")
    held = assert_matches_archive(out)
    uris = held["pagemill_pages"]["source_uri"].to_pylist()
    assert uris.count(longest.as_uri()) == 1 < n_before
    assert gone.as_uri() not in uris and gone.as_uri() not in held["pagemill_text"]["page_id"].to_pylist()


@pytest.mark.slow
def test_a_document_changed_after_a_crash_between_the_store_and_the_ledger(src, tmp_path):
    """The unit LanceDB committed without a ledger record: its documents are suspects, so the
    rerun's commit replaces their rows, though one of them has changed meanwhile."""
    import pyarrow.parquet as pq

    work, out, docs = _copy_of(src, tmp_path)
    killed = ingest(work, out, env={"PAGEMILL_KILL_AT": "store_committed:2"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    live = {f["key"] for p in (out / "_ledger" / "units").glob("*.json") for f in json.loads(p.read_text())["files"]}
    orphan = next(p for p in (out / "pages").glob("*.parquet") if f"pages/{p.name}" not in live)
    uris = sorted(set(pq.read_table(orphan)["source_uri"].to_pylist()))
    target = Path(unquote(uris[0].replace("file://", "")))
    donor = next(p for p in docs if p != target and _pages(p) != _pages(target))
    target.write_bytes(donor.read_bytes() + b"\n% changed\n")  # another version (not a duplicate of the donor)
    ingest(work, out)
    assert_matches_archive(out)
    assert not (out / "_ledger" / "lancedb_suspects.json").exists()


@pytest.mark.slow
def test_a_document_back_at_its_committed_version_after_such_a_crash_is_resynced(src, tmp_path):
    work, out, docs = _copy_of(src, tmp_path)
    ingest(work, out)
    committed = archive(out)
    target = next(p for p in docs if _pages(p) == 1)
    donor = next(p for p in docs if _pages(p) >= 2)
    original, stat = target.read_bytes(), target.stat()
    target.write_bytes(donor.read_bytes() + b"\n% changed\n")  # another version (not a duplicate of the donor)
    killed = ingest(work, out, env={"PAGEMILL_KILL_AT": "store_committed:1"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    target.write_bytes(original)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    ingest(work, out, "--summary", str(tmp_path / "s.json"))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["pages"]["embedded"] == 0 and summary["lancedb"]["pages_resynced"] == 1
    assert archive(out).num_rows == committed.num_rows
    assert_matches_archive(out)


@pytest.mark.slow
def test_reindex_builds_the_new_generation_beside_and_swaps_it_in(src, tmp_path):
    out = tmp_path / "out"
    ingest(src, out)
    r = ingest(src, out, "--reindex", "--max-pixels", "40000", "--summary", str(tmp_path / "s.json"))
    assert "generation 2" in r.stderr
    state = json.loads((out / "_index.json").read_text())
    assert state["active"]["generation"] == 2 and state["retired"] is None
    held = assert_matches_archive(out, base="pagemill_g2")
    assert not {"pagemill_pages", "pagemill_text"} & set(held)  # the retired generation's tables dropped
    hits = subprocess.run(pagemill_cmd("search", "a table", "--out", str(out), "-k", "2", "--json"), cwd=REPO,
                          capture_output=True, text=True)
    assert hits.returncode == 0 and len(json.loads(hits.stdout)["results"]) == 2, hits.stderr[-2000:]


@pytest.mark.slow
def test_relayout_adds_a_column_from_the_archive(clean, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    r = subprocess.run(pagemill_cmd("relayout", str(out), "--layouts", "mv-pool2", "--executor", "local"), cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    held = assert_matches_archive(out)
    pages = held["pagemill_pages"]
    assert "mv_pool2" in pages.column_names and pages["mv_pool2"].null_count == 0
    hits = subprocess.run(pagemill_cmd("search", "a table", "--out", str(out), "--stage1", "mv-pool2", "--json"),
                          cwd=REPO, capture_output=True, text=True)
    assert hits.returncode == 0 and json.loads(hits.stdout)["results"], hits.stderr[-2000:]


@pytest.mark.slow
def test_the_rebuild_loads_lancedb_from_the_archive_and_the_index_remembers_it(clean, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    shutil.rmtree(out / "lancedb")
    elsewhere = tmp_path / "idx"
    r = subprocess.run(pagemill_cmd("milvus-load", str(out), "--vectors", f"lancedb:{elsewhere}"), cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "from now on" in r.stderr
    assert_matches_archive(out, root=elsewhere)
    assert json.loads((out / "_index.json").read_text())["store"]["uri"] == f"lancedb:{elsewhere}"
    status = subprocess.run(pagemill_cmd("status", str(out), "--json"), cwd=REPO, capture_output=True, text=True)
    assert json.loads(status.stdout)["healthy"], status.stdout  # found without --vectors


@pytest.mark.slow
def test_on_the_local_s3_server_with_a_crash(s3_endpoint, src, clean, tmp_path):
    """OUT and LanceDB in a bucket: killed after LanceDB's commit, rerun, the same index as the clean
    run; then searched and inspected."""
    from operators.stores.lancedb.store import storage_options

    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="lance")
    upload_folder(client, src, "lance", "src/")
    args = ["s3://lance/src/", "s3://lance/out/", "--s3-endpoint-url", s3_endpoint]
    killed = subprocess.run(pagemill_cmd("ingest", args[0], "--out", args[1], *args[2:], *ARGS, "--model", SIM), cwd=REPO,
                            env=dict(os.environ, PAGEMILL_KILL_AT="store_committed:2"), capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    r = subprocess.run(pagemill_cmd("ingest", args[0], "--out", args[1], *args[2:], *ARGS, "--model", SIM), cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    from test_s3_ingest import read_s3_tables

    held = tables("s3://lance/out/lancedb", **storage_options("s3://lance/out/lancedb", _Endpoint(s3_endpoint)))
    pages = read_s3_tables(client, "lance", "out/pages/")
    ids = held["pagemill_pages"]["page_id"].to_pylist()
    assert sorted(ids) == sorted(pages["page_id"].to_pylist()) and len(ids) == len(set(ids))
    assert held["pagemill_text"].num_rows == chunks_of(pages) == tables(clean / "lancedb")["pagemill_text"].num_rows
    said = {}
    for cmd in (["status", args[1], "--s3-endpoint-url", s3_endpoint, "--json"],
                ["search", "a table", "--out", args[1], "--s3-endpoint-url", s3_endpoint, "--json"]):
        r = subprocess.run(pagemill_cmd(*cmd), cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        said[cmd[0]] = json.loads(r.stdout)
    assert said["status"]["healthy"] and said["search"]["results"]


class _Endpoint:
    def __init__(self, url: str):
        self.endpoint_url = url
        self.region = "us-east-1"
