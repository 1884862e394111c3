"""The RayJob path, for real: infra/k8s/rayjob.yaml's entrypoint and runtime environment, submitted
to a Ray head that serves the dashboard the way KubeRay's K8sJobMode submitter does it, run against
a local S3 server (moto) and the test Milvus server, and read back through the Jobs API.

What stands for the cluster: a head node started with the manifest's head rayStartParams (no CPUs:
the driver only) and one CPU worker node, both with the environment the pods get (the
pagemill-ingest ConfigMap, the pagemill-s3 and pagemill-milvus Secrets). Only the endpoints differ:
AWS_ENDPOINT_URL points boto3 at moto, PAGEMILL_VECTORS at the local Milvus (TLS: its
certificate through GRPC_DEFAULT_SSL_ROOTS_FILE_PATH), and `--model colqwen2 --weights hub` finds
vidore/colqwen2-v1.0-hf in an offline Hugging Face cache holding the tiny random ColQwen2.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import REPO, S3_TEST_ENV, free_port, s3_client, upload_folder
from milvus_server import ROOT_PASSWORD, ROOT_USER

K8S = REPO / "infra" / "k8s"
RAYJOB = next(d for d in yaml.safe_load_all((K8S / "rayjob.yaml").read_text()) if d and d["kind"] == "RayJob")
INGEST_CONFIG = yaml.safe_load((K8S / "ingest-config.yaml").read_text())
HUB_ID = "vidore/colqwen2-v1.0-hf"  # what --model colqwen2 --weights hub loads (operators/models/spec.py)
RAY_BIN = str(Path(sys.executable).with_name("ray"))
BIN_DIR = str(Path(sys.executable).parent)


def go_quote(s: str) -> str:
    """Go's strconv.Quote for printable ASCII, as KubeRay quotes --runtime-env-json."""
    assert s.isascii() and s.isprintable()
    return json.dumps(s)


def runtime_env_json(rayjob: dict) -> str:
    """KubeRay converts runtimeEnvYAML with sigs.k8s.io/yaml YAMLToJSON: compact, keys sorted."""
    return json.dumps(yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"]), separators=(",", ":"), sort_keys=True)


def kuberay_submitter_command(rayjob: dict, address: str, submission_id: str) -> str:
    """The shell command of KubeRay's K8sJobMode submitter (BuildJobSubmitCommand in
    ray-operator/controllers/ray/common/job.go: the status check since KubeRay 1.3, kuberay#2579,
    and --no-wait since kuberay#3216), which the submitter pod runs with `/bin/bash -ce --`: submit
    only if the id is unknown (a retried submitter pod must not fail on a second submission), then
    follow the job's logs. The entrypoint goes in as written."""
    spec = rayjob["spec"]
    words = ["if", "!", "ray", "job", "status", "--address", address, submission_id, ">/dev/null", "2>&1", ";",
             "then", "ray", "job", "submit", "--address", address, "--no-wait"]
    if spec.get("runtimeEnvYAML"):
        words += ["--runtime-env-json", go_quote(runtime_env_json(rayjob))]
    words += ["--submission-id", submission_id, "--", spec["entrypoint"].strip(), ";", "fi", ";",
              "ray", "job", "logs", "--address", address, "--follow", submission_id]
    return " ".join(words)


HUB_CACHE_SCRIPT = """
import sys
from pathlib import Path
from operators.models import ModelSpec, adapter_for

repo = Path(sys.argv[1]) / "hub" / ("models--" + sys.argv[2].replace("/", "--"))
revision = "0" * 40
snapshot = repo / "snapshots" / revision
tiny = adapter_for(ModelSpec("colqwen2-tiny"))
tiny.load()
tiny.model.save_pretrained(snapshot)
tiny.processor.save_pretrained(snapshot)
(repo / "refs").mkdir()
(repo / "refs" / "main").write_text(revision)
"""


def start_hub_cache(hf_home: Path) -> subprocess.Popen:
    """Save the tiny random ColQwen2 where the Hugging Face cache keeps HUB_ID, for an offline
    `--weights hub` load (in a process of its own, while Ray starts)."""
    return subprocess.Popen([sys.executable, "-c", HUB_CACHE_SCRIPT, str(hf_home), HUB_ID], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read().decode()


def wait_ready(urls: list[str], procs: list[subprocess.Popen], timeout_s: float = 90.0) -> None:
    """What KubeRay's readiness probes ask (`wget ... | grep success`), polled until all answer."""
    deadline = time.monotonic() + timeout_s
    pending = list(urls)
    while pending:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"ray start exited with {p.returncode} before the node was ready")
        try:
            if "success" in _get(pending[0]):
                pending.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout_s:.0f}s: {pending[0]}")
        time.sleep(0.2)


def stop_family(procs: list[subprocess.Popen]) -> None:
    """Stop the `ray start --block` processes and everything they started. Never `ray stop`: it
    would stop every Ray on the machine, the test session's own cluster included."""
    family = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(p.pid)
            family += [root, *root.children(recursive=True)]
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    # A short grace only: raylet and GCS shut down gracefully for long once their peers are gone.
    _, alive = psutil.wait_procs(family, timeout=3)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    for p in procs:
        p.wait(timeout=10)


CHOSEN: set[int] = set()  # every port this module has handed to a Ray component


def a_port() -> int:
    """A free port no other component of these clusters was given (the kernel hands out nearby
    ports one after another: Ray refuses a worker port range that holds another component's port)."""
    while (port := free_port()) in CHOSEN:
        pass
    CHOSEN.add(port)
    return port


def a_port_range(n: int) -> int:
    """The first of ``n`` consecutive free ports that hold no port already handed out."""
    while True:
        low = free_port()
        span = range(low, low + n)
        if CHOSEN.isdisjoint(span) and all(_bindable(p) for p in span):
            CHOSEN.update(span)
            return low


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def node_ports() -> tuple[dict[str, int], list[str]]:
    ports = {name: a_port() for name in ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                                         "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")}
    low = a_port_range(41)
    args = [f"--{k}={v}" for k, v in ports.items()] + [f"--min-worker-port={low}", f"--max-worker-port={low + 40}"]
    return ports, args


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory):
    """A moto S3 server of this module's own (infra/local/s3-server.sh): the manifest's bucket and
    prefixes as written, apart from the session's S3 server that other tests use."""
    env = dict(os.environ, PAGEMILL_LOCAL_DIR=str(tmp_path_factory.mktemp("s3-state")), PYTHON=sys.executable)
    script = [str(REPO / "infra" / "local" / "s3-server.sh")]
    started = subprocess.run(["bash", *script, "start"], env=env, capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    try:
        yield re.search(r"^export AWS_ENDPOINT_URL=(\S+)$", started.stdout, re.M).group(1)
    finally:
        subprocess.run(["bash", *script, "stop"], env=env, capture_output=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def ray_job_cluster(tmp_path_factory, moto_s3, milvus_server):
    """A head with the dashboard (the manifest's head rayStartParams) and one CPU worker, with the
    pods' environment; yields the dashboard address and a scratch folder."""
    base = tmp_path_factory.mktemp("rayjob")
    hf_home = base / "hf"
    hub_cache = start_hub_cache(hf_home)
    config = dict(INGEST_CONFIG["data"], PAGEMILL_VECTORS=milvus_server.uri)  # the local server
    secrets = dict(S3_TEST_ENV, MILVUS_TOKEN=f"{ROOT_USER}:{ROOT_PASSWORD}")
    pod_env = dict(os.environ, **config, **secrets, AWS_ENDPOINT_URL=moto_s3, HF_HOME=str(hf_home),
                   HF_HUB_OFFLINE="1", GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=milvus_server.ca_file,
                   RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                   PATH=BIN_DIR + os.pathsep + os.environ.get("PATH", ""))  # the image's PATH has pagemill
    for var in ("RAY_ADDRESS", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        pod_env.pop(var, None)

    head = RAYJOB["spec"]["rayClusterSpec"]["headGroupSpec"]
    gcs, dashboard, client = a_port(), a_port(), a_port()
    # A short folder: the dashboard's modules listen on AF_UNIX sockets under
    # <temp-dir>/session_<time>_<pid>/sockets/, and a socket path over 107 bytes fails their start
    # (a pytest folder like /tmp/pytest-of-root/pytest-119/rayjob0/ray is long enough to).
    ray_tmp = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))
    head_ports, head_port_args = node_ports()
    # Loopback here, not 0.0.0.0; the metrics on a free port, not the pods' 8080 (a shared machine).
    params = dict(head["rayStartParams"], **{"dashboard-host": "127.0.0.1",
                                             "metrics-export-port": str(head_ports["metrics-export-port"])})
    head_cmd = [RAY_BIN, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}", "--num-gpus=0",
                f"--temp-dir={ray_tmp}", "--object-store-memory=200000000", "--disable-usage-stats",
                *head_port_args, *[f"--{k}={v}" for k, v in params.items()]]
    worker_ports, worker_port_args = node_ports()
    worker_cmd = [RAY_BIN, "start", "--block", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1",
                  "--num-cpus=2", "--num-gpus=0", "--object-store-memory=400000000", "--disable-usage-stats",
                  *worker_port_args]
    procs = []
    log = open(base / "ray-start.log", "wb")
    try:
        procs.append(subprocess.Popen(head_cmd, env=pod_env, stdout=log, stderr=subprocess.STDOUT))
        wait_ready([f"http://127.0.0.1:{dashboard}/api/gcs_healthz",
                    f"http://127.0.0.1:{head_ports['dashboard-agent-listen-port']}/api/local_raylet_healthz"], procs)
        procs.append(subprocess.Popen(worker_cmd, env=pod_env, stdout=log, stderr=subprocess.STDOUT))
        wait_ready([f"http://127.0.0.1:{worker_ports['dashboard-agent-listen-port']}/api/local_raylet_healthz"], procs)
        _, err = hub_cache.communicate(timeout=180)
        assert hub_cache.returncode == 0, err.decode()[-2000:]
        yield {"address": f"http://127.0.0.1:{dashboard}", "base": base,
               "metrics": [head_ports["metrics-export-port"], worker_ports["metrics-export-port"]]}
    finally:
        stop_family(procs)
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        if hub_cache.poll() is None:
            hub_cache.kill()
            hub_cache.wait(timeout=10)


def ray_nodes_log(cluster: dict) -> str:
    """The end of `ray start --block`'s output: it names a node process that died (a raylet
    killed by signal 9 means a `ray stop --force` elsewhere on the machine, e.g. another test
    session ending, which stops every Ray process it can see)."""
    return "\n--- ray start --block:\n" + (cluster["base"] / "ray-start.log").read_text(errors="replace")[-1500:]


def submitter_env() -> dict:
    """The submitter pod's environment: the image's, none of the ConfigMap or Secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAGEMILL_", "AWS_", "MILVUS_"))}
    return dict(env, PATH=BIN_DIR + os.pathsep + env.get("PATH", ""), RAY_AUTH_MODE="disabled",
                RAY_USAGE_STATS_ENABLED="0")


def run_submitter(address: str, submission_id: str, rayjob: dict = RAYJOB) -> subprocess.CompletedProcess:
    cmd = kuberay_submitter_command(rayjob, address, submission_id)
    return subprocess.run(["/bin/bash", "-ce", "--", cmd], env=submitter_env(), capture_output=True, text=True,
                          timeout=300, cwd="/")


def wait_terminal(client, submission_id: str, timeout_s: float = 120.0):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(submission_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_rayjob_entrypoint_runs_through_the_kuberay_submitter(ray_job_cluster, moto_s3, milvus_server):
    from ray.job_submission import JobStatus, JobSubmissionClient

    config = INGEST_CONFIG["data"]
    bucket, prefix = config["PAGEMILL_SOURCE"].removeprefix("s3://").split("/", 1)
    s3 = s3_client(moto_s3)
    s3.create_bucket(Bucket=bucket)
    pdfs = ray_job_cluster["base"] / "pdfs"
    subprocess.run([sys.executable, str(REPO / "examples" / "make_pdfs.py"), str(pdfs)], check=True,
                   capture_output=True)
    upload_folder(s3, pdfs, bucket, prefix)

    address = ray_job_cluster["address"]
    submission_id = f"{RAYJOB['metadata']['name']}-{uuid.uuid4().hex[:5]}"
    first = run_submitter(address, submission_id)
    assert first.returncode == 0, first.stderr[-2000:] + ray_nodes_log(ray_job_cluster)

    # Status and logs through the Jobs API, as the operator reads them.
    client = JobSubmissionClient(address)
    assert wait_terminal(client, submission_id) == JobStatus.SUCCEEDED, client.get_job_logs(submission_id)[-3000:]
    info = client.get_job_info(submission_id)
    assert info.entrypoint.startswith("sh -c 'exec pagemill ingest \"${PAGEMILL_SOURCE:?}\"")
    assert info.runtime_env["env_vars"] == yaml.safe_load(RAYJOB["spec"]["runtimeEnvYAML"])["env_vars"]
    logs = client.get_job_logs(submission_id)
    assert "[pagemill] run " in logs and "5 documents seen" in logs
    assert "[pagemill] run " in first.stdout  # the submitter followed the same logs
    for secret in (ROOT_PASSWORD, S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in logs

    # The head's shell expanded the ConfigMap's settings: what the run wrote, where it wrote it.
    out_bucket, out_prefix = config["PAGEMILL_OUT"].removeprefix("s3://").split("/", 1)
    runs = s3.list_objects_v2(Bucket=out_bucket, Prefix=out_prefix + "_runs/")["Contents"]
    summary = json.loads(s3.get_object(Bucket=out_bucket, Key=runs[0]["Key"])["Body"].read())
    assert summary["documents"]["indexed"] == 5 and summary["pages"]["indexed"] == 6
    assert summary["model"]["model"] == "colqwen2" and summary["model"]["weights"] == "hub"
    assert summary["executor_stats"]["resources"]["cluster_cpus"] == 2.0  # the worker's: the head has none
    assert s3.list_objects_v2(Bucket=out_bucket, Prefix=out_prefix + "pages/")["KeyCount"] >= 1
    milvus = milvus_server.client()
    try:
        pages = f"{config['PAGEMILL_COLLECTION']}_pages"
        rows = milvus.query(pages, filter="", output_fields=["count(*)"], consistency_level="Strong")
        assert rows[0]["count(*)"] == 6
    finally:
        for name in milvus.list_collections():
            if name.startswith(config["PAGEMILL_COLLECTION"] + "_"):
                milvus.drop_collection(name)
        milvus.close()

    # Ray's own metrics, on each node's metrics-export-port (what the manifests' PodMonitor scrapes
    # as the container port named metrics).
    for port in ray_job_cluster["metrics"]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as r:
            assert re.search(r"^ray_\w+", r.read().decode(), re.M), port

    # A retried submitter pod finds the job and follows it instead of submitting it again.
    again = run_submitter(address, submission_id)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[pagemill] run " in again.stdout
    assert [j.submission_id for j in client.list_jobs()].count(submission_id) == 1


def test_missing_site_setting_stops_the_entrypoint_with_its_name(ray_job_cluster):
    """The entrypoint's ${VAR:?} guard: without the Milvus URI the job fails at once, naming the
    variable, rather than running pagemill with an empty argument."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    env = yaml.safe_load(RAYJOB["spec"]["runtimeEnvYAML"])
    env["env_vars"]["PAGEMILL_VECTORS"] = ""  # as an empty ConfigMap value would leave it
    client = JobSubmissionClient(ray_job_cluster["address"])
    submission_id = client.submit_job(entrypoint=RAYJOB["spec"]["entrypoint"].strip(), runtime_env=env)
    assert wait_terminal(client, submission_id) == JobStatus.FAILED
    logs = client.get_job_logs(submission_id)
    assert "PAGEMILL_VECTORS: parameter" in logs and "[pagemill]" not in logs  # sh: "parameter not set or null"
