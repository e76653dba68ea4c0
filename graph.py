"""The Serve application: Ingress -> Encoder -> one head deployment per task of the checkpoint.

    serve run serve_config.local.yaml                  # CPU laptop: embedded encoder, checkpoints/default
    serve run serve_config.yaml                        # cluster: bge-large encoder on a GPU
    serve run graph:build_app checkpoint=/path/to/ckpt # ad hoc, code defaults for every deployment

A checkpoint with a third task gets a third head deployment (named e.g. `NewsRegionHead`) without code changes;
give it its own entry in the config files.
"""

# no `from __future__ import annotations`: Serve reads build_app's annotation to validate `args` into GraphArgs
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from deployments.encoder import Encoder
from deployments.head import TaskHeadDeployment, head_deployment_name
from deployments.ingress import Ingress
from multitask.checkpoint import (
    ENCODER_FILE,
    MODEL_FILE,
    CheckpointManifest,
    load_head,
    read_manifest,
    read_tensors,
)
from multitask.errors import CheckpointError
from multitask.finetune import FinetuneMode

PROJECT_ROOT = Path(__file__).resolve().parent
APP_NAME = "multitask"


def resolve_checkpoint(path: str) -> str:
    """An absolute path, as given; a relative one from the working directory if it exists there, else from the
    project root (replicas and the Serve controller do not share the shell's working directory)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return str(candidate)
    if candidate.exists():
        return str(candidate.resolve())
    return str(PROJECT_ROOT / candidate)


class GraphArgs(BaseModel):
    """Arguments of the application builder (`args:` in the Serve config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str = Field(
        default="checkpoints/default",
        description="Checkpoint directory, readable from every node. Relative paths resolve from the project root.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Encoder device; auto = GPU if given.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="Encoder dtype; auto = bf16/fp16 on GPU, fp32 on CPU."
    )
    runtime: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="Encoder runtime; auto = onnx (onnxruntime, exported from the checkpoint on first start) on CPU "
        "in float32, torch otherwise.",
    )
    onnx_cache_dir: str | None = Field(
        default=None,
        description="Where the Encoder keeps ONNX exports, one per checkpoint; default ~/.cache/multitask/onnx of "
        "the replica's node.",
    )

    @field_validator("checkpoint")
    @classmethod
    def _resolve(cls, path: str) -> str:
        return resolve_checkpoint(path)


def build_app(args: GraphArgs) -> Application:
    """Bind Encoder, one TaskHead per checkpoint task, and the Ingress that calls them (the code's options)."""
    return bind_graph(args)


def bind_graph(args: GraphArgs, options: Mapping[str, Mapping[str, Any]] | None = None) -> Application:
    """`build_app` with Serve options per deployment name (a config file's `deployments:` entries)."""
    manifest = check_checkpoint(args.checkpoint)  # fails here, at deploy time, naming the file and the fix
    options = {name: {k: v for k, v in opts.items() if k != "name"} for name, opts in (options or {}).items()}
    unknown = set(options) - set(deployment_names(manifest.model.task_names))
    if unknown:
        raise ValueError(
            f"No deployment {sorted(unknown)} in the graph. Available: {deployment_names(manifest.model.task_names)}"
        )
    encoder = Encoder.options(**options.get(Encoder.name, {})).bind(
        args.checkpoint, args.device, args.dtype, args.runtime, args.onnx_cache_dir
    )
    heads = {}
    for task in manifest.model.task_names:
        name = head_deployment_name(task)
        heads[task] = TaskHeadDeployment.options(name=name, **options.get(name, {})).bind(
            args.checkpoint, task, encoder
        )
    return Ingress.options(**options.get(Ingress.name, {})).bind(args.checkpoint, encoder, heads)


def check_checkpoint(checkpoint: str | Path) -> CheckpointManifest:
    """Refuse bad artifacts before any replica starts, with CheckpointError naming the file and the fix: a missing
    directory or config, a config that does not validate, missing or corrupt safetensors, heads or projection of
    the wrong shape. The encoder's fingerprint needs the transformer itself, so the Encoder replica checks it when
    it loads (EncoderMismatchError, same style); heads then refuse embeddings of any other encoder."""
    directory = Path(checkpoint)
    manifest = read_manifest(directory)
    for task in manifest.model.task_names:
        load_head(directory, task)  # small (1024 -> 512 -> labels): loads and checks shapes against the config
    if not read_tensors(directory / MODEL_FILE, "projection."):
        raise CheckpointError(f"{directory / MODEL_FILE} holds no projection weights; re-save or re-train it.")
    if manifest.encoder.finetune is not FinetuneMode.frozen:
        _check_safetensors_header(directory / ENCODER_FILE)  # header only: full fine-tunes are large
    return manifest


def _check_safetensors_header(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, re-save or re-train it.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                raise CheckpointError(f"{path} holds no tensors; re-save or re-train the checkpoint.")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({exc}); re-save or re-train it.") from exc


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
    """`graph:app` (e.g. `serve run graph:app`): the default checkpoint with code defaults, built on first access
    so that importing this module never needs a checkpoint."""
    if name == "app":
        return build_app(GraphArgs())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
