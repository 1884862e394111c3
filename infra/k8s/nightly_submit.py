"""Nightly submitter for infra/k8s/cronjob.yaml: creates tonight's RayJob from rayjob.yaml and waits
for KubeRay to finish it. Runs in the pagemill image (Python and PyYAML, nothing else: it talks to
the Kubernetes API with the pod's ServiceAccount token).

- Tonight's RayJob is `<name in rayjob.yaml>-YYYYMMDD` (UTC); creating it again (a retried pod)
  finds it and follows it instead of failing on AlreadyExists.
- It refuses to start (exit 3) while an earlier pagemill RayJob has not finished, so a run longer
  than a day never overlaps the next night's (pagemill's own lock on OUT would refuse it as well).
- It waits on `.status.jobDeploymentStatus` until Complete or Failed (KubeRay sets Failed on
  SubmissionFailed, DeadlineExceeded, AppFailed ...); exit 0 only when the Ray job SUCCEEDED.
- It deletes finished pagemill RayJobs beyond the newest KEEP (their clusters are gone already).

Environment: RAYJOB_TEMPLATE (/job/rayjob.yaml), POLL_SECONDS (60), KEEP (7); KUBERNETES_SERVICE_HOST
and _PORT come from Kubernetes. PAGEMILL_K8S_API and PAGEMILL_SA_DIR override the API address and
the ServiceAccount folder (for tests).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import yaml

SA_DIR = os.environ.get("PAGEMILL_SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
FINISHED = ("Complete", "Failed")  # KubeRay's terminal jobDeploymentStatus values
LABEL = "app.kubernetes.io/name=pagemill"
REFUSED = 3


class Api:
    """The few RayJob calls this needs, on the Kubernetes REST API."""

    def __init__(self) -> None:
        self.base = os.environ.get("PAGEMILL_K8S_API") or (
            f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}")
        with open(os.path.join(SA_DIR, "token")) as f:
            self.token = f.read().strip()
        with open(os.path.join(SA_DIR, "namespace")) as f:
            self.namespace = f.read().strip()
        ca = os.path.join(SA_DIR, "ca.crt")
        self.ssl = ssl.create_default_context(cafile=ca) if self.base.startswith("https") else None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        url = f"{self.base}/apis/ray.io/v1/namespaces/{self.namespace}/rayjobs{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30, context=self.ssl) as r:
            return json.loads(r.read() or b"{}")

    def list(self) -> list[dict]:
        return self.call("GET", "?labelSelector=" + urllib.parse.quote(LABEL))["items"]

    def get(self, name: str) -> dict:
        return self.call("GET", f"/{name}")

    def create(self, body: dict) -> bool:
        """True if created, False if it already existed (409 AlreadyExists)."""
        try:
            self.call("POST", "", body)
            return True
        except urllib.error.HTTPError as e:
            if e.code == 409:
                return False
            raise

    def delete(self, name: str) -> None:
        try:
            self.call("DELETE", f"/{name}")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise


def deployment_status(job: dict) -> str:
    return (job.get("status") or {}).get("jobDeploymentStatus", "")


def log(msg: str) -> None:
    print(f"[nightly] {msg}", flush=True)


def tonight(template: dict, now: datetime) -> dict:
    job = json.loads(json.dumps(template))
    night = now.strftime("%Y%m%d")
    meta = job["metadata"]
    meta["name"] = f"{meta['name']}-{night}"
    meta.setdefault("labels", {}).update({"app.kubernetes.io/name": "pagemill", "pagemill.io/night": night})
    for key in ("resourceVersion", "uid", "creationTimestamp", "namespace"):
        meta.pop(key, None)
    job.pop("status", None)
    return job


def prune(api: Api, keep: int) -> None:
    finished = [j for j in api.list() if deployment_status(j) in FINISHED]
    finished.sort(key=lambda j: j["metadata"].get("creationTimestamp", ""), reverse=True)
    for job in finished[keep:]:
        log(f"deleting {job['metadata']['name']} ({deployment_status(job)})")
        api.delete(job["metadata"]["name"])


def main() -> int:
    with open(os.environ.get("RAYJOB_TEMPLATE", "/job/rayjob.yaml")) as f:
        template = next(d for d in yaml.safe_load_all(f) if d and d.get("kind") == "RayJob")
    poll = float(os.environ.get("POLL_SECONDS", "60"))
    keep = int(os.environ.get("KEEP", "7"))
    api = Api()
    job = tonight(template, datetime.now(timezone.utc))
    name = job["metadata"]["name"]

    unfinished = [j["metadata"]["name"] for j in api.list()
                  if j["metadata"]["name"] != name and deployment_status(j) not in FINISHED]
    if unfinished:
        log(f"refusing to start {name}: {', '.join(sorted(unfinished))} has not finished")
        return REFUSED
    log(f"created {name}" if api.create(job) else f"{name} exists already: following it")

    while True:
        try:
            status = api.get(name).get("status") or {}
        except urllib.error.HTTPError as e:
            if e.code == 404:
                log(f"{name} was deleted before it finished")
                return 1
            log(f"reading {name}: {e}; trying again")  # a passing API server error
            status = {}
        except OSError as e:
            log(f"reading {name}: {e}; trying again")
            status = {}
        deployment = status.get("jobDeploymentStatus", "")
        if deployment in FINISHED:
            break
        time.sleep(poll)
    job_status, reason = status.get("jobStatus", ""), status.get("reason", "")
    log(f"{name}: jobDeploymentStatus={deployment} jobStatus={job_status or '-'} reason={reason or '-'}")
    prune(api, keep)
    return 0 if deployment == "Complete" and job_status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
