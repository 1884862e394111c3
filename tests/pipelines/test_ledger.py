"""The ledger's replay of records: live files, rewrites, versions; and unit planning."""

from __future__ import annotations

from operators.io.sources import DocumentRef
from operators.io.store import LocalStore
from pipelines.ingest.planning import PlanCounts, plan_units
from pipelines.out.ledger import Ledger, LedgerState
from pipelines.out.units import unit_id_for


def _rec(unit, docs, files, rewrites=(), superseded=()):
    return {"unit_id": unit, "docs": [{"uri": u, "version": v, "status": "indexed", "n_pages": 1} for u, v in docs],
            "files": [{"key": k, "docs": d} for k, d in files], "rewrites": list(rewrites), "superseded": list(superseded)}


def test_replay_tracks_versions_and_live_files():
    s = LedgerState()
    s.apply(_rec("u1", [("a", "1"), ("b", "1")], [("pages/u1.parquet", ["a", "b"])]))
    assert s.files_holding({"a"}) == ["pages/u1.parquet"]
    # b changes: u2 holds the new version, u1's shard is rewritten without b.
    s.apply(_rec("u2", [("b", "2")], [("pages/u2.parquet", ["b"])],
                 rewrites=[{"old": "pages/u1.parquet", "new": "pages/u1~u2.parquet"}], superseded=["b"]))
    assert s.live_files() == {"pages/u1~u2.parquet", "pages/u2.parquet"}
    # the rewritten file still belongs to u1, whose document a it holds
    assert s.files_holding({"a"}) == ["pages/u1~u2.parquet"] and s.files_holding({"b"}) == ["pages/u2.parquet"]
    assert s.is_current("b", "2") and not s.is_current("b", "1") and s.is_current("a", "1")


def test_orphans_are_files_no_record_makes_live(tmp_path):
    store = LocalStore(tmp_path)
    ledger = Ledger(store)
    store.write_bytes("pages/u1.parquet", b"x")
    store.write_bytes("pages/u9.parquet", b"x")  # written, never committed
    ledger.commit(_rec("u1", [("a", "1")], [("pages/u1.parquet", ["a"])]))
    assert ledger.orphans(("pages",)) == ["pages/u9.parquet"]
    again = Ledger(store)
    again.load()
    assert again.state.is_current("a", "1") and again.state.records == 1


def test_units_are_bounded_and_deterministic():
    refs = [DocumentRef(f"file:///d/{i}.pdf", "v", size) for i, size in enumerate([10, 10, 10, 500, 10, 10])]
    counts = PlanCounts()
    units = list(plan_units(refs, LedgerState(), max_docs=2, max_bytes=100, counts=counts))
    assert [len(u.docs) for u in units] == [2, 1, 1, 2]
    assert counts.seen == counts.pending == 6
    assert units[0].unit_id == unit_id_for(list(reversed(refs[:2])))
    state = LedgerState()
    state.apply(_rec("x", [(refs[0].uri, "v")], []))
    counts = PlanCounts()
    units = list(plan_units(refs, state, max_docs=2, max_bytes=100, counts=counts))
    assert counts.skipped_unchanged == 1 and sum(len(u.docs) for u in units) == 5


def _state_equal(a: LedgerState, b: LedgerState, uris) -> None:
    assert a.live_files() == b.live_files()
    for u in uris:
        x, y = a.get(u), b.get(u)
        assert (x is None) == (y is None), u
        if x is not None:
            assert (x.vhash, x.status, x.n_pages, x.unit_id) == (y.vhash, y.status, y.n_pages, y.unit_id), u


def test_snapshots_are_columnar_and_replay_to_the_same_state(tmp_path):
    """Compaction folds records into a Parquet snapshot (merged with the previous one in row
    groups); loading it plus the records after it gives the state that replaying every record
    gives."""
    import numpy as np

    import pipelines.out.ledger as L

    store = LocalStore(tmp_path)
    ledger = Ledger(store)
    uris = [f"file:///d/{i}.pdf" for i in range(300)]
    for n in range(10):  # ten units of 30 documents
        docs = [(u, "1") for u in uris[30 * n:30 * n + 30]]
        ledger.commit(_rec(f"u{n}", docs, [(f"pages/u{n}.parquet", [u for u, _ in docs])]))
    assert ledger.compact() == 10
    snaps = [p for p in (tmp_path / "_ledger" / "snapshots").iterdir()]
    assert len(snaps) == 1 and {p.name for p in snaps[0].iterdir()} == {"docs.parquet", "files.parquet", "meta.json"}
    # more records after the snapshot: a changed document, a deleted one, new ones
    ledger.commit(_rec("v1", [(uris[5], "2"), ("file:///d/new.pdf", "1")], [("pages/v1.parquet", [uris[5]])],
                       rewrites=[{"old": "pages/u0.parquet", "new": "pages/u0~v1.parquet"}], superseded=[uris[5]]))
    ledger.commit({"unit_id": "d1", "docs": [], "files": [], "rewrites": [], "superseded": [uris[7]],
                   "deleted": [uris[7]]})
    replayed = Ledger(store)
    replayed.load()
    assert replayed.state.snapshot is not None and len(replayed.state.overlay) == 3
    all_uris = [*uris, "file:///d/new.pdf"]
    _state_equal(replayed.state, ledger.state, all_uris)
    assert replayed.state.get(uris[7]) is None and replayed.state.is_current(uris[5], "2")
    assert len(replayed.state) == 300  # 300 - 1 deleted + 1 new
    # a second compaction merges the old snapshot (in row groups) with the overlay
    old_fold = L.OVERLAY_FOLD
    assert ledger.compact() == 2
    again = Ledger(store)
    again.load()
    assert again.state.overlay == {} and len(again.state.base_keys) == 300
    assert np.all(np.diff(again.state.base_keys.astype(np.float64)) > 0)  # sorted, unique
    _state_equal(again.state, replayed.state, all_uris)
    assert L.OVERLAY_FOLD == old_fold
    # documents gone from a listing, found by key against the columns
    from pipelines.out.ledger import doc_key

    seen = np.array([doc_key(u) for u in all_uris if u != uris[9]], np.uint64)
    assert again.state.missing(seen) == [uris[9]]


def test_a_long_run_folds_its_commits_as_it_goes(tmp_path, monkeypatch):
    import pipelines.out.ledger as L

    monkeypatch.setattr(L, "OVERLAY_FOLD", 50)
    ledger = Ledger(LocalStore(tmp_path))
    for n in range(6):
        ledger.commit(_rec(f"u{n}", [(f"file:///x/{n}-{i}.pdf", "1") for i in range(20)], [(f"pages/u{n}.parquet", [])]))
    assert len(ledger.state.overlay) < 50 and len(ledger.state.base_keys) >= 50
    fresh = Ledger(LocalStore(tmp_path))
    fresh.load()
    assert len(fresh.state) == 120 and fresh.state.records == 6


def test_a_json_snapshot_of_an_earlier_version_still_loads(tmp_path):
    import json

    store = LocalStore(tmp_path)
    store.write_bytes("_ledger/snapshots/00000000000000000001.json", json.dumps({
        "docs": {"file:///a.pdf": ["1", "indexed", 2, "u1"]}, "file_docs": {"pages/u1.parquet": ["file:///a.pdf"]},
        "units": ["u1"], "records": 1, "last_record": "00000000000000000001-u1.json"}).encode())
    ledger = Ledger(store)
    ledger.load()
    assert ledger.state.is_current("file:///a.pdf", "1") and ledger.state.live_files() == {"pages/u1.parquet"}
