"""Every manifest of a deployment, rendered from checked values: the templates under
deploy/templates/ filled with what the values say (image, pagemill's options, schedule, sizes, the
model cache, Prometheus). ``render(values, ...)`` returns {relative path: text}."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from deploy import entrypoint, weights
from deploy.template import Block, fill
from deploy.values import ValuesError

INFRA = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).with_name("templates")
ALERTS = INFRA / "prometheus" / "alerts.yaml"
CLAIM = "pagemill-models"
PART_OF = {"app.kubernetes.io/part-of": "pagemill"}  # on the Ray pods: what the PodMonitor selects


def scalar(value) -> str:
    """A YAML scalar that reads back as the same value (a string stays a string), plain where safe."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    plain = re.fullmatch(r"[\w./-][\w./:-]*", text) and yaml.safe_load(text) == text
    return text if plain else json.dumps(text)


def flow(mapping: dict) -> str:
    """``{cpu: "8", memory: 16Gi}``: a one-line YAML mapping."""
    return "{" + ", ".join(f"{scalar(k)}: {scalar(v)}" for k, v in mapping.items()) + "}"


def block(text: str) -> Block:
    return Block(text.rstrip("\n"))


def _image(values: dict, version: str) -> str:
    return f"{values['image']['repository']}:{values['image']['tag'] or version}"


def _cache(values: dict) -> dict:
    """The model cache's blocks (all empty when it is off)."""
    cache = values["weights_cache"]
    if not cache["enabled"]:
        return {k: block("") for k in ("cache_env", "cache_mounts", "cache_volumes", "head_init_containers",
                                       "apply_weights_cache")}
    mount = cache["mount"]
    env = [{"name": "HF_HOME", "value": mount}, {"name": "HF_HUB_OFFLINE", "value": "1"}]
    return {
        "cache_env": block("# The model cache (values: weights_cache): read from the volume, never from the hub.\n"
                           + "\n".join(f"- {flow(e)}" for e in env)),
        "cache_mounts": block(f"volumeMounts:\n  - {flow({'name': 'models', 'mountPath': mount, 'readOnly': True})}"),
        "cache_volumes": block(f"volumes:\n  - name: models\n    persistentVolumeClaim: {flow({'claimName': CLAIM})}"),
        "apply_weights_cache": block(""),
    }


def _fetch_container(values: dict, image: str, repos: list[str]) -> Block:
    if not values["weights_cache"]["enabled"] or not repos:
        return block("")
    script = "\n".join("        " + line if line else "" for line in weights.fetch_script().splitlines())
    mount = values["weights_cache"]["mount"]
    return block(f"""# The image runs as uid 1000: fsGroup lets it write the model cache (where the storage applies
# it; on EFS, an access point with uid and gid 1000).
securityContext: {{fsGroup: 1000}}
# Fills the model cache with what it lacks before the head starts (infra/deploy/fetch_weights.py);
# a checkpoint fetched once is skipped. The workers' raylets wait for the head.
initContainers:
  - name: fetch-weights
    image: {image}
    command:
      - python
      - -c
      - |
{script}
    env:
      - {flow({"name": "HF_HOME", "value": mount})}
      - {flow({"name": "PAGEMILL_WEIGHTS", "value": " ".join(repos)})}
      - name: HF_TOKEN              # for gated or private checkpoints; optional
        valueFrom: {{secretKeyRef: {{name: pagemill-hf, key: token, optional: true}}}}
    resources:
      requests: {{cpu: 500m, memory: 1Gi}}
      limits: {{cpu: "2", memory: 4Gi}}
    volumeMounts:
      - {flow({"name": "models", "mountPath": mount})}""")


def _pod_metadata(values: dict) -> Block:
    monitoring = values["monitoring"]
    lines = ["metadata:", f"  labels: {flow(PART_OF)}"]
    if monitoring["ray_scrape"] == "annotations":
        port = monitoring["ray_metrics_port"]
        lines.append("  annotations: " + flow({"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                                                "prometheus.io/path": "/metrics"}))
    return block("\n".join(lines))


def _monitoring(values: dict, labels: str) -> list[str]:
    monitoring = values["monitoring"]
    docs = []
    if monitoring["ray_scrape"] == "pod-monitor":
        selector = {**PART_OF, "ray.io/is-ray-node": "yes"}
        docs.append(f"""# Ray's own metrics from every Ray pod of the RayJob and the RayCluster, head and workers: the
# container port named metrics, Ray's metrics-export-port ({monitoring['ray_metrics_port']}). The relabelings keep
# Ray's Grafana dashboards working (ray_io_cluster).
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata:
  name: pagemill-ray
  labels: {labels}
spec:
  selector:
    matchLabels: {flow(selector)}
  podMetricsEndpoints:
    - port: metrics
      relabelings:
        - sourceLabels: [__meta_kubernetes_pod_label_ray_io_cluster]
          targetLabel: ray_io_cluster
        - sourceLabels: [__meta_kubernetes_pod_label_ray_io_node_type]
          targetLabel: ray_io_node_type
""")
    if monitoring["prometheus_rule"]:
        text = ALERTS.read_text()
        body = text[re.search(r"^groups:", text, re.M).start():]  # as written there, comments included
        spec = "\n".join("  " + line if line else "" for line in body.splitlines())
        docs.append(f"""# The example alert rules of infra/prometheus/alerts.yaml (edit them there and render again).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: pagemill
  labels: {labels}
spec:
{spec}
""")
    return docs


def render(values: dict, where: str, source: str, version: str, ray_version: str) -> dict[str, str]:
    """``where``: the folder the files go to, as the comments should name it; ``source``: the
    values file, as the header names it."""
    ingest, resources, cache = values["ingest"], values["resources"], values["weights_cache"]
    pushgateway = values["monitoring"]["pushgateway"]
    problem = entrypoint.check_with_pagemill(entrypoint.ingest_words(
        ingest, pushgateway, {var: f"${var}" for var in entrypoint.SITE_VARIABLES}))
    if problem:
        raise ValuesError(f"ingest: pagemill refuses these options: {problem}")
    image = _image(values, version)
    repos = cache["repos"] or weights.checkpoints(ingest["model"], ingest["weights"])
    gpu = resources["gpu_workers"]
    gpu_selector = gpu["node_selector"]
    context = {
        "header": block(f"# Rendered from {source} by infra/render.py (templates: infra/deploy/templates/):\n"
                        "# change those and render again; an edit here is overwritten."),
        "dir": where, "image": image, "ray_version": ray_version,
        "metrics_port": values["monitoring"]["ray_metrics_port"],
        "entrypoint": block("\n".join(entrypoint.rayjob_entrypoint(ingest, pushgateway))),
        "run_deadline_s": values["schedule"]["run_deadline_s"], "retries": values["schedule"]["retries"],
        "submitter_deadline_s": values["schedule"]["run_deadline_s"] + 3600, "keep": values["schedule"]["keep"],
        "cron": values["schedule"]["cron"], "time_zone": values["schedule"]["time_zone"],
        **{k: scalar(values["stores"][k]) for k in ("source", "out", "vectors", "collection", "aws_region")},
        "head_requests": flow({"cpu": resources["head"]["cpu"], "memory": resources["head"]["memory"]}),
        "head_limits": flow({"cpu": resources["head"]["cpu_limit"], "memory": resources["head"]["memory"]}),
        **{f"cpu_{k}": resources["cpu_workers"][k] for k in ("replicas", "min", "max")},
        "cpu_resources": flow({"cpu": resources["cpu_workers"]["cpu"], "memory": resources["cpu_workers"]["memory"]}),
        **{f"gpu_{k}": gpu[k] for k in ("replicas", "min", "max")}, "gpus": gpu["gpus"],
        "gpu_resources": flow({"cpu": gpu["cpu"], "memory": gpu["memory"], "nvidia.com/gpu": str(gpu["gpus"])}),
        "gpu_node_selector": block("# values: resources.gpu_workers.node_selector\nnodeSelector:\n" + "\n".join(f"  {scalar(k)}: {scalar(v)}" for k, v in
                                                                 gpu_selector.items()) if gpu_selector else ""),
        "pod_metadata": _pod_metadata(values), "head_init_containers": _fetch_container(values, image, repos),
        **_cache(values),
        "mount": cache["mount"], "claim": CLAIM, "size": cache["size"], "repos_text": ", ".join(repos) or "none",
        "storage_class": block(f"storageClassName: {scalar(cache['storage_class'])}" if cache["storage_class"] else ""),
        "package": values["package"], **{k: values["ray_up"][k] for k in ("region", "head_instance", "cpu_instance",
                                                                           "gpu_instance")},
        "vm_command": entrypoint.vm_command(ingest, pushgateway, values["stores"], values["ray_up"]["vectors"]),
        "cpu_max_workers": resources["cpu_workers"]["max"], "gpu_max_workers": gpu["max"],
        "max_workers": resources["cpu_workers"]["max"] + gpu["max"],
    }
    if cache["enabled"]:
        context["apply_weights_cache"] = block(
            f"#   kubectl apply -f {where}/k8s/weights-cache.yaml    (the model cache's volume, once)")

    def from_template(name: str, **more) -> str:
        return fill((TEMPLATES / f"{name}.tmpl").read_text(), {**context, **more}, name)

    def cluster_spec(service_account: str) -> Block:
        account = block(f"serviceAccountName: {service_account}" if service_account else "")
        return block(from_template("k8s/_ray-cluster-spec.yaml", head_service_account=account))

    out = {
        "k8s/ingest-config.yaml": from_template("k8s/ingest-config.yaml"),
        "k8s/rayjob.yaml": from_template("k8s/rayjob.yaml", ray_cluster_spec=cluster_spec("")),
        "k8s/raycluster.yaml": from_template("k8s/raycluster.yaml", ray_cluster_spec=cluster_spec("pagemill")),
        "k8s/cronjob.yaml": from_template("k8s/cronjob.yaml"),
        "ray-up/cluster.yaml": from_template("ray-up/cluster.yaml"),
    }
    if cache["enabled"]:
        out["k8s/weights-cache.yaml"] = from_template("k8s/weights-cache.yaml")
    labels = flow({"app.kubernetes.io/name": "pagemill", **values["monitoring"]["labels"]})
    docs = _monitoring(values, labels)
    if docs:
        out["k8s/monitoring.yaml"] = from_template("k8s/monitoring.yaml", documents=block("---\n".join(docs)))
    for text in out.values():
        list(yaml.safe_load_all(text))  # a template that renders broken YAML fails here, not at kubectl apply
    return out
