"""deploy/kubernetes/rayservice.yaml: a KubeRay RayService that serves serve_config.yaml as it stands.

No PyPI package ships KubeRay's CRD schema (and the CRD itself is ~1 MB, mostly Kubernetes' pod template), so the
manifest is checked against the fields it uses, written down below as a small JSON schema from KubeRay v1.5.0's
CRD `ray-operator/config/crd/bases/ray.io_rayservices.yaml` (apiVersion ray.io/v1; the same fields are documented
at https://docs.ray.io/en/latest/cluster/kubernetes/user-guides/rayservice.html and in KubeRay's
`docs/reference/api.md`; `authOptions` from v1.5.1, which added it) and Kubernetes' core/v1 PodSpec. Every object is closed (`additionalProperties: false`),
so a misspelt or misplaced key fails here instead of being silently pruned by the API server.
"""

from __future__ import annotations

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from operations.config_overlay import deployments_by_name
from operations.serve_env import read_serve_env
from tests.support.paths import ROOT

MANIFEST = ROOT / "deploy" / "kubernetes" / "rayservice.yaml"


def closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


STRING = {"type": "string"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}]}  # Kubernetes resource.Quantity / IntOrString
INT32 = {"type": "integer"}
PROBE = closed(
    {
        "httpGet": closed({"path": STRING, "port": QUANTITY, "scheme": STRING}, ("port",)),
        "initialDelaySeconds": INT32,
        "periodSeconds": INT32,
        "timeoutSeconds": INT32,
        "failureThreshold": INT32,
        "successThreshold": INT32,
    }
)
CONTAINER = closed(
    {
        "name": STRING,
        "image": STRING,
        "env": {"type": "array", "items": closed({"name": STRING, "value": STRING}, ("name",))},
        "envFrom": {
            "type": "array",
            "items": closed({"secretRef": closed({"name": STRING, "optional": {"type": "boolean"}}), "prefix": STRING}),
        },
        "ports": {
            "type": "array",
            "items": closed({"name": STRING, "containerPort": INT32, "protocol": STRING}, ("containerPort",)),
        },
        "resources": closed(
            {"requests": {"type": "object", "additionalProperties": QUANTITY}, "limits": {"type": "object"}}
        ),
        "readinessProbe": PROBE,
        "livenessProbe": PROBE,
    },
    ("name",),
)
POD_TEMPLATE = closed(
    {
        "metadata": closed({"labels": STRING_MAP, "annotations": STRING_MAP}),
        "spec": closed(
            {
                "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                "tolerations": {
                    "type": "array",
                    "items": closed({"key": STRING, "operator": STRING, "value": STRING, "effect": STRING}),
                },
                "nodeSelector": STRING_MAP,
            },
            ("containers",),
        ),
    }
)
RAY_START_PARAMS = STRING_MAP  # the CRD: map[string]string (numbers must be quoted)
RAYSERVICE_SCHEMA = closed(
    {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "metadata": closed({"name": STRING, "namespace": STRING, "labels": STRING_MAP}, ("name",)),
        "spec": closed(
            {
                "serveConfigV2": STRING,
                "excludeHeadPodFromServeSvc": {"type": "boolean"},
                "upgradeStrategy": closed(
                    {"type": {"enum": ["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]}}
                ),
                "rayClusterConfig": closed(
                    {
                        "rayVersion": STRING,
                        "authOptions": closed({"mode": {"enum": ["disabled", "token"]}}),
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "autoscalerOptions": closed(
                            {
                                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                                "idleTimeoutSeconds": INT32,
                            }
                        ),
                        "headGroupSpec": closed(
                            {"rayStartParams": RAY_START_PARAMS, "template": POD_TEMPLATE}, ("template",)
                        ),
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": closed(
                                {
                                    "groupName": STRING,
                                    "replicas": INT32,
                                    "minReplicas": INT32,
                                    "maxReplicas": INT32,
                                    "rayStartParams": RAY_START_PARAMS,
                                    "template": POD_TEMPLATE,
                                },
                                ("groupName", "maxReplicas", "minReplicas", "template"),
                            ),
                        },
                    },
                    ("headGroupSpec",),
                ),
            },
            ("rayClusterConfig",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def ray_containers(manifest: dict) -> dict[str, dict]:
    """Group name ("head" for the head) -> its Ray container (KubeRay runs Ray in the first container)."""
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}
    return {name: group["template"]["spec"]["containers"][0] for name, group in groups.items()}


def test_manifest_fits_the_rayservice_schema(manifest):
    jsonschema.validate(manifest, RAYSERVICE_SCHEMA)


def test_serve_config_v2_is_serve_config_yaml(manifest):
    """The RayService serves exactly the cluster config; edit serve_config.yaml, then paste it into
    spec.serveConfigV2 (indented four spaces)."""
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert serve_config == yaml.safe_load((ROOT / "serve_config.yaml").read_text()), (
        f"{MANIFEST.relative_to(ROOT)}: spec.serveConfigV2 differs from serve_config.yaml; paste the file in again"
    )
    ServeDeploySchema.model_validate(serve_config)


def test_every_ray_container_gets_serve_env_and_the_storage_secret(manifest):
    """serve.env's settings are read by Ray's processes when they start, so every node needs them (RAY_AUTH_MODE
    through authOptions, below); the optional Secret carries S3 credentials for `checkpoint: s3://...`."""
    wanted = {name: value for name, value in read_serve_env().items() if name != "RAY_AUTH_MODE"}
    for name, container in ray_containers(manifest).items():
        env = {variable["name"]: variable["value"] for variable in container["env"]}
        assert env == wanted, f"{name}: env differs from serve.env"
        assert {"secretRef": {"name": "multitask-storage", "optional": True}} in container["envFrom"], name


def test_ray_token_auth_is_on_and_no_token_is_in_the_manifest(manifest):
    """authOptions' token mode: KubeRay generates the token into a Secret and sets RAY_AUTH_MODE=token and
    RAY_AUTH_TOKEN in every Ray container, the mode serve.env asks for. The dashboard listens beyond localhost
    (KubeRay and `serve deploy` reach it) only because of that."""
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert read_serve_env()["RAY_AUTH_MODE"] == "token"
    major, minor, _ = (int(part) for part in cluster["rayVersion"].split("."))
    assert (major, minor) >= (2, 52), "Ray's token auth needs Ray >= 2.52"
    for name, container in ray_containers(manifest).items():
        names = {variable["name"] for variable in container["env"]}
        assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, f"{name}: set by authOptions"
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_gpu_group_for_the_encoder_and_cpu_group_for_the_rest(manifest):
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    options = deployments_by_name(serve_config)
    containers = ray_containers(manifest)
    gpu_limits, cpu_limits = containers["gpu"]["resources"]["limits"], containers["cpu"]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1" and options["Encoder"]["ray_actor_options"]["num_gpus"] == 1
    assert "nvidia.com/gpu" not in cpu_limits
    assert manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    # an Encoder replica (CPUs, memory) fits a GPU pod, the Ingress and a head fit a CPU pod
    encoder = options["Encoder"]["ray_actor_options"]
    assert float(gpu_limits["cpu"]) >= encoder["num_cpus"]
    assert gibibytes(gpu_limits["memory"]) * 0.7 >= encoder["memory"] / 2**30  # Ray keeps ~30% for objects
    for name in ("Ingress", "TopicHead", "SentimentHead"):
        assert float(cpu_limits["cpu"]) >= options[name]["ray_actor_options"]["num_cpus"], name
    workers = {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert workers["gpu"]["maxReplicas"] >= options["Encoder"]["autoscaling_config"]["max_replicas"]


def test_serving_pods_are_ready_when_the_graph_answers(manifest):
    """Workers (where HAProxy and the replicas run) turn ready on GET /healthz at Serve's HTTP port; the head,
    which serves nothing, keeps KubeRay's probes."""
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    port = serve_config["http_options"]["port"]
    ingress = deployments_by_name(serve_config)["Ingress"]
    for name, container in ray_containers(manifest).items():
        if name == "head":
            assert "readinessProbe" not in container
            continue
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": port}, name
        assert {"name": "serve", "containerPort": port} in container["ports"], name
        assert container["readinessProbe"]["timeoutSeconds"] > ingress["user_config"]["health_timeout_s"], (
            "the probe must outwait /healthz's pings of the deployments"
        )


def gibibytes(quantity: str) -> float:
    units = {"Gi": 1, "Mi": 1 / 1024, "Ti": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]
