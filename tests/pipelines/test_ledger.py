"""The ledger's replay of records: live files, rewrites, versions; and unit planning."""

from __future__ import annotations

from operators.sources import DocumentRef
from operators.store import LocalStore
from pipelines.ledger import Ledger, LedgerState
from pipelines.plan import PlanCounts, plan_units, unit_id_for


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
    assert set(s.file_docs) == {"pages/u1~u2.parquet", "pages/u2.parquet"}
    assert s.file_docs["pages/u1~u2.parquet"] == {"a"}
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
