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
from multitask.task_names import TaskNameError
from operations.config_overlay import deployments_by_name
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


def applications(name: str) -> dict[str, dict]:
    return {application["name"]: application for application in load(name)["applications"]}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses_as_a_serve_schema_with_the_code_names(name):
    """The encoder, one head application per task of the shipped checkpoint, and the ingress on /, which finds the
    heads through its `tasks:`; every application's args fit its builder and its deployment is the builder's."""
    schema = ServeDeploySchema.model_validate(load(name))
    tasks = [task.name for task in DEFAULT_TASKS]
    apps = {application.name: application for application in schema.applications}
    assert list(apps) == [graph.ENCODER_APP, *(graph.head_app_name(task) for task in tasks), graph.APP_NAME]
    for application in schema.applications:
        _, args_model = graph.BUILDERS[application.import_path]
        args = args_model.model_validate(application.args)  # the builder accepts the args
        assert [d.name for d in application.deployments] == [
            graph.deployment_name(application.import_path, args.model_dump())
        ]
        assert application.route_prefix == ("/" if application.name == graph.APP_NAME else None)
    for task in tasks:
        assert apps[graph.head_app_name(task)].args["task"] == task
    ingress = apps[graph.APP_NAME].deployments[0].user_config
    assert ingress["tasks"] == {task: graph.head_app_name(task) for task in tasks}
    assert list(ingress["tasks"]) == tasks  # the checkpoint's order: the default order of results


@pytest.mark.parametrize("name", CONFIGS)
def test_every_deployment_spells_out_its_options_in_full(name):
    """Serve replaces the code's dicts whole with the file's, so a key left out would silently reset."""
    for deployment in deployments_by_name(load(name)).values():
        heads_policy = {"policy"} if deployment["name"].endswith("Head") else set()  # busy time: busy_time.py
        assert set(deployment["autoscaling_config"]) == AUTOSCALING_KEYS | heads_policy, deployment["name"]
        assert set(deployment["ray_actor_options"]) == ACTOR_KEYS, deployment["name"]
        settings = SETTINGS[deployment["name"]]
        assert set(deployment["user_config"]) == set(settings.model_fields), deployment["name"]
        settings.model_validate(deployment["user_config"])


def _code_options(name: str) -> dict:
    """The code's options of a deployment name in a config (every `<Task>Head` is the one head deployment class)."""
    return DEFAULT_OPTIONS["Head" if name.endswith("Head") else name]


def test_local_config_states_the_code_options():
    """The code states each deployment's defaults once (deployments/options.py); the local config, which spells
    every key out, must state the same (but the Ingress's `tasks:`, which the code cannot know)."""
    for name, deployment in deployments_by_name(load("serve_config.local.yaml")).items():
        options = {key: value for key, value in deployment.items() if key != "name"}
        if name == "Ingress":
            options["user_config"] = {**options["user_config"], "tasks": {}}
        assert options == _code_options(name), name


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_state_every_option_the_code_states(name):
    """An option the code states but a file leaves out would silently take the laptop value on a cluster."""
    for deployment in deployments_by_name(load(name)).values():
        assert set(deployment) - {"name"} == set(_code_options(deployment["name"])), deployment["name"]


def test_the_deployments_carry_the_code_options():
    from deployments.encoder import Encoder
    from deployments.head import HeadDeployment
    from deployments.ingress import Ingress

    for deployment in (Ingress, Encoder, HeadDeployment):
        options = DEFAULT_OPTIONS[deployment.name]
        assert deployment.ray_actor_options == options["ray_actor_options"], deployment.name
        assert deployment.user_config == options["user_config"], deployment.name
        assert deployment.max_ongoing_requests == options["max_ongoing_requests"], deployment.name
        assert deployment.max_queued_requests == options["max_queued_requests"], deployment.name


def test_each_builders_args_are_its_deployments_constructor_parameters():
    """The builders bind by keyword, one args model per deployment: a field without its parameter (or the reverse)
    would fail only when a replica starts."""
    import inspect

    from deployments.encoder import Encoder
    from deployments.head import HeadDeployment
    from deployments.ingress import Ingress

    for deployment, args in (
        (Encoder, graph.EncoderArgs),
        (HeadDeployment, graph.HeadArgs),
        (Ingress, graph.IngressArgs),
    ):
        # the class's own __init__ (serve.ingress wraps the Ingress in a subclass taking *args, **kwargs)
        signatures = (inspect.signature(cls.__init__) for cls in deployment.func_or_class.__mro__)
        kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        own = next(sig for sig in signatures if not any(p.kind in kinds for p in sig.parameters.values()))
        parameters = list(own.parameters)[1:]
        assert set(parameters) == set(args.model_fields), deployment.name


def test_cluster_config_asks_a_gpu_for_the_encoder_and_picks_the_rest_by_itself():
    """serve_config.yaml runs on a fresh cluster as it stands: the shipped checkpoint (installed with the package),
    the Encoder on a GPU node; device, dtype and runtime follow what the replica gets."""
    config = load("serve_config.yaml")
    deployments = deployments_by_name(config)
    assert deployments["Encoder"]["ray_actor_options"]["num_gpus"] == 1
    assert all(d["ray_actor_options"]["num_gpus"] == 0 for name, d in deployments.items() if name != "Encoder")
    apps = applications("serve_config.yaml")
    encoder_args = apps[graph.ENCODER_APP]["args"]
    assert encoder_args["checkpoint"] == "checkpoints/default"
    assert {encoder_args[key] for key in ("device", "dtype", "runtime")} == {"auto"}
    assert all(apps[graph.head_app_name(task.name)]["args"]["head"] == "checkpoints/default" for task in DEFAULT_TASKS)
    for application in config["applications"]:  # code and checkpoint come with the installed package
        assert "working_dir" not in application["runtime_env"]


def test_cpu_only_cluster_override_is_one_documented_key():
    """README's CPU-only override: the Encoder's num_gpus to 0, and nothing else."""
    config = load("serve_config.yaml")
    deployments_by_name(config)["Encoder"]["ray_actor_options"]["num_gpus"] = 0
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
    deployments = list(deployments_by_name(load("serve_config.local.yaml")).values())
    assert all(d["ray_actor_options"]["num_gpus"] == 0 for d in deployments)
    assert sum(d["ray_actor_options"]["num_cpus"] * d["autoscaling_config"]["min_replicas"] for d in deployments) <= 2
    assert any(d["ray_actor_options"]["num_cpus"] < 1 for d in deployments)
    encoder_args = applications("serve_config.local.yaml")[graph.ENCODER_APP]["args"]
    assert encoder_args == {
        "checkpoint": "checkpoints/default",
        "device": "cpu",
        "dtype": "float32",
        "runtime": "onnx-int8",
        "onnx_cache_dir": None,
        "checkpoint_cache_dir": None,
    }
    checkpoint = graph.EncoderArgs.model_validate(encoder_args).checkpoint
    assert graph.locate_checkpoint(checkpoint) == SHIPPED_CHECKPOINT


def test_config_options_for_unknown_deployments_are_refused(tmp_path):
    config = load("serve_config.local.yaml")
    deployments_by_name(config)["TopicHead"]["name"] = "WeatherHead"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ValueError, match="WeatherHead"):
        graph.apps_from_config(tmp_path / "bad.yaml", checkpoint=str(SHIPPED_CHECKPOINT))
    apps, http_options = graph.apps_from_config(ROOT / "serve_config.local.yaml", checkpoint=str(SHIPPED_CHECKPOINT))
    assert [app.name for app in apps] == list(applications("serve_config.local.yaml"))
    assert http_options["host"] == "127.0.0.1" and http_options["port"] == 8000


def test_builder_args_refuse_unknown_fields_devices_tasks_and_heads(tmp_path):
    with pytest.raises(ValueError):
        graph.EncoderArgs.model_validate({"checkpoint": "x", "gpu": True})
    with pytest.raises(ValueError):
        graph.EncoderArgs.model_validate({"device": "tpu"})
    with pytest.raises(ValueError, match="no head for task 'weather'"):
        graph.build_head(graph.HeadArgs(task="weather", head=str(SHIPPED_CHECKPOINT)))
    with pytest.raises(TaskNameError, match="does not fit"):
        graph.build_head(graph.HeadArgs(task="Topic", head=str(SHIPPED_CHECKPOINT)))
    with pytest.raises(ValueError, match="does not fit"):
        IngressSettings.model_validate({"tasks": {"News-Region": "news-head"}})


def test_head_deployment_names_follow_the_task_names():
    from deployments.head import head_deployment_name

    assert head_deployment_name("topic") == "TopicHead"
    assert head_deployment_name("news_region") == "NewsRegionHead"


def test_serve_env_turns_on_haproxy_and_keeps_sync_handles_working(tmp_path):
    from operations.serve_env import read_serve_env

    settings = read_serve_env()
    assert settings["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and settings["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    # drivers and other applications keep the router on its own loop, so `handle.remote(...).result()` works there
    assert settings["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "1"
    for config in ("serve_config.local.yaml", "serve_config.yaml"):  # the graph's replicas only await: same loop
        for application in load(config)["applications"]:
            assert application["runtime_env"]["env_vars"]["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "0"
    bad = tmp_path / "serve.env"
    bad.write_text("# comment\n\nGOOD=1\nnot a setting\n")
    with pytest.raises(ValueError, match=r"serve.env:4"):
        read_serve_env(bad)
