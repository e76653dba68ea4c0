"""The Serve application: Ingress -> Encoder -> one head deployment per task of the checkpoint.

    serve run serve_config.local.yaml                  # CPU laptop: embedded encoder, checkpoints/default
    serve run serve_config.yaml                        # cluster: the Encoder on a GPU node (README, Run on a cluster)
    serve run graph:build_app checkpoint=/path/to/ckpt # ad hoc: the code's options (deployments/options.py)
    serve run graph:build_app checkpoint=s3://bucket/ckpt  # from storage (multitask/storage.py)

A checkpoint with a third task gets a third head deployment (named e.g. `NewsRegionHead`) without code changes;
give it its own entry in the config files.
"""

# no `from __future__ import annotations`: Serve reads build_app's annotation to validate `args` into GraphArgs
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from deployments.encoder import Encoder
from deployments.head import TaskHeadDeployment, head_deployment_name
from deployments.ingress import Ingress
from multitask.checkpoint.check import check_checkpoint
from multitask.runtime.select import Device, Dtype, Runtime
from multitask.storage import locate_checkpoint

APP_NAME = "multitask"


class GraphArgs(BaseModel):
    """Arguments of the application builder (`args:` in the Serve config)."""

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


def build_app(args: GraphArgs) -> Application:
    """Bind Encoder, one TaskHead per checkpoint task, and the Ingress that calls them, with the code's options
    (`deployments/options.py`); a config file deployed with Serve overrides them per deployment."""
    return bind_graph(args)


def bind_graph(args: GraphArgs, options: Mapping[str, Mapping[str, Any]] | None = None) -> Application:
    """`build_app` with Serve options per deployment name (a config file's `deployments:` entries)."""
    # fails here, at deploy time, naming the file and the fix; each replica locates the checkpoint again on its node
    manifest = check_checkpoint(locate_checkpoint(args.checkpoint, args.checkpoint_cache_dir))
    options = {name: {k: v for k, v in opts.items() if k != "name"} for name, opts in (options or {}).items()}
    unknown = set(options) - set(deployment_names(manifest.model.task_names))
    if unknown:
        raise ValueError(
            f"No deployment {sorted(unknown)} in the graph. Available: {deployment_names(manifest.model.task_names)}"
        )
    encoder = Encoder.options(**options.get(Encoder.name, {})).bind(
        args.checkpoint, args.device, args.dtype, args.runtime, args.onnx_cache_dir, args.checkpoint_cache_dir
    )
    heads = {}
    for task in manifest.model.task_names:
        name = head_deployment_name(task)
        heads[task] = TaskHeadDeployment.options(name=name, **options.get(name, {})).bind(
            args.checkpoint, task, encoder, args.checkpoint_cache_dir
        )
    return Ingress.options(**options.get(Ingress.name, {})).bind(
        args.checkpoint, encoder, heads, args.checkpoint_cache_dir
    )


def app_from_config(path: str | Path, **args: Any) -> tuple[Application, dict]:
    """The application a Serve config file describes, for `serve.run` in a Python process (tests, benchmarks):
    its `args` (overridden by `args`) and every deployment's options. Returns it with the file's http_options."""
    config = ServeDeploySchema.model_validate(yaml.safe_load(Path(path).read_text()))
    (application,) = config.applications
    graph_args = GraphArgs.model_validate({**application.args, **args})
    options = {d.name: d.model_dump(exclude_unset=True) for d in application.deployments}
    return bind_graph(graph_args, options), config.http_options.model_dump(exclude_unset=True)


def deployment_names(task_names: list[str]) -> list[str]:
    """Every deployment name of the graph for these tasks (configs must use exactly these)."""
    return [Ingress.name, Encoder.name, *(head_deployment_name(task) for task in task_names)]


def __getattr__(name: str) -> Application:
    """`graph:app` (e.g. `serve run graph:app`): the default checkpoint with the code's options, built on first access
    so that importing this module never needs a checkpoint."""
    if name == "app":
        return build_app(GraphArgs())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
