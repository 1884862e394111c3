"""infra/ checked field by field against the schemas and sources it is applied to (schema_facts.py
says where each fact was read): every key of every Kubernetes object against its type, the KubeRay
version the manifests need, the Milvus chart's keys, the ray up config against Ray's own validator
and EC2's RunInstances model, the IAM policies against the calls Ray makes, and the images."""

from __future__ import annotations

import inspect
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from schema_facts import (
    DASHBOARD_AGENT_PORT,
    ENUMS,
    FORBIDDEN_IMAGE_PREFIXES,
    IMAGE_TAG_POLICIES,
    JOB_DEPLOYMENT_TERMINAL,
    K8S_API_VERSIONS,
    K8S_TYPES,
    KUBERAY_PORTS,
    KUBERAY_REQUIRED,
    KUBERAY_TYPES,
    MILVUS_26_REMOVED_COMPONENTS,
    MILVUS_CHART_TOP_KEYS,
    MILVUS_COMPONENT_KEYS,
    MILVUS_COMPONENTS,
    MILVUS_EXTERNAL_S3_KEYS,
    MILVUS_STANDALONE_QUEUES,
    PROBE_COMMAND,
    PROBE_PATHS,
    PROMETHEUS_OPERATOR_REQUIRED,
    PROMETHEUS_OPERATOR_TYPES,
    RAY_AWS_EC2_CALLS,
    RAY_DEFAULT_AMI_NAME,
    SUBMISSION_MODES,
    load_nightly_submit,
    milvus_service_name,
)

INFRA = REPO / "infra"
K8S = INFRA / "k8s"
RUNBOOK = (REPO / "docs" / "backfill.md").read_text()
PYPROJECT_TEXT = (REPO / "pyproject.toml").read_text()
PROJECT_VERSION = re.search(r'^version = "([^"]+)"', PYPROJECT_TEXT, re.M).group(1)
TYPES = {**K8S_TYPES, **KUBERAY_TYPES, **PROMETHEUS_OPERATOR_TYPES}
REQUIRED = {**KUBERAY_REQUIRED, **PROMETHEUS_OPERATOR_REQUIRED}


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def of_kind(kind: str) -> list[dict]:
    return [d for _, d in k8s_docs() if d["kind"] == kind]


RAYJOB = of_kind("RayJob")[0]
CRONJOB = of_kind("CronJob")[0]
INGEST = next(d for d in of_kind("ConfigMap") if d["metadata"]["name"] == "pagemill-ingest")


def check(value, typ, where: str, used: list) -> list[str]:
    """Errors of `value` against type `typ`; records (where, since) of version-gated fields."""
    if isinstance(typ, list):
        if not isinstance(value, list):
            return [f"{where}: a list expected"]
        return [e for i, v in enumerate(value) for e in check(v, typ[0], f"{where}[{i}]", used)]
    if typ == "any":
        return []
    if typ == "str":
        return [] if isinstance(value, str) else [f"{where}: a string expected, got {value!r}"]
    if typ == "int":
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: an integer expected"]
    if typ == "bool":
        return [] if isinstance(value, bool) else [f"{where}: true/false expected, got {value!r}"]
    if typ == "map":  # map[string]string: YAML numbers and booleans are rejected by the API server
        bad = [k for k, v in (value or {}).items() if not isinstance(v, str)]
        return [f"{where}.{k}: a string value expected (quote it)" for k in bad]
    if typ == "quantities":
        return [f"{where}.{k}: a quantity expected" for k, v in value.items() if not isinstance(v, str | int)]
    fields = TYPES[typ]
    if not isinstance(value, dict):
        return [f"{where}: an object ({typ}) expected"]
    errors = [f"{where}: {typ} requires {k}" for k in REQUIRED.get(typ, ()) if k not in value]
    for key, v in value.items():
        if key not in fields:
            errors.append(f"{where}.{key}: not a field of {typ}")
            continue
        ftyp = fields[key]
        if isinstance(ftyp, tuple):
            ftyp, since = ftyp
            used.append((f"{where}.{key}", since))
        allowed = ENUMS.get((typ, key))
        if allowed and v not in allowed:
            errors.append(f"{where}.{key}: {v!r} is not one of {sorted(allowed)}")
        errors += check(v, ftyp, f"{where}.{key}", used)
    return errors


def kuberay_minimum(doc: dict) -> tuple[int, int]:
    used: list = []
    assert check(doc, doc["kind"], doc["kind"], used) == []
    versions = [since for _, since in used] + [(1, 0)]
    if doc["kind"] == "RayJob":
        versions.append(SUBMISSION_MODES[doc["spec"].get("submissionMode", "K8sJobMode")])
    return max(versions)


@pytest.mark.parametrize("path,doc", k8s_docs(), ids=lambda x: x.name if isinstance(x, Path) else x["kind"])
def test_every_key_of_every_kubernetes_object_is_a_field_of_its_type(path, doc):
    assert doc["apiVersion"] == K8S_API_VERSIONS[doc["kind"]]
    assert check(doc, doc["kind"], f"{path.name}:{doc['kind']}", []) == []
    assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "pagemill"  # the nightly job lists by it


def test_the_checker_rejects_what_the_api_server_would():
    bad = yaml.safe_load(yaml.safe_dump(RAYJOB))
    spec = bad["spec"]
    spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # not a string
    spec["rayClusterSpec"]["workerGroupSpecs"][0].pop("minReplicas")  # required by the v1.1 CRD
    spec["backoffLimits"] = 2  # a typo
    spec["submissionMode"] = "SidecarMode"  # newer than what is declared
    errors = check(bad, "RayJob", "RayJob", [])
    assert len(errors) == 4, errors


def test_kuberay_minimum_version_is_1_2_and_said_where_it_matters():
    assert kuberay_minimum(RAYJOB) == (1, 2)  # backoffLimit
    assert kuberay_minimum(of_kind("RayCluster")[0]) <= (1, 2)
    for text in ((K8S / "rayjob.yaml").read_text(), RUNBOOK):
        assert re.search(r"KubeRay (>= ?|v?)1\.2\b", text), "the RayJob's minimum KubeRay version must be stated"


def test_rayjob_polls_and_ends_within_the_cronjobs_deadline():
    spec = RAYJOB["spec"]
    assert spec["submissionMode"] == "K8sJobMode" and spec["shutdownAfterJobFinishes"] is True
    job = CRONJOB["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > spec["activeDeadlineSeconds"] + 600  # KubeRay ends the RayJob first
    assert CRONJOB["spec"]["concurrencyPolicy"] == "Forbid" and CRONJOB["spec"]["timeZone"]
    nightly_submit = load_nightly_submit()
    assert set(nightly_submit.FINISHED) == JOB_DEPLOYMENT_TERMINAL
    source = inspect.getsource(nightly_submit)
    assert "jobDeploymentStatus" in source and "SUCCEEDED" in source


def test_head_ports_and_probes_are_what_kuberay_looks_for():
    for doc in (RAYJOB["spec"]["rayClusterSpec"], of_kind("RayCluster")[0]["spec"]):
        head = doc["headGroupSpec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in head["ports"]}
        assert ports == KUBERAY_PORTS  # the Service exposes only these: client (10001) included
        assert doc["rayVersion"] == PYPROJECT_RAY
    containerfile = (INFRA / "Containerfile").read_text()
    assert PROBE_COMMAND.split()[0] in re.search(r"apt-get install[^\n]*", containerfile).group(0)
    assert PROBE_PATHS["api/local_raylet_healthz"] == DASHBOARD_AGENT_PORT


def _pin(requirement: str, name: str) -> str:
    m = re.search(rf"{name}\[([\w,]+)\]==([\d.]+)", requirement)
    assert m, requirement
    return m.group(1), m.group(2)


_extras, PYPROJECT_RAY = _pin(re.search(r'^\s*"(ray\[[^"]+)"', PYPROJECT_TEXT, re.M).group(1), "ray")


def test_one_ray_version_everywhere_with_the_dashboard():
    import ray

    assert {"default", "data"} <= set(_extras.split(","))
    assert ray.__version__ == PYPROJECT_RAY
    setup = " ".join(yaml.safe_load((INFRA / "ray-up" / "cluster.yaml").read_text())["setup_commands"])
    extras, version = _pin(setup, "ray")
    assert version == PYPROJECT_RAY and "default" in extras.split(",")
    torch_pins = set(re.findall(r"torch==([\d.]+)", setup + (INFRA / "Containerfile").read_text()))
    assert len(torch_pins) == 1


def test_every_referenced_account_configmap_and_secret_exists_or_is_documented():
    accounts = {d["metadata"]["name"] for d in of_kind("ServiceAccount")}
    configmaps = {d["metadata"]["name"] for d in of_kind("ConfigMap")}
    documented_configmaps = set(re.findall(r"kubectl create configmap ([\w-]+)", (K8S / "cronjob.yaml").read_text()))
    refs = {"sa": set(), "cm": set(), "secret": set()}

    def walk(node):
        if isinstance(node, dict):
            if "serviceAccountName" in node:
                refs["sa"].add(node["serviceAccountName"])
            if "configMapRef" in node:
                refs["cm"].add(node["configMapRef"]["name"])
            if "configMap" in node:
                refs["cm"].add(node["configMap"]["name"])
            for key in ("secretRef", "secretKeyRef"):
                if key in node:
                    refs["secret"].add(node[key]["name"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for _, doc in k8s_docs():
        walk(doc)
    assert refs["sa"] <= accounts
    assert refs["cm"] <= configmaps | documented_configmaps
    for secret in refs["secret"]:
        assert re.search(rf"kubectl create secret generic {secret}\b", RUNBOOK), secret
    for binding in of_kind("RoleBinding"):
        assert {s["name"] for s in binding["subjects"]} <= accounts
        assert binding["roleRef"]["name"] in {r["metadata"]["name"] for r in of_kind("Role")}
    # the nightly ConfigMap holds the files the CronJob's pod reads from /job
    mount = CRONJOB["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert mount["command"] == ["python", "/job/nightly_submit.py"]
    cm_cmd = re.search(r"kubectl create configmap pagemill-nightly ([^\n]*)", (K8S / "cronjob.yaml").read_text()).group(1)
    files = {Path(f).name for f in re.findall(r"--from-file=(\S+)", cm_cmd)}
    assert files == {"rayjob.yaml", "nightly_submit.py"} and all((REPO / f).is_file() for f in
                                                                  re.findall(r"--from-file=(\S+)", cm_cmd))


def test_every_ray_pod_can_write_where_the_writers_run():
    """Writer actors run on any worker (pagemill sends no secret to a worker): every Ray pod, head
    and workers, of the RayCluster and the RayJob gets the S3 credentials, the site settings and
    the Milvus token from the environment."""
    clusters = [d["spec"] for d in of_kind("RayCluster")] + [d["spec"]["rayClusterSpec"] for d in of_kind("RayJob")]
    assert len(clusters) == 2
    for spec in clusters:
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            for c in group["template"]["spec"]["containers"]:
                from_refs = {next(iter(r)): r[next(iter(r))]["name"] for r in c.get("envFrom", [])}
                assert from_refs == {"configMapRef": "pagemill-ingest", "secretRef": "pagemill-s3"}, group
                token = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in c.get("env", [])}
                assert token.get("MILVUS_TOKEN") == {"name": "pagemill-milvus", "key": "token"}, group


def test_submitter_role_grants_what_the_nightly_script_calls():
    source = inspect.getsource(load_nightly_submit().Api)
    needed = {"list": '"GET", "?labelSelector', "get": '"GET", f"/{name}"', "create": '"POST"', "delete": '"DELETE"'}
    role = of_kind("Role")[0]["rules"][0]
    assert role["apiGroups"] == ["ray.io"] and role["resources"] == ["rayjobs"]
    for verb, call in needed.items():
        assert call in source and verb in role["verbs"]


def expand(entrypoint: str, env: dict) -> list[str]:
    """The head's `sh -c` of the entrypoint, with the ConfigMap's values, as argv."""
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["sh", "-c"], "the entrypoint expands its settings in its own shell on the head"
    script = argv[2]
    names = re.findall(r"\$\{(\w+):\?\}", script)
    assert names and set(names) <= set(env), f"not in the ConfigMap: {set(names) - set(env)}"
    assert "$" not in re.sub(r"\$\{\w+:\?\}", "", script), "every variable is ${VAR:?}"
    words = shlex.split(re.sub(r"\$\{(\w+):\?\}", lambda m: env[m.group(1)], script))
    assert words[0] == "exec"
    return words[1:]


def test_entrypoint_settings_come_from_the_configmap_and_the_cli_accepts_them():
    from pipelines.cli import build_parser

    argv = expand(RAYJOB["spec"]["entrypoint"], INGEST["data"])
    assert argv[0] == "pagemill"
    args = build_parser().parse_args(argv[1:])
    data = INGEST["data"]
    assert (args.source, args.out, args.vectors, args.collection) == (
        data["PAGEMILL_SOURCE"], data["PAGEMILL_OUT"], data["PAGEMILL_VECTORS"], data["PAGEMILL_COLLECTION"])
    assert args.ray_address == "auto" and args.model == "colqwen2" and args.weights == "hub"
    for doc in of_kind("RayJob") + of_kind("RayCluster"):
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert {"name": "pagemill-ingest"} in [e.get("configMapRef") for e in head["envFrom"]]
        assert any(e["name"] == "MILVUS_TOKEN" and "secretKeyRef" in e["valueFrom"] for e in head["env"])


def test_milvus_uri_names_the_service_the_documented_install_creates():
    installs = re.findall(r"helm install (\S+) zilliztech/milvus (.*)", RUNBOOK)
    assert installs, "the runbook documents the Milvus install"
    for release, rest in installs:
        namespace = re.search(r"-n (\S+)", rest).group(1)
        assert re.search(r"--version '?~?5\.0\.", rest), "the chart version is pinned to the 5.0.x line"
        host = f"{milvus_service_name(release)}.{namespace}.svc"
        assert INGEST["data"]["PAGEMILL_VECTORS"] == f"http://{host}:19530"
    values = [v for _, d in k8s_docs() for v in _strings(d)]
    assert not [v for v in values if "milvus-proxy" in v]  # the chart has no such Service


MILVUS_VALUES = sorted((INFRA / "milvus").glob("values-*.yaml"))


@pytest.mark.parametrize("path", MILVUS_VALUES, ids=lambda p: p.name)
def test_milvus_values_use_chart_keys_and_the_26_architecture(path):
    values = yaml.safe_load(path.read_text())
    assert set(values) <= MILVUS_CHART_TOP_KEYS, set(values) - MILVUS_CHART_TOP_KEYS  # no `authorization`
    for comp in MILVUS_COMPONENTS & set(values):
        assert set(values[comp]) <= MILVUS_COMPONENT_KEYS, (comp, set(values[comp]) - MILVUS_COMPONENT_KEYS)
    assert set(values["externalS3"]) <= MILVUS_EXTERNAL_S3_KEYS
    assert not {"accessKey", "secretKey"} & set(values["externalS3"]) and values["externalS3"]["useIAM"] is True
    assert re.fullmatch(IMAGE_TAG_POLICIES["milvusdb/milvus"], values["image"]["all"]["tag"])
    user = yaml.safe_load(values["extraConfigFiles"]["user.yaml"])
    assert user["common"]["security"]["authorizationEnabled"] is True
    for comp in MILVUS_26_REMOVED_COMPONENTS & set(values):  # no binary behind them in 2.6
        assert values[comp] == {"enabled": False}, comp
    assert values["streaming"]["enabled"] is True and values["woodpecker"]["enabled"] is True
    assert values["pulsarv3"]["enabled"] is False and values["minio"]["enabled"] is False
    if values["cluster"]["enabled"]:
        assert values["streamingNode"]["replicas"] >= 1 and values["dataNode"]["resources"]["requests"]
    else:
        assert values["standalone"]["messageQueue"] in MILVUS_STANDALONE_QUEUES
        assert values["standalone"]["messageQueue"] == "woodpecker"
    assert "IRSA" in path.read_text() or "instance role" in path.read_text()


RAY_UP = yaml.safe_load((INFRA / "ray-up" / "cluster.yaml").read_text())


def test_ray_up_config_passes_rays_own_validation():
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(RAY_UP)))
    wrong = copy.deepcopy(RAY_UP)
    wrong["available_node_types"]["head"]["min_worker"] = 0
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(wrong))


def _shape_errors(value, shape, where: str) -> list[str]:
    if shape.type_name == "structure":
        errs = [f"{where}.{k}: not in {shape.name}" for k in value if k not in shape.members]
        return errs + [e for k, v in value.items() if k in shape.members
                       for e in _shape_errors(v, shape.members[k], f"{where}.{k}")]
    if shape.type_name == "list":
        return [e for i, v in enumerate(value) for e in _shape_errors(v, shape.member, f"{where}[{i}]")]
    if getattr(shape, "enum", None) and value not in shape.enum:
        return [f"{where}: {value!r} not in {shape.enum}"]
    return []


def test_ray_up_node_configs_are_runinstances_requests_with_an_image():
    import botocore.session

    ec2 = botocore.session.get_session().get_service_model("ec2")
    run = ec2.operation_model("RunInstances").input_shape
    for name, node in RAY_UP["available_node_types"].items():
        conf = node["node_config"]
        assert _shape_errors(conf, run, name) == []
        image = conf["ImageId"]  # without one, Ray launches RAY_DEFAULT_AMI_NAME (CUDA 11.2)
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}|resolve:ssm:/aws/service/deeplearning/ami/x86_64/"
                            r"base-oss-nvidia-driver-gpu-ubuntu-2[24]\.04/latest/ami-id", image), image
    from ray.autoscaler._private.aws import config

    assert RAY_DEFAULT_AMI_NAME == config.DEFAULT_AMI_NAME and "11.2" in inspect.getsource(config)


def test_head_instance_profile_may_do_what_rays_autoscaler_does():
    import botocore.session
    from ray.autoscaler._private.aws import node_provider

    source = inspect.getsource(node_provider)
    called = {name for name in RAY_AWS_EC2_CALLS if re.search(rf"\.{re.escape(name)}\b", source)}
    unknown = set(re.findall(r"(?:ec2(?:_fail_fast)?|client)\.([a-z_]+)\(", source)) - set(RAY_AWS_EC2_CALLS)
    assert called >= {"create_instances", "terminate_instances", "instances.filter"} and not unknown, unknown
    head = json.loads((INFRA / "ray-up" / "iam-head-policy.json").read_text())
    allowed = {a for s in head["Statement"] if s["Effect"] == "Allow"
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {RAY_AWS_EC2_CALLS[c] for c in called} <= allowed
    ec2 = set(botocore.session.get_session().get_service_model("ec2").operation_names)
    assert {a.split(":")[1] for a in allowed if a.startswith("ec2:")} <= ec2
    nodes = RAY_UP["available_node_types"]
    worker_profiles = {n["node_config"]["IamInstanceProfile"]["Name"] for k, n in nodes.items() if k != "head"}
    pass_role = [s for s in head["Statement"] if s["Action"] == "iam:PassRole"]
    assert [s["Resource"] for s in pass_role] == [f"arn:aws:iam::*:role/{p}" for p in sorted(worker_profiles)]
    assert nodes["head"]["node_config"]["IamInstanceProfile"]["Name"] not in worker_profiles
    if any(n["node_config"]["ImageId"].startswith("resolve:ssm:") for n in nodes.values()):
        assert "ssm:GetParameters" in allowed  # RunInstances resolves the parameter as its caller
    worker = json.loads((INFRA / "ray-up" / "iam-worker-policy.json").read_text())
    assert not any(str(s["Action"]).startswith(("ec2:", "iam:")) for s in worker["Statement"])


def images() -> list[tuple[str, str]]:
    found = [(p.name, c["image"]) for p, d in k8s_docs() for c in _containers(d)]
    found += [("Containerfile", m) for m in re.findall(r"^FROM (\S+)", (INFRA / "Containerfile").read_text(), re.M)]
    for path in MILVUS_VALUES:
        img = yaml.safe_load(path.read_text())["image"]["all"]
        found.append((path.name, f"{img['repository']}:{img['tag']}"))
    return found


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def _containers(node):
    if isinstance(node, dict):
        if "containers" in node:
            yield from node["containers"]
        for v in node.values():
            yield from _containers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _containers(v)


def test_every_image_names_a_digest_or_follows_a_known_tag_policy():
    found = images()
    assert len(found) >= 8
    for where, image in found:
        assert not image.startswith(FORBIDDEN_IMAGE_PREFIXES), (where, image)
        repo, _, tag = image.partition("@")[0].rpartition(":")
        assert repo and tag and tag != "latest", (where, image)
        if "@sha256:" in image:
            continue
        policy = IMAGE_TAG_POLICIES.get(repo)
        assert policy, f"{where}: {image} has no digest and no known tag policy"
        if repo == "ghcr.io/example/pagemill":
            assert tag == PROJECT_VERSION, (where, image)
        else:
            assert re.fullmatch(policy, tag), (where, image)
