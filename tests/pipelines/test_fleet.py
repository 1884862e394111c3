"""The fleet's data path: the simulated accelerator, writes on the workers of a real two-node Ray
cluster (OUT on S3, Milvus 2.3.5), a writer killed mid-unit, and a worker node lost mid-run."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import warnings

import numpy as np
import pyarrow as pa
import pytest
from conftest import REPO, pagemill_cmd, s3_client, upload_folder
from milvus_server import ROOT_PASSWORD, ROOT_USER
from test_s3_ingest import read_s3_tables

from operators.models import ModelSpec, adapter_for
from operators.render import target_size

SIM = "sim:colqwen2@20"
MAX_PIXELS = "100352"  # 128 patches a page: cheap to render and pool on 2 cores, the preset's shapes otherwise


def test_the_simulated_accelerator_has_the_presets_shapes_and_is_deterministic():
    a = adapter_for(ModelSpec(SIM))
    a.load()
    assert a.dim == 128 and a.pixel_budget().max_pixels == 28 * 28 * 768 and a.rate == 20.0
    w, h = target_size(612, 792, a.pixel_budget())
    page = np.zeros((h, w, 3), np.uint8)
    t = time.perf_counter()
    e1, e2 = a.embed_images([page, page], keys=["p1", "p2"])
    took = time.perf_counter() - t
    assert took >= 2 / 20 * 0.95  # the accelerator's time for two pages at 20 pages/s
    assert (e1.grid_h, e1.grid_w) == (h // 28, w // 28) and e1.n_patches == (h // 28) * (w // 28)
    assert len(e1.vectors) == 20 + e1.n_patches and e1.patch_offset == 4  # ColQwen2's prompt and special tokens
    assert np.allclose(np.linalg.norm(e1.vectors, axis=1), 1.0, atol=1e-5)
    again = a.embed_images([page], keys=["p1"])[0]
    assert np.array_equal(again.vectors, e1.vectors) and not np.array_equal(e1.vectors, e2.vectors)
    colpali = adapter_for(ModelSpec("sim:colpali"))
    assert len(colpali.embed_images([page], keys=["x"])[0].vectors) == 1024 + 6
    assert adapter_for(ModelSpec(SIM, max_pixels=int(MAX_PIXELS))).pixel_budget().max_pixels == int(MAX_PIXELS)


def test_a_writer_sent_to_the_workers_carries_no_secret(milvus_server, monkeypatch):
    from operators.stores.milvus.client import MilvusConnection
    from operators.stores.milvus.writer import MilvusWriter

    monkeypatch.setenv("MILVUS_PASSWORD", ROOT_PASSWORD)
    writer = MilvusWriter(MilvusConnection(milvus_server.uri, user=ROOT_USER, ca_file=milvus_server.ca_file,
                                           server_name="localhost"), "leak_check")
    writer.setup()
    try:
        assert writer.conn.password == ROOT_PASSWORD  # the driver connected with it
        blob = pickle.dumps(writer.for_workers()) + pickle.dumps(writer)
        assert ROOT_PASSWORD.encode() not in blob
    finally:
        writer.drop()
        writer.close()


@pytest.fixture(scope="module")
def two_nodes(milvus_server, tmp_path_factory):
    """A Ray cluster of two nodes on this machine (a head and a worker node, each its own raylet),
    started with what a pod would have in its environment: S3 credentials (conftest), the Milvus
    password, and a fault that kills the first writer that finishes its Milvus writes, once."""
    from ray.cluster_utils import Cluster

    marker = tmp_path_factory.mktemp("faults") / "writer-killed"
    env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "MILVUS_PASSWORD": ROOT_PASSWORD,
           "PAGEMILL_KILL_AT": "vectors_written:1", "PAGEMILL_KILL_ONCE": str(marker)}

    def with_pod_env(fn, *args, **kwargs):
        """Start Ray processes with what a pod has in its environment (its Secrets)."""
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return fn(*args, **kwargs)
        finally:
            for k, v in saved.items():
                if k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"):
                    continue
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    cluster = with_pod_env(Cluster, initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker = with_pod_env(cluster.add_node, num_cpus=2)
    cluster.wait_for_nodes()
    cluster.add_pod = lambda: with_pod_env(cluster.add_node, num_cpus=2)  # a replacement node, like the fleet's
    try:
        yield cluster, worker, marker
    finally:
        cluster.shutdown()


def _two_live_nodes(cluster) -> None:
    """The cluster a test starts from: the head and a worker node, alive. A worker node that died
    before the test touched it (a raylet lost at start-up, outside pagemill) is replaced the way
    the fleet replaces a pod, and the test says so in a warning."""
    nodes = {n["NodeID"]: n for n in cluster.global_state.node_table()}
    assert nodes[cluster.head_node.node_id]["Alive"], "the head node died"
    for node in list(cluster.worker_nodes):
        info = nodes.get(node.node_id, {})
        if not (info.get("Alive") and node.remaining_processes_alive()):
            warnings.warn(f"worker node {node.node_id[:8]} died before the test "
                          f"({info.get('DeathReasonMessage') or 'its raylet is gone'}): replaced", stacklevel=2)
            cluster.remove_node(node, allow_graceful=False)
            cluster.add_pod()
    cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def fleet_source(s3_endpoint, small_corpus):
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="fleet")
    for copy in "abcd":  # four copies under different names: enough pages to keep both nodes busy
        upload_folder(client, small_corpus.root, "fleet", f"docs/{copy}/")
    return client


def _ingest(endpoint, server, out_prefix, collection, *extra, env=None, background=False):
    args = pagemill_cmd("ingest", "s3://fleet/docs/", "--out", f"s3://fleet/{out_prefix}/", "--s3-endpoint-url", endpoint,
                        "--milvus", server.uri, "--milvus-user", ROOT_USER, "--milvus-ca-file", server.ca_file,
                        "--milvus-server-name", "localhost", "--collection", collection, "--model", SIM,
                        "--max-pixels", MAX_PIXELS, "--layouts", "mv-pool3", "--unit-max-docs", "2", "--quiet",
                        "--summary", str(REPO / f".pagemill-local/{collection}.json"), *extra)
    (REPO / ".pagemill-local").mkdir(exist_ok=True)
    env = dict(os.environ, MILVUS_PASSWORD=ROOT_PASSWORD, **(env or {}))
    env.pop("PAGEMILL_KILL_AT", None)
    if background:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((REPO / f".pagemill-local/{collection}.json").read_text()), r.stderr


def _pages(client, prefix: str) -> pa.Table:
    return read_s3_tables(client, "fleet", f"{prefix}/pages/").sort_by("page_id")


def _counts(server, collection: str) -> dict[str, int]:
    client = server.client()
    try:
        return {c: int(client.query(c, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
                for c in sorted(client.list_collections()) if c.startswith(collection + "_")}
    finally:
        client.close()


def _expected_counts(pages: pa.Table, collection: str) -> dict[str, int]:
    return {f"{collection}_pages": pages.num_rows, f"{collection}_patches": sum(pages["n_vectors"].to_pylist()),
            f"{collection}_patches_pool3": sum(len(v) for v in pages["mv_pool3"].to_pylist())}


@pytest.fixture(scope="module")
def single_node(s3_endpoint, milvus_server, fleet_source):
    """The reference: the same job on one node (the local executor)."""
    summary, _ = _ingest(s3_endpoint, milvus_server, "single", "fleet_single", "--executor", "local")
    return summary, _pages(fleet_source, "single")


def test_writes_happen_on_both_nodes_and_equal_a_single_node_run(two_nodes, single_node, s3_endpoint, milvus_server,
                                                                 fleet_source):
    cluster, _, marker = two_nodes
    _two_live_nodes(cluster)
    summary, stderr = _ingest(s3_endpoint, milvus_server, "multi", "fleet_multi", "--ray-address", cluster.address,
                              "--write-actors", "2", "--encode-actors", "2", "--render-actors", "2", "--embed-actors", "2",
                              "--write-batch-pages", "8")
    assert "writes: on the workers" in stderr
    assert summary["executor_stats"]["write_placement"] == "workers"
    # A writer was killed after its Parquet part and Milvus rows, before its result reached the
    # driver: Ray restarted it and retried the batch (same part key, idempotent upserts).
    assert marker.exists()
    nodes = {w["node_id"] for w in summary["stages"]["write"]["per_worker"]}
    assert len(nodes) == 2, summary["stages"]["write"]["per_worker"]  # writes on both nodes
    assert all(w.get("node_id") for s in ("render", "embed", "encode") for w in summary["stages"][s]["per_worker"])
    ref_summary, ref = single_node
    got = _pages(fleet_source, "multi")
    # Page for page (vectors included: the simulated accelerator is deterministic per page id).
    assert got.equals(ref)
    assert summary["pages"]["indexed"] == ref_summary["pages"]["indexed"] == got.num_rows
    assert _counts(milvus_server, "fleet_multi") == _expected_counts(got, "fleet_multi")


def test_lancedb_fragments_written_on_both_nodes_with_a_writer_killed(two_nodes, single_node, s3_endpoint,
                                                                     fleet_source):
    """LanceDB in the bucket: the writers on both nodes write fragments, the driver commits them;
    a writer killed after its fragments, before its result reached the driver, is retried, and
    the fragments of the killed attempt (never committed) are removed at the end of the run."""
    import lance

    from operators.stores.lancedb.store import storage_options

    cluster, _, marker = two_nodes
    _two_live_nodes(cluster)
    marker.unlink(missing_ok=True)  # the fault again: the first writer past its vector writes dies
    summary_path = REPO / ".pagemill-local/fleet-lance.json"
    env = dict(os.environ)
    env.pop("PAGEMILL_KILL_AT", None)
    r = subprocess.run(pagemill_cmd("ingest", "s3://fleet/docs/", "--out", "s3://fleet/lance/", "--s3-endpoint-url",
                                    s3_endpoint, "--vectors", "lancedb:", "--model", SIM, "--max-pixels", MAX_PIXELS,
                                    "--layouts", "mv-pool3", "--unit-max-docs", "2", "--quiet", "--ray-address",
                                    cluster.address, "--write-actors", "2", "--encode-actors", "2", "--render-actors",
                                    "2", "--embed-actors", "2", "--write-batch-pages", "8", "--summary",
                                    str(summary_path)),
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert marker.exists() and summary["executor_stats"]["write_placement"] == "workers"
    assert len({w["node_id"] for w in summary["stages"]["write"]["per_worker"]}) == 2
    _, ref = single_node
    got = _pages(fleet_source, "lance")
    assert got.equals(ref)  # page for page, vectors included
    root = "s3://fleet/lance/lancedb/pagemill_pages.lance"
    options = {**storage_options(root), "aws_endpoint": s3_endpoint, "allow_http": "true", "aws_region": "us-east-1"}
    ds = lance.dataset(root, storage_options=options)
    rows = ds.to_table(columns=["page_id", "mv_pool3"])
    assert sorted(rows["page_id"].to_pylist()) == sorted(got["page_id"].to_pylist())  # each page once
    named = {f.path for v in ds.versions() for frag in lance.dataset(root, version=v["version"], storage_options=options
                                                                     ).get_fragments() for f in frag.data_files()}
    listed = fleet_source.list_objects_v2(Bucket="fleet", Prefix="lance/lancedb/pagemill_pages.lance/data/")
    assert {o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", [])} == named  # the killed attempt's gone


def test_a_worker_node_lost_mid_run_still_ends_with_the_same_pages(two_nodes, single_node, s3_endpoint, milvus_server,
                                                                   fleet_source):
    cluster, _, _ = two_nodes
    _two_live_nodes(cluster)
    worker = next(n for n in cluster.worker_nodes)
    proc = _ingest(s3_endpoint, milvus_server, "lost", "fleet_lost", "--ray-address", cluster.address,
                   "--write-actors", "2", "--encode-actors", "2", "--render-actors", "2", "--embed-actors", "2",
                   "--write-batch-pages", "8", background=True)
    deadline = time.monotonic() + 300
    records = []
    while not records and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for a state (a committed unit), not timing anything
        records = fleet_source.list_objects_v2(Bucket="fleet", Prefix="lost/_ledger/units/").get("Contents", [])
    assert proc.poll() is None, "the run ended before a node could be removed: " + proc.communicate()[1][-2000:]
    cluster.remove_node(worker, allow_graceful=False)  # preempted: its actors and objects are gone
    # The fleet replaces a lost node (KubeRay, the autoscaler): the dead actors restart there and
    # their batches are retried (same part keys, idempotent upserts). The pools were sized for two
    # nodes, so without a replacement the run would wait for capacity instead of finishing.
    cluster.add_pod()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    _, ref = single_node
    got = _pages(fleet_source, "lost")
    assert got["page_id"].to_pylist() == ref["page_id"].to_pylist()  # every page once
    assert got.equals(ref)
    assert _counts(milvus_server, "fleet_lost") == _expected_counts(got, "fleet_lost")


def test_layouts_added_on_the_workers_of_the_cluster(two_nodes, s3_endpoint, milvus_server, fleet_source):
    """pagemill relayout on the Ray executor: the shards are rewritten by actors on the workers,
    and the new layout's Milvus rows written there; the result equals the layout computed here."""
    import pyarrow.compute as pc

    cluster, _, _ = two_nodes
    _two_live_nodes(cluster)
    prefix, collection = "multi", "fleet_multi"
    before = _pages(fleet_source, prefix)
    env = dict(os.environ, MILVUS_PASSWORD=ROOT_PASSWORD)
    env.pop("PAGEMILL_KILL_AT", None)
    r = subprocess.run(pagemill_cmd("relayout", f"s3://fleet/{prefix}/", "--layouts", "mv-bin", "--s3-endpoint-url",
                                    s3_endpoint, "--milvus", milvus_server.uri, "--milvus-user", ROOT_USER,
                                    "--milvus-ca-file", milvus_server.ca_file, "--milvus-server-name", "localhost",
                                    "--ray-address", cluster.address, "--quiet", "--summary",
                                    str(REPO / ".pagemill-local/relayout.json")),
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((REPO / ".pagemill-local/relayout.json").read_text())
    assert summary["pages"]["relayouted"] == before.num_rows and summary["pages"]["embedded"] == 0
    after = _pages(fleet_source, prefix)
    assert after.drop(["mv_bin"]).equals(before)
    from operators.augment import archived_embeddings
    from operators.layouts.layout import LayoutEncoder, parse_layout

    here = LayoutEncoder([parse_layout("mv-bin")], 128).columns(archived_embeddings(before, 128))["mv_bin"]
    assert after["mv_bin"].combine_chunks().equals(here)
    assert _counts(milvus_server, collection)[f"{collection}_patches_bin"] == \
        int(pc.sum(pc.list_value_length(after["mv_bin"])).as_py())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
