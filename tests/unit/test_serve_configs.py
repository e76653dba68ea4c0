"""The Serve config files: valid Serve schemas, names that match the code, knobs that fit their pydantic models, and
the code's deployment options (deployments/options.py) stated the same in the local config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

import graph
from deployments.options import DEFAULT_OPTIONS
from deployments.settings import EncoderSettings, HeadSettings, IngressSettings
from multitask.config import DEFAULT_TASKS
from tests.support.paths import ROOT, SHIPPED_CHECKPOINT

CONFIGS = ["serve_config.yaml", "serve_config.local.yaml"]
SETTINGS = {
    "Ingress": IngressSettings,
    "Encoder": EncoderSettings,
    "TopicHead": HeadSettings,
    "SentimentHead": HeadSettings,
}
AUTOSCALING_KEYS = {
    "min_replicas",
    "initial_replicas",
    "max_replicas",
    "target_ongoing_requests",
    "look_back_period_s",
    "upscale_delay_s",
    "downscale_delay_s",
    "upscaling_factor",
    "downscaling_factor",
    "aggregation_function",
}
ACTOR_KEYS = {"num_cpus", "num_gpus", "memory", "resources"}


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses_as_a_serve_schema_with_the_code_names(name):
    schema = ServeDeploySchema.model_validate(load(name))
    (application,) = schema.applications
    assert application.name == graph.APP_NAME
    assert application.import_path == "graph:build_app"
    graph.GraphArgs.model_validate(application.args)  # the builder accepts the args
    names = [deployment.name for deployment in application.deployments]
    assert sorted(names) == sorted(graph.deployment_names([task.name for task in DEFAULT_TASKS]))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_deployment_spells_out_its_options_in_full(name):
    """Serve replaces the code's dicts whole with the file's, so a key left out would silently reset."""
    (application,) = load(name)["applications"]
    for deployment in application["deployments"]:
        assert set(deployment["autoscaling_config"]) == AUTOSCALING_KEYS, deployment["name"]
        assert set(deployment["ray_actor_options"]) == ACTOR_KEYS, deployment["name"]
        settings = SETTINGS[deployment["name"]]
        assert set(deployment["user_config"]) == set(settings.model_fields), deployment["name"]
        settings.model_validate(deployment["user_config"])


def _code_options(name: str) -> dict:
    """The code's options of a deployment name in a config (every `<Task>Head` is the one TaskHead class)."""
    return DEFAULT_OPTIONS["TaskHead" if name.endswith("Head") else name]


def test_local_config_states_the_code_options():
    """The code states each deployment's defaults once (deployments/options.py); the local config, which spells
    every key out, must state the same, so `serve run graph:app` and `serve run serve_config.local.yaml` agree."""
    (application,) = load("serve_config.local.yaml")["applications"]
    for deployment in application["deployments"]:
        options = {key: value for key, value in deployment.items() if key != "name"}
        assert options == _code_options(deployment["name"]), deployment["name"]


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_state_every_option_the_code_states(name):
    """An option the code states but a file leaves out would silently take the laptop value on a cluster."""
    (application,) = load(name)["applications"]
    for deployment in application["deployments"]:
        assert set(deployment) - {"name"} == set(_code_options(deployment["name"])), deployment["name"]


def test_the_deployments_carry_the_code_options():
    from deployments.encoder import Encoder
    from deployments.head import TaskHeadDeployment
    from deployments.ingress import Ingress

    for deployment in (Ingress, Encoder, TaskHeadDeployment):
        options = DEFAULT_OPTIONS[deployment.name]
        assert deployment.ray_actor_options == options["ray_actor_options"], deployment.name
        assert deployment.user_config == options["user_config"], deployment.name
        assert deployment.max_ongoing_requests == options["max_ongoing_requests"], deployment.name
        assert deployment.max_queued_requests == options["max_queued_requests"], deployment.name


def test_cluster_config_asks_a_gpu_for_the_encoder_and_picks_the_rest_by_itself():
    """serve_config.yaml runs on a fresh cluster as it stands: the shipped checkpoint (installed with the package),
    the Encoder on a GPU node; device, dtype and runtime follow what the replica gets."""
    (application,) = load("serve_config.yaml")["applications"]
    deployments = {d["name"]: d for d in application["deployments"]}
    assert deployments["Encoder"]["ray_actor_options"]["num_gpus"] == 1
    assert all(d["ray_actor_options"]["num_gpus"] == 0 for name, d in deployments.items() if name != "Encoder")
    assert application["args"]["checkpoint"] == "checkpoints/default"
    assert {application["args"][key] for key in ("device", "dtype", "runtime")} == {"auto"}
    assert "working_dir" not in application["runtime_env"]  # code and checkpoint come with the installed package


def test_cpu_only_cluster_override_is_one_documented_key():
    """README's CPU-only override: the Encoder's num_gpus to 0, and nothing else."""
    config = load("serve_config.yaml")
    (application,) = config["applications"]
    encoder = next(d for d in application["deployments"] if d["name"] == "Encoder")
    encoder["ray_actor_options"]["num_gpus"] = 0
    ServeDeploySchema.model_validate(config)
    assert "num_gpus: 1                 # CPU-only cluster: 0" in (ROOT / "serve_config.yaml").read_text()
    assert "`ray_actor_options.num_gpus` to 0" in (ROOT / "README.md").read_text()


def test_bge_large_training_config_validates_without_running():
    from multitask.training.config import load_train_config

    config = load_train_config(ROOT / "configs" / "bge-large.yaml")
    assert config.model.encoder == "BAAI/bge-large-en-v1.5"
    assert [task.name for task in config.model.tasks] == [task.name for task in DEFAULT_TASKS]
    assert config.model.embedding_dim == 1024
    assert all(Path(path).name == "train.jsonl" for path in (config.data[t].train for t in config.data))


def test_local_config_fits_two_cpus_with_the_embedded_default():
    (application,) = load("serve_config.local.yaml")["applications"]
    deployments = application["deployments"]
    assert all(d["ray_actor_options"]["num_gpus"] == 0 for d in deployments)
    assert sum(d["ray_actor_options"]["num_cpus"] * d["autoscaling_config"]["min_replicas"] for d in deployments) <= 2
    assert any(d["ray_actor_options"]["num_cpus"] < 1 for d in deployments)
    assert application["args"] == {
        "checkpoint": "checkpoints/default",
        "device": "cpu",
        "dtype": "float32",
        "runtime": "onnx-int8",
        "onnx_cache_dir": None,
        "checkpoint_cache_dir": None,
    }
    checkpoint = graph.GraphArgs.model_validate(application["args"]).checkpoint
    assert graph.locate_checkpoint(checkpoint) == SHIPPED_CHECKPOINT


def test_config_options_for_unknown_deployments_are_refused(tmp_path):
    config = load("serve_config.local.yaml")
    config["applications"][0]["deployments"][0]["name"] = "WeatherHead"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="WeatherHead"):
        graph.app_from_config(tmp_path / "bad.yaml", checkpoint=str(SHIPPED_CHECKPOINT))
    _, http_options = graph.app_from_config(ROOT / "serve_config.local.yaml", checkpoint=str(SHIPPED_CHECKPOINT))
    assert http_options["host"] == "127.0.0.1" and http_options["port"] == 8000


def test_graph_args_refuse_unknown_fields_and_devices():
    with pytest.raises(ValueError):
        graph.GraphArgs.model_validate({"checkpoint": "x", "gpu": True})
    with pytest.raises(ValueError):
        graph.GraphArgs.model_validate({"device": "tpu"})


def test_head_deployment_names_follow_the_task_names():
    from deployments.head import head_deployment_name

    assert head_deployment_name("topic") == "TopicHead"
    assert head_deployment_name("news_region") == "NewsRegionHead"


def test_serve_env_turns_on_haproxy_and_keeps_sync_handles_working(tmp_path):
    from deployments.serve_env import read_serve_env

    settings = read_serve_env()
    assert settings["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and settings["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    # drivers and other applications keep the router on its own loop, so `handle.remote(...).result()` works there
    assert settings["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "1"
    for config in ("serve_config.local.yaml", "serve_config.yaml"):  # the graph's replicas only await: same loop
        (application,) = load(config)["applications"]
        assert application["runtime_env"]["env_vars"]["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "0"
    bad = tmp_path / "serve.env"
    bad.write_text("# comment\n\nGOOD=1\nnot a setting\n")
    with pytest.raises(ValueError, match=r"serve.env:4"):
        read_serve_env(bad)
