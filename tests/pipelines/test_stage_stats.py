"""Per-stage instrumentation and the bottleneck line."""

from __future__ import annotations

from pipelines.stage_stats import StageStats, bottleneck


def test_latest_counters_per_worker_are_summed_and_the_busiest_stage_named():
    now = [0.0]
    st = StageStats(clock=lambda: now[0])
    st.observe({"render_stats": {"worker": "a:1", "pages": 10, "busy_s": 1.0, "wall_s": 10.0},
                "embed_stats": {"worker": "a:2", "pages": 10, "busy_s": 9.0, "wall_s": 10.0, "forward_s": 8.0,
                                "batches": 2, "layouts_s": 0.5}})
    # cumulative counters: the later report of the same worker replaces the earlier one
    st.observe({"render_stats": {"worker": "a:1", "pages": 20, "busy_s": 2.0, "wall_s": 20.0},
                "embed_stats": {"worker": "a:2", "pages": 20, "busy_s": 18.0, "wall_s": 20.0, "forward_s": 16.0,
                                "batches": 4, "layouts_s": 1.0}})
    st.observe({"render_stats": {"worker": "b:1", "pages": 20, "busy_s": 2.0, "wall_s": 20.0}})
    now[0] = 10.0
    st.committed(20, 1.0)
    now[0] = 20.0
    st.committed(20, 1.0)
    s = st.summary()
    assert s["commit"]["utilisation"] == 0.1 and s["steady_pages_per_s"] == 2.0
    assert s["render"]["workers"] == 2 and s["render"]["items"] == 40 and s["render"]["busy_s"] == 4.0
    assert s["render"]["capacity_pages_per_s"] == 20.0  # 10 pages per busy second x 2 workers
    assert s["embed"]["accelerator_busy"] == 0.8 and s["embed"]["mean_batch_pages"] == 5.0
    assert s["commit"]["items"] == 40 and s["commit"]["capacity_pages_per_s"] == 20.0
    line = bottleneck(s)
    assert line.startswith("bottleneck: embed (model forward), busy 90%") and "accelerator busy 80%" in line


def test_a_real_run_reports_stages(small_corpus, tmp_path):
    import json

    from pipelines.cli import main

    summary = tmp_path / "s.json"
    assert main(["ingest", str(small_corpus.root), "--out", str(tmp_path / "o"), "--executor", "local",
                 "--unit-max-docs", "3", "--summary", str(summary), "--quiet"]) == 0
    s = json.loads(summary.read_text())
    stages = s["stages"]
    assert {"render", "embed", "commit"} <= set(stages)
    assert stages["embed"]["items"] == stages["render"]["items"] == s["pages"]["indexed"]
    assert 0 < stages["embed"]["accelerator_busy"] <= 1 and stages["steady_pages_per_s"] > 0
    assert s["bottleneck"].startswith("bottleneck: ")
