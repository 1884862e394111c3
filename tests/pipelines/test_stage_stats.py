"""Per-stage instrumentation and the bottleneck line."""

from __future__ import annotations

from pipelines.ingest.stage_stats import StageStats, bottleneck


def test_latest_counters_per_worker_are_summed_and_the_busiest_stage_named():
    now = [0.0]
    st = StageStats(clock=lambda: now[0])
    st.observe([{"render": {"worker": "a:1", "pages": 10, "busy_s": 1.0, "wall_s": 10.0},
                "embed": {"worker": "a:2", "pages": 10, "busy_s": 9.0, "wall_s": 10.0, "forward_s": 8.0,
                                "batches": 2}}])
    # cumulative counters: the later report of the same worker replaces the earlier one
    st.observe([{"render": {"worker": "a:1", "pages": 20, "busy_s": 2.0, "wall_s": 20.0},
                "embed": {"worker": "a:2", "pages": 20, "busy_s": 18.0, "wall_s": 20.0, "forward_s": 16.0,
                                "batches": 4}}])
    st.observe([{"render": {"worker": "b:1", "pages": 20, "busy_s": 2.0, "wall_s": 20.0}}])
    for t in (10.0, 15.0, 20.0):
        now[0] = t
        st.committed(20, 1.0)
    s = st.summary()
    # busy 3 s of the 11 s since the first unit reached the driver (at 9 s)
    assert s["commit"]["utilisation"] == 0.273 and s["steady_pages_per_s"] == 4.0
    assert s["render"]["workers"] == 2 and s["render"]["items"] == 40 and s["render"]["busy_s"] == 4.0
    assert s["render"]["capacity_pages_per_s"] == 20.0  # 10 pages per busy second x 2 workers
    assert s["embed"]["forward_share"] == 0.8 and s["embed"]["mean_batch_pages"] == 5.0
    assert s["embed"]["forward_share_steady"] == 0.8  # no drain after its last batch here
    assert s["embed"]["per_worker"] == [{"worker": "a:2", "pages": 20, "busy_s": 18.0, "wall_s": 20.0, "forward_s": 16.0,
                                         "forward_share": 0.8}]
    assert s["commit"]["items"] == 60 and s["commit"]["capacity_pages_per_s"] == 20.0
    line = bottleneck(s, accelerator=True)
    assert line.startswith("bottleneck: embed (model forward), busy 90%") and "accelerator busy 80%" in line
    # A CPU-only run does not speak of an accelerator.
    assert "accelerator" not in bottleneck(s, accelerator=False)


def test_a_commit_busy_since_the_first_unit_is_the_bottleneck_despite_a_long_start_up():
    """Start-up (actors, model load) is not idle time of the driver's commit: a commit busy 90% of
    the time since the first unit arrived limits the run, though busy only 30% of the whole."""
    now = [0.0]
    st = StageStats(clock=lambda: now[0])
    st.observe([{"render": {"worker": "a:1", "pages": 40, "busy_s": 6.0, "wall_s": 12.0},
                                "embed": {"worker": "a:2", "pages": 40, "busy_s": 7.0, "wall_s": 11.0,
                                          "forward_s": 6.0, "batches": 5}}])
    for t, took in ((21.0, 1.0), (22.0, 0.9), (23.0, 0.9), (24.0, 0.9), (30.0, 5.3)):  # first arrival at 20 s
        now[0] = t
        st.committed(8, took)
    s = st.summary()
    assert s["commit"]["utilisation"] == 0.9  # 9 s busy of the 10 s since 20 s
    assert bottleneck(s).startswith("bottleneck: commit (ledger, driver), busy 90%")


def test_a_real_run_reports_stages(small_corpus, tmp_path):
    import json

    from pipelines.cli import main

    summary = tmp_path / "s.json"
    assert main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "o"), "--executor", "local",
                 "--unit-max-docs", "3", "--summary", str(summary), "--quiet"]) == 0
    s = json.loads(summary.read_text())
    stages = s["stages"]
    assert {"render", "embed", "encode", "write", "commit"} <= set(stages)
    assert stages["embed"]["items"] == stages["render"]["items"] == s["pages"]["indexed"] == s["pages"]["embedded"]
    assert stages["write"]["items"] == stages["encode"]["items"] == s["pages"]["indexed"]
    assert 0 < stages["embed"]["forward_share"] <= 1 and stages["steady_pages_per_s"] > 0
    assert s["bottleneck"].startswith("bottleneck: ") and "accelerator" not in s["bottleneck"]  # a CPU run


def test_a_worker_idle_since_its_last_batch_is_not_busy():
    """A worker's window ends at the end of the run, not at its last batch: a render actor that
    rendered everything in its first second of a ten-second run was busy a tenth of it."""
    import time

    st = StageStats()
    st.observe([{"render": {"worker": "a:1", "pages": 6, "busy_s": 1.0, "wall_s": 1.0, "started_at": time.time() - 10},
                 "encode": {"worker": "a:2", "pages": 6, "busy_s": 0.0031, "wall_s": 0.003}}])
    s = st.summary()
    assert 0.09 < s["render"]["utilisation"] < 0.11
    assert s["encode"]["utilisation"] == 1.0  # never above 1 (its own clock rounds)


def test_the_accelerators_steady_share_leaves_out_the_drain_after_its_last_batch():
    """The embedding actor's forward share over the run ends at the run's end (the sinks' flush
    included); in steady state it is over the actor's own span, its first batch to its last."""
    import time

    st = StageStats()
    started = time.time() - 50.0  # first batch 50 s ago; its last batch ended 40 s after the first
    st.observe([{"embed": {"worker": "a:2", "pages": 160, "busy_s": 38.0, "wall_s": 40.0, "forward_s": 36.0,
                           "batches": 10, "started_at": started}}])
    e = st.summary()["embed"]
    assert e["forward_share_steady"] == 0.9
    assert 0.7 < e["forward_share"] < 0.75  # 36 s of the 50 s to the end of the run
