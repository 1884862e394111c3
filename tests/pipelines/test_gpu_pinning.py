"""Embedding actors pinned to GPUs, on a CPU-only machine: Ray started with declared GPUs.

A separate local Ray (declared ``num_gpus=2``) in a subprocess: two embedding actors must be
given two different GPU ids, and the job still completes on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO

SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, logging_level="ERROR")
    from pipelines.ingest.config import IngestConfig
    from pipelines.ingest.job import run_ingest
    cfg = IngestConfig(source=sys.argv[1], out=sys.argv[2], executor="ray", unit_max_docs=1, batch_size=1,
                       render_actors=1, progress_interval_s=60).validate()
    summary = run_ingest(cfg, log=open(os.devnull, "w"))
    ray.shutdown()
    print("SUMMARY " + json.dumps(summary))
""")


def test_two_embedding_actors_get_two_gpus(small_corpus, tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(small_corpus.root), str(tmp_path / "out")], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.split("SUMMARY ", 1)[1])
    res = summary["executor_stats"]["resources"]
    assert res["cluster_gpus"] == 2 and res["stages"]["embed"]["num_gpus"] == 1 and res["stages"]["embed"]["actors"] == 2
    # Each embedding actor that embedded a batch says which GPU it was given: different ones, from
    # the two declared. (An actor reports with its batches: on a loaded machine the first actor
    # can embed every page before the second has loaded its model, and then only one reports.)
    workers = [w for w in summary["stages"]["embed"]["per_worker"] if w["pages"]]
    devices = [w["visible_devices"] for w in workers]
    assert workers and len(set(devices)) == len(devices) and set(devices) <= {"0", "1"}, workers
    assert summary["executor_stats"]["embed_actor_devices"] == sorted(devices)
    assert summary["model"]["device"] == "cpu"  # declared GPUs, no CUDA: the model runs on the CPU
    assert summary["pages"]["indexed"] == sum(small_corpus.ok_pages.values())


DIE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PAGEMILL_KILL_AT"] = "embed_call:1"  # the first embedding batch in the cluster kills its actor
    os.environ["PAGEMILL_KILL_ONCE"] = sys.argv[3]
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    from pipelines.ingest.config import IngestConfig
    from pipelines.ingest.job import run_ingest
    # the actor's replacement and the batch's retry are the point: the simulated model, no torch
    cfg = IngestConfig(source=sys.argv[1], out=sys.argv[2], executor="ray", unit_max_docs=2,
                       model="sim:colqwen2-tiny", progress_interval_s=60).validate()
    summary = run_ingest(cfg, log=open(os.devnull, "w"))
    ray.shutdown()
    print("SUMMARY " + json.dumps(summary))
""")


def test_an_embedding_actor_dies_mid_batch_and_is_replaced(small_corpus, tmp_path):
    from conftest import read_pages

    marker = tmp_path / "died"
    r = subprocess.run([sys.executable, "-c", DIE_SCRIPT, str(small_corpus.root), str(tmp_path / "out"), str(marker)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.exists(), "the injected crash did not happen"
    summary = json.loads(r.stdout.split("SUMMARY ", 1)[1])
    assert summary["pages"]["indexed"] == sum(small_corpus.ok_pages.values())
    pages = read_pages(tmp_path / "out")
    assert sorted(pages["page_id"].to_pylist()) == sorted(small_corpus.expected_page_ids())
