"""The Serve applications of the service: one Encoder application, one application per task head, and the Ingress.

    serve run serve_config.local.yaml                  # CPU laptop: embedded encoder, checkpoints/default
    serve run serve_config.yaml                        # cluster: the Encoder on a GPU node (README, Run on a cluster)

Each is its own application of one config file, so that Serve (one code version per application, from its
`import_path`, `runtime_env` and `args`) starts, rolls or deletes one without touching the others:

    encoder      graph:build_encoder   args: the checkpoint and runtime            route_prefix: null
    topic-head   graph:build_head      args: the task, its head, the encoder app   route_prefix: null
    multitask    graph:build_ingress   args: the encoder app                       route_prefix: /

The Ingress finds the heads through its `user_config` (`tasks: {topic: topic-head, ...}`: task -> head
application), which Serve updates in place. Adding a task is therefore one more head application plus one line in
`tasks:`, and `serve deploy`: only the new head's replicas start (README, Add a task to a running service). A head is
a task of a checkpoint (`head: checkpoints/default`) or a head artifact of `multitask add-task` (`head: heads/x`).
"""

# no `from __future__ import annotations`: Serve reads the builders' annotations to validate `args`
import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from deployments.encoder import Encoder
from deployments.head import DEPLOYING_STATUSES, ENCODER_WAIT_S, HeadDeployment
from deployments.ingress import Ingress
from multitask.checkpoint.check import check_checkpoint
from multitask.head_artifact import check_head_artifact, is_head_artifact
from multitask.runtime.select import Device, Dtype, Runtime
from multitask.storage import locate_checkpoint
from multitask.task_names import check_task_name, head_app_name, head_deployment_name  # noqa: F401 - head_app_name: the configs' names, used with APP_NAME

APP_NAME = "multitask"
"""The Ingress's application (`serve.get_app_handle("multitask")`), as the shipped configs name it."""
ENCODER_APP = "encoder"
"""The Encoder's application in the shipped configs (a head's: `head_app_name(task)`)."""


class EncoderArgs(BaseModel):
    """Arguments of the Encoder application (`args:` of `graph:build_encoder`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str = Field(
        default="checkpoints/default",
        description="Checkpoint: a local path (relative: from the working directory if it exists there, else the "
        "project root) or a storage URI (s3://, gs://, file://, ...) that each node fetches once into its cache.",
    )
    checkpoint_cache_dir: str | None = Field(
        default=None,
        description="Where replicas keep checkpoints fetched from URIs, one folder per content digest; default "
        "~/.cache/multitask/checkpoints of the replica's node.",
    )
    device: Device = Field(default="auto", description="Encoder device; auto = GPU if given.")
    dtype: Dtype = Field(default="auto", description="Encoder dtype; auto = bf16/fp16 on GPU, fp32 on CPU.")
    runtime: Runtime = Field(
        default="auto",
        description="Encoder runtime; auto = onnx (onnxruntime, exported from the checkpoint on first start) on CPU "
        "in float32, torch otherwise; onnx-int8 = that export quantized to int8 by onnxruntime (CPU only, ~2x the "
        "texts/s; measure the checkpoint's quality with it first: bench/quality.py --rows int8).",
    )
    onnx_cache_dir: str | None = Field(
        default=None,
        description="Where the Encoder keeps ONNX exports, one per checkpoint encoder; default ~/.cache/multitask/onnx of "
        "the replica's node.",
    )


class HeadArgs(BaseModel):
    """Arguments of one head application (`args:` of `graph:build_head`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(description="The task's name: its route (`/v1/predict/{task}`) and its key in results.")
    head: str = Field(
        default="checkpoints/default",
        description="Where the head's weights are: a checkpoint with this task (its jointly trained head), or a head "
        "artifact written by `multitask add-task`; a local path or a storage URI.",
    )
    encoder_app: str = Field(default=ENCODER_APP, description="The Encoder's application, whose embeddings it reads.")
    checkpoint_cache_dir: str | None = Field(default=None, description="As the Encoder's: where URIs are fetched to.")
    encoder_wait_s: float = Field(
        default=ENCODER_WAIT_S,
        gt=0,
        description="While the encoder application is still deploying, how long a starting head waits for it to "
        "answer with the head's encoder fingerprint; once the encoder application runs another encoder, the head is "
        "refused at once (EncoderMismatchError).",
    )


class IngressArgs(BaseModel):
    """Arguments of the Ingress application (`args:` of `graph:build_ingress`); its tasks are in its `user_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder_app: str = Field(default=ENCODER_APP, description="The Encoder's application.")


def build_encoder(args: EncoderArgs) -> Application:
    """`import_path: graph:build_encoder`: the code's options, which the config file's override."""
    return bind_encoder(args)


def bind_encoder(args: EncoderArgs, options: dict | None = None) -> Application:
    """The Encoder application; refuses a bad checkpoint here, at deploy time, naming the file and the fix.
    `options`: the Encoder's Serve options (a config file's `deployments:` entry; Serve applies them itself)."""
    check_checkpoint(locate_checkpoint(args.checkpoint, args.checkpoint_cache_dir))
    return Encoder.options(**(options or {})).bind(**args.model_dump())


def build_head(args: HeadArgs) -> Application:
    """`import_path: graph:build_head`: the code's options, which the config file's override."""
    wait_for_first_encoder(args.encoder_app, args.encoder_wait_s)
    return bind_head(args)


def bind_head(args: HeadArgs, options: dict | None = None) -> Application:
    """One head application, its deployment named after the task (`topic` -> `TopicHead`); refuses a bad task name
    or head here, at deploy time (each replica loads the head again on its node)."""
    check_task_name(args.task)
    source = locate_checkpoint(args.head, args.checkpoint_cache_dir)
    if is_head_artifact(source):
        trained_for = check_head_artifact(source).task.name
        if trained_for != args.task:
            raise ValueError(f"Head artifact {args.head} is the head of task {trained_for!r}, not of {args.task!r}.")
    else:
        tasks = check_checkpoint(source).model.task_names
        if args.task not in tasks:
            raise ValueError(f"Checkpoint {args.head} has no head for task {args.task!r}; its tasks: {tasks}.")
    return HeadDeployment.options(name=head_deployment_name(args.task), **(options or {})).bind(**args.model_dump())


def build_ingress(args: IngressArgs) -> Application:
    """`import_path: graph:build_ingress`: the code's options, which the config file's override."""
    wait_for_first_encoder(args.encoder_app, ENCODER_WAIT_S)
    return bind_ingress(args)


def wait_for_first_encoder(encoder_app: str, wait_s: float) -> None:
    """In a Serve deploy (the build of a head or ingress application, a Ray task of the controller): while the
    encoder application deploys for the first time (no Encoder replica runs yet), wait until one runs, at most
    `wait_s`. `serve deploy` starts every application at once, and Serve spreads replicas over every node that fits
    them, the GPU node included: a head or ingress replica placed there first can take the CPUs the Encoder needs,
    and the Encoder then never starts (while they wait for it). Once the Encoder runs, its CPUs are its own. An
    encoder already running (a rolling update, a task added later), failed or absent, or no Serve here: no wait."""
    import ray

    if not ray.is_initialized():
        return
    from ray import serve

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            app = serve.status().applications.get(encoder_app)
        except Exception:  # noqa: BLE001 - no Serve controller here (a build outside a deploy): nothing to wait for
            return
        if app is None or app.status not in DEPLOYING_STATUSES:
            return
        # no Encoder listed yet: the encoder application's own build has not finished (it lists no deployments until
        # then), which is no reason not to wait (a CI run placed both heads before the Encoder that way)
        encoder = app.deployments.get(Encoder.name)
        if encoder is not None and encoder.replica_states.get("RUNNING", 0) > 0:
            return
        time.sleep(1.0)


def bind_ingress(args: IngressArgs, options: dict | None = None) -> Application:
    """The Ingress application (HTTP on its `route_prefix`, handles through `serve.get_app_handle`)."""
    return Ingress.options(**(options or {})).bind(**args.model_dump())


BUILDERS = {
    "graph:build_encoder": (bind_encoder, EncoderArgs),
    "graph:build_head": (bind_head, HeadArgs),
    "graph:build_ingress": (bind_ingress, IngressArgs),
}
"""Each `import_path` of the config files -> its builder with Serve options (Serve's own takes one argument). Every
builder binds its deployment with its args model's fields as keyword arguments: they are the constructor's parameters
(tests/unit/test_serve_configs.py checks it)."""


class ConfiguredApp(NamedTuple):
    """One application of a config file, built in this process with the file's deployment options."""

    name: str
    route_prefix: str | None
    app: Application


def deployment_name(import_path: str, args: dict) -> str:
    """The one deployment of an application of the config files."""
    if import_path == "graph:build_head":
        return head_deployment_name(args["task"])
    return {"graph:build_encoder": Encoder.name, "graph:build_ingress": Ingress.name}[import_path]


def point_config_at(config: dict, **encoder_args: Any) -> dict:
    """A Serve config as loaded from YAML, changed in place: `encoder_args` set in the Encoder application's args,
    and a `checkpoint` or `checkpoint_cache_dir` among them also in every head application whose `head` is the
    Encoder's checkpoint (its jointly trained heads follow it). Returns it."""
    apps = config["applications"]
    (encoder,) = [app for app in apps if app["import_path"] == "graph:build_encoder"]
    for app in apps:
        if app["import_path"] == "graph:build_head" and app["args"].get("head") == encoder["args"].get("checkpoint"):
            if "checkpoint" in encoder_args:
                app["args"]["head"] = encoder_args["checkpoint"]
            if "checkpoint_cache_dir" in encoder_args:
                app["args"]["checkpoint_cache_dir"] = encoder_args["checkpoint_cache_dir"]
    encoder["args"].update(encoder_args)
    return config


def apps_from_config(path: str | Path, **encoder_args: Any) -> tuple[list[ConfiguredApp], dict]:
    """The applications a Serve config file describes, for `serve.run` in a Python process (tests, benchmarks), in
    the file's order, each with its `args` (changed by `encoder_args` as `point_config_at` says) and its
    deployment's options. Returns the file's http_options too."""
    raw = point_config_at(yaml.safe_load(Path(path).read_text()), **encoder_args)
    config = ServeDeploySchema.model_validate(raw)
    apps = []
    for application in config.applications:
        if application.import_path not in BUILDERS:
            raise ValueError(
                f"{path}: application {application.name!r} imports {application.import_path!r}; "
                f"the builders are {sorted(BUILDERS)}"
            )
        builder, args_model = BUILDERS[application.import_path]
        args = application.args
        name = deployment_name(application.import_path, args)
        options = {d.name: d.model_dump(exclude_unset=True, exclude={"name"}) for d in application.deployments}
        if set(options) - {name}:
            raise ValueError(
                f"{path}: no deployment {sorted(set(options) - {name})} in application {application.name!r}; "
                f"its deployment is {name}"
            )
        app = builder(args_model.model_validate(args), options.get(name))
        apps.append(ConfiguredApp(application.name, application.route_prefix, app))
    return apps, config.http_options.model_dump(exclude_unset=True)


def run_config(path: str | Path, host: str = "127.0.0.1", port: int = 8000, **encoder_args: Any) -> None:
    """Deploy every application of a config file from this Python process (tests, benchmarks; users run `serve run`
    or `serve deploy`): Serve's HTTP on `host:port`, then the applications in the file's order, each `serve.run`
    returning once it runs (the encoder first: the heads and the ingress wait for it)."""
    from ray import serve

    apps, http_options = apps_from_config(path, **encoder_args)
    serve.start(http_options={**http_options, "host": host, "port": port})
    for name, route_prefix, app in apps:
        serve.run(app, name=name, route_prefix=route_prefix)
