"""infra/: manifests parse and say what they must; the local launchers really serve pagemill."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, pagemill_cmd, s3_client, upload_folder

from pipelines.cli import build_parser

INFRA = REPO / "infra"
YAMLS = sorted(INFRA.rglob("*.yaml"))
REQUIRED = {  # kind -> dotted paths that must exist
    "RayCluster": ["spec.headGroupSpec.template.spec.containers", "spec.workerGroupSpecs"],
    "RayJob": ["spec.entrypoint", "spec.rayClusterSpec.headGroupSpec", "spec.rayClusterSpec.workerGroupSpecs"],
    "CronJob": ["spec.schedule", "spec.jobTemplate.spec.template.spec.containers", "spec.concurrencyPolicy"],
    "ServiceAccount": ["metadata.name"],
    "Role": ["rules"],
    "RoleBinding": ["subjects", "roleRef"],
}


def docs():
    for path in YAMLS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path, doc


def dig(doc, dotted):
    for part in dotted.split("."):
        doc = doc[part]
    return doc


def test_every_yaml_parses_and_there_is_each_piece():
    names = {p.relative_to(INFRA).as_posix() for p in YAMLS}
    assert {"k8s/raycluster.yaml", "k8s/rayjob.yaml", "k8s/cronjob.yaml", "ray-up/cluster.yaml",
            "milvus/values-cluster.yaml", "milvus/values-standalone.yaml"} <= names
    assert len(list(docs())) >= 8


def test_manifests_have_kind_apiversion_and_required_fields():
    kinds = set()
    for path, doc in docs():
        if "kind" not in doc:
            continue  # Helm values and the ray up config are not Kubernetes objects
        assert doc.get("apiVersion"), path
        assert doc.get("metadata", {}).get("name"), path
        for dotted in REQUIRED.get(doc["kind"], []):
            dig(doc, dotted)
        kinds.add(doc["kind"])
    assert {"RayCluster", "RayJob", "CronJob"} <= kinds


def _cluster_specs():
    for _, doc in docs():
        if doc.get("kind") == "RayCluster":
            yield doc["spec"]
        elif doc.get("kind") == "RayJob":
            yield doc["spec"]["rayClusterSpec"]


def _gpus(container):
    res = container.get("resources", {})
    return int(res.get("limits", {}).get("nvidia.com/gpu", 0)), int(res.get("requests", {}).get("nvidia.com/gpu", 0))


def test_gpu_group_requests_gpus_and_head_does_not():
    specs = list(_cluster_specs())
    assert len(specs) == 2
    for spec in specs:
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert _gpus(head) == (0, 0)
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        gpu = groups["gpu-embed"]
        assert _gpus(gpu["template"]["spec"]["containers"][0]) == (1, 1)
        assert gpu["template"]["spec"]["tolerations"] and gpu["template"]["spec"]["nodeSelector"]
        assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
        cpu = groups["cpu-render"]
        assert _gpus(cpu["template"]["spec"]["containers"][0]) == (0, 0)
    cron = next(d for _, d in docs() if d.get("kind") == "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["successfulJobsHistoryLimit"] >= 1 and cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] >= 0


SECRET_KEY = re.compile(r"(password|secret|token|access_key|accesskey|credential)", re.I)
SECRET_VALUE = re.compile(r"(AKIA[0-9A-Z]{16}|-----BEGIN|eyJ[A-Za-z0-9_-]{10,})")


def _walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, node


def test_no_plaintext_secret_values():
    for path, doc in docs():
        for where, value in _walk(doc):
            leaf = where.rsplit(".", 1)[-1]
            if isinstance(value, str):
                assert not SECRET_VALUE.search(value), f"{path}{where}"
            if SECRET_KEY.search(leaf) and not isinstance(value, bool):
                # only references (secretKeyRef names/keys) may sit under secret-ish keys
                assert "secretKeyRef" in where or "secretRef" in where or leaf in ("key", "name"), f"{path}{where}={value!r}"
        # env entries with secret-ish names must come from a Secret, not a literal value
        for where, value in _walk(doc):
            if where.endswith(".name") and isinstance(value, str) and SECRET_KEY.search(value):
                parent = where[: -len(".name")]
                assert not any(w == parent + ".value" for w, _ in _walk(doc)), f"{path}{parent} has a literal value"
    text = (INFRA / "Containerfile").read_text()
    assert not SECRET_VALUE.search(text) and "AWS_SECRET_ACCESS_KEY=" not in text
    assert re.search(r"^USER (?!root|0\b)", text, re.M), "the container must run as a non-root user"


def pagemill_commands() -> list[str]:
    """Every `pagemill ...` command line in the manifests: documented comments, YAML values, and
    entrypoints that take their settings from the pagemill-ingest ConfigMap (expanded with it)."""
    from test_manifest_facts import INGEST, expand

    found = []
    for path in YAMLS:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                found += [m.group(0) for m in re.finditer(r"pagemill (?:ingest)\b[^\"\n]*", line)]
        for doc in yaml.safe_load_all(path.read_text()):
            for _, value in _walk(doc or {}):
                if not isinstance(value, str) or "pagemill " not in value:
                    continue
                if "${" in value:
                    found.append(shlex.join(expand(value, INGEST["data"])))
                else:
                    found += [m.group(0) for m in re.finditer(r"pagemill (?:ingest)\b[^\n\"']*", value.replace("\n", " "))]
    return found


def runbook_commands() -> list[str]:
    text = (REPO / "docs" / "backfill.md").read_text()
    return [line.strip() for line in text.splitlines() if line.strip().startswith("pagemill ")]


def test_manifest_command_lines_are_accepted_by_the_cli():
    commands = pagemill_commands()
    assert len(commands) >= 2  # the RayJob entrypoint and the ray up job
    runbook = runbook_commands()
    assert {shlex.split(c)[1] for c in runbook} >= {"ingest", "report", "plan", "calibrate", "search"}
    commands += runbook
    parser = build_parser()
    for cmd in commands:
        argv = shlex.split(cmd)[1:]
        if ">" in argv:  # the shell's redirection of the output, not pagemill's
            argv = argv[:argv.index(">")]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"pagemill's parser refuses a manifest command: {cmd}")
        if args.command == "ingest":
            assert args.source and args.out


def _script(name, *args, env):
    return subprocess.run(["bash", str(INFRA / "local" / name), *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def _exports(text):
    return dict(re.findall(r"^export (\w+)=(\S+)$", text, re.M))


@pytest.mark.slow
def test_local_launchers_serve_a_real_ingest(tmp_path):
    env = dict(os.environ, PAGEMILL_LOCAL_DIR=str(tmp_path / "state"), PYTHON=sys.executable)
    started = []
    try:
        m = _script("milvus-server.sh", "start", env=env)
        assert m.returncode == 0, m.stderr
        started.append("milvus-server.sh")
        s = _script("s3-server.sh", "start", env=env)
        assert s.returncode == 0, s.stderr
        started.append("s3-server.sh")
        milvus_uri = _exports(m.stdout)["PAGEMILL_MILVUS_URI"]
        endpoint = _exports(s.stdout)["AWS_ENDPOINT_URL"]
        assert milvus_uri.startswith("http://127.0.0.1:") and endpoint.startswith("http://127.0.0.1:")

        examples = tmp_path / "pdfs"
        subprocess.run([sys.executable, str(REPO / "examples" / "make_pdfs.py"), str(examples)], check=True,
                       capture_output=True)
        client = s3_client(endpoint)
        client.create_bucket(Bucket="trial")
        upload_folder(client, examples, "trial", "pdfs/")
        summary = tmp_path / "summary.json"
        run_env = dict(env, AWS_ENDPOINT_URL=endpoint)
        r = subprocess.run(pagemill_cmd("ingest", "s3://trial/pdfs/", "--out", "s3://trial/index/", "--milvus",
                                        milvus_uri, "--executor", "local", "--summary", str(summary), "--quiet"),
                           env=run_env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        result = json.loads(summary.read_text())
        assert result["documents"]["indexed"] == 5 and result["pages"]["indexed"] == 6
        assert result["milvus"]["row_counts"]["pagemill_pages"] == 6
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="trial", Prefix="index/pages/")["Contents"])
        assert len(keys) == 2 and keys[0] == "index/pages/_manifest.json" and keys[1].endswith(".parquet"), keys
    finally:
        for name in reversed(started):
            assert _script(name, "stop", env=env).returncode == 0
    assert not list((tmp_path / "state").glob("*.pid"))


def test_containerfile_installs_the_project():
    text = (INFRA / "Containerfile").read_text()
    assert re.search(r"^FROM python:3\.11[\w.-]*-slim", text, re.M)  # torch's CUDA wheels bring CUDA
    assert "pip install /src" in text and "operators" in text and "pipelines" in text
    assert re.search(r"apt-get install [^\n]*\bwget\b", text)  # KubeRay's probes before 1.6
    assert Path(REPO / "docs" / "backfill.md").is_file()
