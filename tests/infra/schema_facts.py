"""Facts the infra/ checks hold the manifests to, trimmed from the real schemas and sources (only the
types and keys infra/ uses or could plausibly misuse). Each block names where it was read.

A type is a dict of field -> type; a field type is "str", "int", "bool", "map" (string -> string),
"quantities" (string -> int or string), "any" (not checked further), another type's name, or a
one-element list [type] for arrays. A field may be written (type, (major, minor)): the KubeRay
version that added it.
"""

from __future__ import annotations

# --- KubeRay ---------------------------------------------------------------------------------
# ray-project/kuberay: ray-operator/apis/ray/v1/raycluster_types.go (read at a v1.1-era commit) and
# rayjob_types.go (read at a later one, with InteractiveMode and deletionStrategy); the CRDs
# ray-operator/config/crd/bases/ray.io_rayclusters.yaml / ray.io_rayjobs.yaml are generated from
# them. "since": activeDeadlineSeconds and submissionMode from the v1.1.0 release notes,
# backoffLimit 1.2 (the review of issue 19). Fields whose first version was not read (added after
# 1.1, such as submitterConfig) are left out on purpose: using one fails the check until its
# version is recorded here.
KUBERAY_TYPES: dict[str, dict] = {
    "RayCluster": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "spec": "RayClusterSpec"},
    "RayJob": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "spec": "RayJobSpec"},
    "RayClusterSpec": {
        "headGroupSpec": "HeadGroupSpec", "workerGroupSpecs": ["WorkerGroupSpec"], "rayVersion": "str",
        "enableInTreeAutoscaling": "bool", "autoscalerOptions": "AutoscalerOptions",
        "headServiceAnnotations": "map", "suspend": ("bool", (1, 1)),
    },
    "HeadGroupSpec": {"serviceType": "str", "headService": "any", "enableIngress": "bool",
                      "rayStartParams": "map", "template": "PodTemplateSpec"},
    "WorkerGroupSpec": {"groupName": "str", "replicas": "int", "minReplicas": "int", "maxReplicas": "int",
                        "numOfHosts": ("int", (1, 1)), "rayStartParams": "map", "template": "PodTemplateSpec",
                        "scaleStrategy": "any"},
    "AutoscalerOptions": {"resources": "ResourceRequirements", "image": "str", "imagePullPolicy": "str",
                          "env": ["EnvVar"], "envFrom": ["EnvFromSource"], "volumeMounts": ["VolumeMount"],
                          "securityContext": "any", "idleTimeoutSeconds": "int", "upscalingMode": "str"},
    "RayJobSpec": {
        "entrypoint": "str", "runtimeEnvYAML": "str", "metadata": "map", "jobId": "str",
        "shutdownAfterJobFinishes": "bool", "ttlSecondsAfterFinished": "int", "rayClusterSpec": "RayClusterSpec",
        "clusterSelector": "map", "suspend": "bool", "submitterPodTemplate": "PodTemplateSpec",
        "entrypointNumCpus": "any", "entrypointNumGpus": "any", "entrypointResources": "str",
        "activeDeadlineSeconds": ("int", (1, 1)), "submissionMode": ("str", (1, 1)),
        "backoffLimit": ("int", (1, 2)),
    },
}
# Required by the v1.1 CRD (json tags without omitempty), so that the manifests apply on 1.1 and later.
KUBERAY_REQUIRED = {
    "HeadGroupSpec": {"rayStartParams", "template"},
    "WorkerGroupSpec": {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"},
    "RayClusterSpec": {"headGroupSpec"},
}
SUBMISSION_MODES = {"K8sJobMode": (1, 0), "HTTPMode": (1, 1)}  # InteractiveMode (1.3) and later left out
# rayjob_types.go, IsJobDeploymentTerminal: the jobDeploymentStatus values KubeRay never leaves.
JOB_DEPLOYMENT_TERMINAL = {"Complete", "Failed"}
# ray-operator/controllers/ray/utils/constant.go: default ports and the container port names KubeRay
# looks up (the RayJob's dashboard URL is built from the port named "dashboard"); the head Service
# exposes exactly the head container's listed ports (common/service.go, getServicePorts).
KUBERAY_PORTS = {"dashboard": 8265, "client": 10001, "gcs-server": 6379, "metrics": 8080}
DASHBOARD_AGENT_PORT = 52365
# common/pod.go, labelPod (v1.1.0 and since): the labels KubeRay gives every Ray pod it creates, a
# template's own label of the same name winning; the one with a fixed value (ray.io/cluster,
# ray.io/node-type and ray.io/group vary). KubeRay also sets metrics-export-port (8080) and adds the
# container port named metrics when a spec has none (since v1.1.0).
KUBERAY_POD_LABELS = {"ray.io/is-ray-node": "yes"}
# The probe command KubeRay injects before 1.6 (BaseWgetHealthCommand) and what it asks for.
PROBE_COMMAND = "wget -T 2 -q -O- http://localhost:%d/%s | grep success"
PROBE_PATHS = {"api/local_raylet_healthz": DASHBOARD_AGENT_PORT, "api/gcs_healthz": 8265}

# --- Kubernetes core ---------------------------------------------------------------------------
# The Kubernetes API's types (k8s.io/api core/v1, batch/v1, rbac/v1, as in the API reference for
# 1.27+; not read from a stored copy here): the fields infra/ uses and the ones next to them.
# CronJobSpec.timeZone is GA since Kubernetes 1.27.
K8S_TYPES: dict[str, dict] = {
    "ObjectMeta": {"name": "str", "namespace": "str", "labels": "map", "annotations": "map"},
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {"containers": ["Container"], "initContainers": ["Container"], "volumes": ["Volume"],
                "serviceAccountName": "str", "restartPolicy": "str", "nodeSelector": "map",
                "tolerations": ["Toleration"], "affinity": "any", "securityContext": "any",
                "imagePullSecrets": "any", "priorityClassName": "str", "terminationGracePeriodSeconds": "int"},
    "Container": {"name": "str", "image": "str", "command": ["str"], "args": ["str"], "env": ["EnvVar"],
                  "envFrom": ["EnvFromSource"], "resources": "ResourceRequirements", "ports": ["ContainerPort"],
                  "volumeMounts": ["VolumeMount"], "imagePullPolicy": "str", "workingDir": "str",
                  "securityContext": "any", "readinessProbe": "any", "livenessProbe": "any", "lifecycle": "any"},
    "EnvVar": {"name": "str", "value": "str", "valueFrom": "EnvVarSource"},
    "EnvVarSource": {"secretKeyRef": "KeySelector", "configMapKeyRef": "KeySelector", "fieldRef": "any",
                     "resourceFieldRef": "any"},
    "KeySelector": {"name": "str", "key": "str", "optional": "bool"},
    "EnvFromSource": {"configMapRef": "NameRef", "secretRef": "NameRef", "prefix": "str"},
    "NameRef": {"name": "str", "optional": "bool"},
    "ResourceRequirements": {"requests": "quantities", "limits": "quantities"},
    "ContainerPort": {"containerPort": "int", "name": "str", "protocol": "str", "hostPort": "int"},
    "VolumeMount": {"name": "str", "mountPath": "str", "readOnly": "bool", "subPath": "str"},
    "Volume": {"name": "str", "configMap": "ConfigMapVolume", "secret": "any", "emptyDir": "any",
               "persistentVolumeClaim": "PVCVolumeSource"},
    "PVCVolumeSource": {"claimName": "str", "readOnly": "bool"},
    "ConfigMapVolume": {"name": "str", "items": "any", "defaultMode": "int", "optional": "bool"},
    "Toleration": {"key": "str", "operator": "str", "value": "str", "effect": "str", "tolerationSeconds": "int"},
    "ServiceAccount": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta"},
    "ConfigMap": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "data": "map"},
    "Role": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "rules": ["PolicyRule"]},
    "PolicyRule": {"apiGroups": ["str"], "resources": ["str"], "verbs": ["str"], "resourceNames": ["str"]},
    "RoleBinding": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "subjects": ["Subject"],
                    "roleRef": "RoleRef"},
    "Subject": {"kind": "str", "name": "str", "namespace": "str", "apiGroup": "str"},
    "RoleRef": {"apiGroup": "str", "kind": "str", "name": "str"},
    "CronJob": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "spec": "CronJobSpec"},
    "CronJobSpec": {"schedule": "str", "timeZone": "str", "concurrencyPolicy": "str",
                    "startingDeadlineSeconds": "int", "successfulJobsHistoryLimit": "int",
                    "failedJobsHistoryLimit": "int", "suspend": "bool", "jobTemplate": "JobTemplateSpec"},
    "JobTemplateSpec": {"metadata": "ObjectMeta", "spec": "JobSpec"},
    "JobSpec": {"backoffLimit": "int", "activeDeadlineSeconds": "int", "ttlSecondsAfterFinished": "int",
                "completions": "int", "parallelism": "int", "template": "PodTemplateSpec"},
}
# kubernetes/api core/v1/types.go (read at 10b39a3, 2026-07): the claim, its spec and the volume
# source that mounts it.
K8S_TYPES.update({
    "PersistentVolumeClaim": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta",
                              "spec": "PersistentVolumeClaimSpec"},
    "PersistentVolumeClaimSpec": {"accessModes": ["str"], "selector": "any", "resources": "VolumeResourceRequirements",
                                  "volumeName": "str", "storageClassName": "str", "volumeMode": "str",
                                  "dataSource": "any", "dataSourceRef": "any", "volumeAttributesClassName": "str"},
    "VolumeResourceRequirements": {"limits": "quantities", "requests": "quantities", "claims": "any"},
})
ACCESS_MODES = {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"}

# --- prometheus-operator ---------------------------------------------------------------------
# prometheus-operator/prometheus-operator example/prometheus-operator-crd/
# monitoring.coreos.com_podmonitors.yaml and _prometheusrules.yaml (v1, read at v0.93.0): the
# openAPIV3Schema's properties of the objects infra/ writes (every field of these types listed;
# authorization, TLS and the like as "any").
PROMETHEUS_OPERATOR_TYPES: dict[str, dict] = {
    "PodMonitor": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "spec": "PodMonitorSpec"},
    "PodMonitorSpec": {
        "attachMetadata": "any", "bodySizeLimit": "str", "convertClassicHistogramsToNHCB": "bool",
        "fallbackScrapeProtocol": "str", "jobLabel": "str", "keepDroppedTargets": "int", "labelLimit": "int",
        "labelNameLengthLimit": "int", "labelValueLengthLimit": "int", "namespaceSelector": "NamespaceSelector",
        "nativeHistogramBucketLimit": "int", "nativeHistogramMinBucketFactor": "any",
        "podMetricsEndpoints": ["PodMetricsEndpoint"], "podTargetLabels": ["str"], "sampleLimit": "int",
        "scrapeClass": "str", "scrapeClassicHistograms": "bool", "scrapeNativeHistograms": "bool",
        "scrapeProtocols": ["str"], "selector": "LabelSelector", "selectorMechanism": "str", "targetLimit": "int",
    },
    "PodMetricsEndpoint": {
        "authorization": "any", "basicAuth": "any", "bearerTokenSecret": "any", "enableHttp2": "bool",
        "filterRunning": "bool", "followRedirects": "bool", "honorLabels": "bool", "honorTimestamps": "bool",
        "interval": "str", "metricRelabelings": ["RelabelConfig"], "noProxy": "str", "oauth2": "any",
        "params": "any", "path": "str", "port": "str", "portNumber": "int", "proxyConnectHeader": "any",
        "proxyFromEnvironment": "bool", "proxyUrl": "str", "relabelings": ["RelabelConfig"], "scheme": "str",
        "scrapeTimeout": "str", "targetPort": "any", "tlsConfig": "any", "trackTimestampsStaleness": "bool",
    },
    "RelabelConfig": {"action": "str", "modulus": "int", "regex": "str", "replacement": "str", "separator": "str",
                      "sourceLabels": ["str"], "targetLabel": "str"},
    "LabelSelector": {"matchLabels": "map", "matchExpressions": "any"},
    "NamespaceSelector": {"any": "bool", "matchNames": ["str"]},
    "PrometheusRule": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "spec": "PrometheusRuleSpec"},
    "PrometheusRuleSpec": {"groups": ["RuleGroup"]},
    "RuleGroup": {"interval": "str", "labels": "map", "limit": "int", "name": "str",
                  "partial_response_strategy": "str", "query_offset": "str", "rules": ["Rule"]},
    "Rule": {"alert": "str", "annotations": "map", "expr": "str", "for": "str", "keep_firing_for": "str",
             "labels": "map", "record": "str"},
}
PROMETHEUS_OPERATOR_REQUIRED = {"PodMonitorSpec": {"selector"}, "RuleGroup": {"name"}, "Rule": {"expr"}}

K8S_API_VERSIONS = {"ServiceAccount": "v1", "ConfigMap": "v1", "Role": "rbac.authorization.k8s.io/v1",
                    "RoleBinding": "rbac.authorization.k8s.io/v1", "CronJob": "batch/v1",
                    "RayCluster": "ray.io/v1", "RayJob": "ray.io/v1", "PersistentVolumeClaim": "v1",
                    "PodMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1"}
ENUMS = {("CronJobSpec", "concurrencyPolicy"): {"Allow", "Forbid", "Replace"},
         ("PodSpec", "restartPolicy"): {"Always", "OnFailure", "Never"},
         ("Toleration", "operator"): {"Exists", "Equal"},
         ("Toleration", "effect"): {"NoSchedule", "PreferNoSchedule", "NoExecute"},
         ("RayJobSpec", "submissionMode"): set(SUBMISSION_MODES)}

# --- Milvus Helm chart -------------------------------------------------------------------------
# zilliztech/milvus-helm, charts/milvus/values.yaml: the top-level keys of the 4.2.x values (read at
# 4.2.45) plus what the 5.0.x line (Milvus 2.6) relies on: streaming, streamingNode, woodpecker.
# There is no `authorization` key: authentication is Milvus' common.security.authorizationEnabled,
# set through extraConfigFiles (merged into milvus.yaml, templates/configmap.yaml).
MILVUS_CHART_TOP_KEYS = {
    "nameOverride", "fullnameOverride", "cluster", "image", "nodeSelector", "tolerations", "affinity",
    "securityContext", "topologySpreadConstraints", "labels", "annotations", "volumes", "volumeMounts",
    "streaming", "customConfigMap", "extraConfigFiles", "service", "ingress", "serviceAccount", "metrics",
    "livenessProbe", "readinessProbe", "log", "heaptrack", "standalone", "proxy", "rootCoordinator",
    "queryCoordinator", "queryNode", "indexCoordinator", "indexNode", "dataCoordinator", "dataNode",
    "mixCoordinator", "streamingNode", "attu", "minio", "etcd", "pulsarv3", "pulsar", "kafka", "woodpecker",
    "externalS3", "externalGcs", "externalEtcd", "externalPulsar", "externalKafka", "tei",
}
MILVUS_COMPONENTS = {"standalone", "proxy", "rootCoordinator", "queryCoordinator", "queryNode", "indexCoordinator",
                     "indexNode", "dataCoordinator", "dataNode", "mixCoordinator", "streamingNode"}
MILVUS_COMPONENT_KEYS = {"enabled", "replicas", "resources", "nodeSelector", "affinity", "tolerations",
                         "securityContext", "topologySpreadConstraints", "extraEnv", "heaptrack", "profiling",
                         "strategy", "annotations", "hpa", "disk", "service", "activeStandby", "persistence",
                         "messageQueue", "http", "tls"}
MILVUS_EXTERNAL_S3_KEYS = {"enabled", "host", "port", "accessKey", "secretKey", "useSSL", "bucketName", "rootPath",
                           "useIAM", "cloudProvider", "iamEndpoint", "region", "useVirtualHost"}
MILVUS_STANDALONE_QUEUES = {"rocksmq", "natsmq", "pulsar", "kafka", "woodpecker"}
# Milvus 2.6 runs no index node ("Unknown server type = indexnode", milvus-io/milvus#45966): index
# builds moved to the data nodes; streaming nodes are new (chart README, "As of helm version 5.0.0").
MILVUS_26_REMOVED_COMPONENTS = {"indexNode", "indexCoordinator", "rootCoordinator", "queryCoordinator",
                                "dataCoordinator"}


def milvus_service_name(release: str, chart: str = "milvus") -> str:
    """charts/milvus/templates/_helpers.tpl "milvus.fullname" (no fullnameOverride): the name of the
    Service in front of port 19530 (templates/service.yaml)."""
    return release if chart in release else f"{release}-{chart}"


# --- Ray cluster launcher (AWS) ----------------------------------------------------------------
# ray-project/ray python/ray/autoscaler/_private/aws/node_provider.py (2.60.0): the EC2 calls the
# autoscaler on the head makes, boto3 name -> IAM action. test_manifest_facts scans the installed
# source for these names, so a Ray upgrade that calls something new fails that check.
RAY_AWS_EC2_CALLS = {
    "create_instances": "ec2:RunInstances", "create_tags": "ec2:CreateTags",
    "describe_instance_types": "ec2:DescribeInstanceTypes", "instances.filter": "ec2:DescribeInstances",
    "describe_images": "ec2:DescribeImages", "start_instances": "ec2:StartInstances",
    "stop_instances": "ec2:StopInstances", "terminate_instances": "ec2:TerminateInstances",
}
# python/ray/autoscaler/_private/aws/config.py: without an ImageId Ray takes DEFAULT_AMI, the
# "AWS Deep Learning AMI (Ubuntu 18.04) V71.0" (CUDA 11.2).
RAY_DEFAULT_AMI_NAME = "AWS Deep Learning AMI (Ubuntu 18.04) V71.0"

# --- Container images ----------------------------------------------------------------------------
# Every image infra/ names must be pinned by digest or follow one of these tag policies. Bitnami
# removed the versioned tags of its free images (bitnami/containers#83267, 2025-08-28): none of
# them can be named.
IMAGE_TAG_POLICIES = {
    "ghcr.io/example/pagemill": "the project's version (pyproject.toml), built from infra/Containerfile",
    "python": r"3\.11(\.\d+)?-slim-bookworm",  # Docker Official Image; the minor tag lives as long as 3.11
    "milvusdb/milvus": r"v2\.6\.\d+",  # release tags, kept for every release
}
FORBIDDEN_IMAGE_PREFIXES = ("bitnami/", "docker.io/bitnami/")


def load_nightly_submit():
    """infra/k8s/nightly_submit.py as a module (it ships in a ConfigMap, not in the package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "nightly_submit.py"
    spec = importlib.util.spec_from_file_location("nightly_submit", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nightly_submit"] = module  # so that inspect finds its source
    spec.loader.exec_module(module)
    return module
