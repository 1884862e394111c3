"""The model cache of the rendered manifests, for real where it can be here: the head's init container
runs its script from the manifest against a Hugging Face hub's HTTP API (a small local server standing
for huggingface.co, which this machine cannot reach) and fills a cache once; a second run asks the hub
nothing; pagemill's own check before a run, with the workers' environment from the manifest, finds
the checkpoint in that cache, read-only and as another user than the one that fetched it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from render_helpers import deploy, render_docs

REPO_ID = "vidore/colqwen2-v1.0-hf"  # what --model colqwen2 --weights hub loads
COMMIT = "c" * 40
FILES = {"config.json": b'{"model_type": "colqwen2"}', "model.safetensors": b"\0" * 4096}


class Hub(BaseHTTPRequestHandler):
    """The calls huggingface_hub's snapshot_download makes: the revision, the file tree, then a HEAD
    and a GET per file; one repository, anything else 404."""

    requests: list[str] = []

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        self.send_response(code)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _answer(self, head: bool):
        Hub.requests.append(f"{self.command} {self.path}")
        api = f"/api/models/{REPO_ID}/"
        if self.path.startswith(api + "revision/"):
            siblings = [{"rfilename": f} for f in FILES]
            return self._send(200, json.dumps({"id": REPO_ID, "sha": COMMIT, "siblings": siblings}).encode())
        if self.path.startswith(api + "tree/"):
            tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for f, b in FILES.items()]
            return self._send(200, json.dumps(tree).encode())
        prefix = f"/{REPO_ID}/resolve/"
        name = self.path[len(prefix):].split("/", 1)[-1] if self.path.startswith(prefix) else None
        if name in FILES:
            body = FILES[name]
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}
            return self._send(200, body, headers, head)
        return self._send(404, head=head)

    def do_GET(self):
        self._answer(head=False)

    def do_HEAD(self):
        self._answer(head=True)


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hub.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def head_and_workers(docs: dict) -> tuple[dict, list[dict]]:
    spec = next(d for d in docs["k8s/rayjob.yaml"] if d["kind"] == "RayJob")["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]["template"]["spec"]
    return head, [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def run_fetch(script: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run([sys.executable, "-c", script], env={**base, **env}, capture_output=True, text=True,
                          timeout=120)


def as_other_user(cmd: list[str]) -> list[str]:
    """Run as nobody when this is root (root ignores the read-only mode bits a mount would enforce)."""
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd] if os.geteuid() == 0 else cmd


PREFLIGHT = ("from operators.models import ModelSpec\nfrom operators.models.preflight import check_models\n"
             "check_models('colqwen2', ModelSpec('colqwen2', weights='hub'))\nprint('found')")


@pytest.fixture
def shared_dir():
    """A folder another user can reach (pytest's own are root's, mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="pagemill-cache-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for p in [path, *path.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(path)


def test_the_head_fills_the_cache_once_and_the_workers_find_it_read_only(tmp_path, shared_dir, hub):
    head, workers = head_and_workers(render_docs(None))
    fetch = head["initContainers"][0]
    mount = deploy.values.load(None)["weights_cache"]["mount"]
    fetch_env = env_of(fetch)
    assert fetch["command"][:2] == ["python", "-c"] and fetch_env["PAGEMILL_WEIGHTS"] == REPO_ID
    cache = shared_dir / "models"  # stands for the volume at `mount`
    env = {**{k: v for k, v in fetch_env.items() if v is not None}, "HF_HOME": str(cache), "HF_ENDPOINT": hub}
    assert fetch_env["HF_HOME"] == mount

    first = run_fetch(fetch["command"][2], env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"[weights] {REPO_ID}: fetched into" in first.stdout
    assert any(r.startswith(f"GET /{REPO_ID}/resolve/") for r in Hub.requests)
    snapshot = cache / "hub" / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors").read_bytes() == FILES["model.safetensors"]

    Hub.requests.clear()
    again = run_fetch(fetch["command"][2], env)
    assert again.returncode == 0 and f"[weights] {REPO_ID}: in the cache" in again.stdout, again.stderr
    assert Hub.requests == []  # fetched once: the second run does not ask the hub

    missing = run_fetch(fetch["command"][2], {**env, "PAGEMILL_WEIGHTS": "vidore/no-such-model"})
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and "vidore/no-such-model: cannot fetch it" in missing.stderr

    # The workers: the manifest's environment, the volume read-only, another user than the fetch's.
    for spec in (head, *workers):
        container = spec["containers"][0]
        worker_env = env_of(container)
        assert worker_env["HF_HOME"] == mount and worker_env["HF_HUB_OFFLINE"] == "1"
        assert {"name": "models", "mountPath": mount, "readOnly": True} in container["volumeMounts"]
    for path in [cache, *cache.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | stat.S_IROTH
                       | (stat.S_IXOTH if path.is_dir() else 0))
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    worker = {**base, "HF_HOME": str(cache), "HF_HUB_OFFLINE": worker_env["HF_HUB_OFFLINE"],
              "PYTHONPATH": str(REPO), "HOME": str(shared_dir)}
    found = subprocess.run(as_other_user([sys.executable, "-c", PREFLIGHT]), env=worker, capture_output=True,
                           text=True, timeout=120, cwd="/")
    assert found.returncode == 0 and "found" in found.stdout, found.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    lost = subprocess.run([sys.executable, "-c", PREFLIGHT], env={**worker, "HF_HOME": str(empty)},
                          capture_output=True, text=True, timeout=120)
    assert lost.returncode != 0 and "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in lost.stderr


@pytest.mark.parametrize("model,weights", [
    ("colqwen2", "hub"), ("colpali", "hub"), ("vidore/colqwen2.5-v0.2", "hub"),
    ("colqwen2,sv:qwen3-vl-embedding-2b@1024", "hub"), ("colqwen2,text:sentence-transformers/all-mpnet-base-v2", "hub"),
    ("colqwen2-tiny,sv:qwen3-vl-embedding-tiny,text:all-MiniLM-L6-v2", "random"), ("sim:colqwen2@40", "hub"),
])
def test_the_cache_holds_what_pagemills_check_before_a_run_looks_for(monkeypatch, model, weights):
    from operators.models import ModelSpec, preflight, split_model_specs

    looked_for = []
    monkeypatch.setattr(preflight, "check_checkpoint", lambda name, what: looked_for.append(name))
    preflight.check_models(model, ModelSpec(split_model_specs(model)[0], weights=weights))
    assert deploy.weights.checkpoints(model, weights) == looked_for


def test_no_cache_no_volume(tmp_path):
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"weights_cache": {"enabled": False}}))
    docs = render_docs(off)
    assert "k8s/weights-cache.yaml" not in docs
    head, workers = head_and_workers(docs)
    for spec in (head, *workers):
        assert "volumes" not in spec and "initContainers" not in spec
        assert "HF_HOME" not in env_of(spec["containers"][0]) and "volumeMounts" not in spec["containers"][0]
    on = tmp_path / "on.yaml"
    on.write_text(yaml.safe_dump({"weights_cache": {"storage_class": "efs-sc", "size": "80Gi",
                                                    "repos": ["vidore/colqwen2-v1.0-hf@abc123", "org/other"]}}))
    docs = render_docs(on)
    claim = docs["k8s/weights-cache.yaml"][0]
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "efs-sc",
                             "resources": {"requests": {"storage": "80Gi"}}}
    head, workers = head_and_workers(docs)
    assert env_of(head["initContainers"][0])["PAGEMILL_WEIGHTS"] == "vidore/colqwen2-v1.0-hf@abc123 org/other"
    assert all(s["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}]
               for s in (head, *workers))
