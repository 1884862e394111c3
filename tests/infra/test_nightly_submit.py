"""infra/k8s/nightly_submit.py, the CronJob's pod, run as it runs there (a process with a
ServiceAccount folder and an API address), against a stand-in for the Kubernetes API: no API server
can run here, so a small HTTP server answers the RayJob calls the script makes the way the API
server does (201 Created, 409 AlreadyExists, 404, label-selected lists) and lets the test move the
RayJobs' status as KubeRay would. What this checks is the script's decisions; the RBAC and the
manifest fields are checked in test_manifest_facts.py, a real cluster only in the runbook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import REPO

SCRIPT = REPO / "infra" / "k8s" / "nightly_submit.py"
TEMPLATE = REPO / "infra" / "k8s" / "rayjob.yaml"
PREFIX = "/apis/ray.io/v1/namespaces/batch/rayjobs"


class StandInApi:
    """RayJobs in one namespace; `progress` is the jobDeploymentStatus sequence a RayJob goes through
    as it is read (the last one sticks), as KubeRay would move it."""

    def __init__(self, progress=("Initializing", "Running", "Complete"), job_status="SUCCEEDED"):
        self.jobs: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.progress, self.job_status = list(progress), job_status
        self.reads: dict[str, int] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str):
                url = urlparse(self.path)
                api.calls.append((method, self.path))
                if self.headers.get("Authorization") != "Bearer test-token" or not url.path.startswith(PREFIX):
                    return self._send(403, {"kind": "Status", "code": 403})
                name = url.path[len(PREFIX):].strip("/")
                if method == "GET" and not name:
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    key, _, value = selector.partition("=")
                    items = [j for j in api.jobs.values() if j["metadata"].get("labels", {}).get(key) == value]
                    return self._send(200, {"kind": "RayJobList", "items": items})
                if method == "POST":
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    name = body["metadata"]["name"]
                    if name in api.jobs:
                        return self._send(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
                    body["metadata"]["creationTimestamp"] = datetime.now(timezone.utc).isoformat()
                    api.jobs[name] = body
                    return self._send(201, body)
                if name not in api.jobs:
                    return self._send(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                if method == "DELETE":
                    return self._send(200, api.jobs.pop(name))
                api.advance(name)
                return self._send(200, api.jobs[name])

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def advance(self, name: str) -> None:
        job = self.jobs[name]
        if "status" in job and job["status"].get("jobDeploymentStatus") in ("Complete", "Failed"):
            return
        n = self.reads.get(name, 0)
        self.reads[name] = n + 1
        state = self.progress[min(n, len(self.progress) - 1)]
        job["status"] = {"jobDeploymentStatus": state}
        if state in ("Complete", "Failed"):
            job["status"]["jobStatus"] = self.job_status
            if state == "Failed":
                job["status"]["reason"] = "DeadlineExceeded"

    def add(self, name: str, deployment: str, created: str, **status) -> None:
        self.jobs[name] = {"apiVersion": "ray.io/v1", "kind": "RayJob",
                           "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "pagemill"},
                                        "creationTimestamp": created},
                           "status": {"jobDeploymentStatus": deployment, **status}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def run(tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("test-token\n")
    (sa / "namespace").write_text("batch\n")
    apis = []

    def _run(api: StandInApi, keep: int = 7) -> subprocess.CompletedProcess:
        apis.append(api)
        env = dict(os.environ, PAGEMILL_K8S_API=api.url, PAGEMILL_SA_DIR=str(sa), RAYJOB_TEMPLATE=str(TEMPLATE),
                   POLL_SECONDS="0.05", KEEP=str(keep))
        return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)

    yield _run
    for api in apis:
        api.close()


def tonight_name() -> str:
    return "pagemill-ingest-" + datetime.now(timezone.utc).strftime("%Y%m%d")


def test_creates_tonights_rayjob_and_waits_for_it_to_complete(run):
    api = StandInApi()
    r = run(api)
    assert r.returncode == 0, r.stdout + r.stderr
    job = api.jobs[tonight_name()]
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("sh -c 'exec pagemill ingest")
    assert job["metadata"]["labels"]["app.kubernetes.io/name"] == "pagemill"
    assert api.reads[tonight_name()] == 3  # polled through Initializing and Running to Complete
    assert f"{tonight_name()}: jobDeploymentStatus=Complete jobStatus=SUCCEEDED" in r.stdout


def test_a_retried_pod_follows_tonights_rayjob_instead_of_failing(run):
    api = StandInApi()
    api.add(tonight_name(), "Running", datetime.now(timezone.utc).isoformat())
    r = run(api)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exists already: following it" in r.stdout
    assert [c for c in api.calls if c[0] == "POST"] == [("POST", PREFIX)]  # answered 409, not an error


@pytest.mark.parametrize("progress,job_status", [(("Running", "Failed"), "RUNNING"),  # deadline, AppFailed ...
                                                 (("Running", "Complete"), "FAILED")])  # KubeRay < 1.3 on a failed job
def test_a_failed_run_fails_the_cronjob(run, progress, job_status):
    api = StandInApi(progress=progress, job_status=job_status)
    r = run(api)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"jobDeploymentStatus={progress[-1]}" in r.stdout


def test_refuses_while_an_earlier_run_has_not_finished(run):
    api = StandInApi()
    api.add("pagemill-ingest-19991231", "Running", "1999-12-31T02:00:00Z")
    r = run(api)
    assert r.returncode == 3
    assert "refusing to start" in r.stdout and "pagemill-ingest-19991231" in r.stdout
    assert tonight_name() not in api.jobs and not [c for c in api.calls if c[0] != "GET"]


def test_keeps_the_newest_finished_rayjobs(run):
    api = StandInApi()
    for day in range(1, 6):
        api.add(f"pagemill-ingest-199911{day:02d}", "Complete" if day % 2 else "Failed", f"1999-11-{day:02d}T02:00:00Z")
    r = run(api, keep=3)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(api.jobs) == ["pagemill-ingest-19991104", "pagemill-ingest-19991105", tonight_name()]


def test_a_rayjob_deleted_while_running_fails_the_cronjob(run):
    api = StandInApi(progress=("Running",))
    api_advance = api.advance

    def advance_then_delete(name):
        api_advance(name)
        if api.reads[name] >= 2:
            api.jobs.pop(name)

    api.advance = advance_then_delete
    r = run(api)
    assert r.returncode == 1 and "was deleted before it finished" in r.stdout
