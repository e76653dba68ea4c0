"""Each deployment's `user_config`: the knobs Serve hands to `reconfigure`, changed by redeploying the config without
a restart. Keys left out of a config take these defaults; unknown keys fail the deploy.

Settings and limits live here alone, and this module imports nothing heavy (pydantic, yaml): every replica reads
it, and the Encoder and head replicas never load the HTTP layer (FastAPI routes, schemas, error handlers) through
it (tests/unit/test_replica_imports.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployments.api_keys import ApiKeySpec, KeyTable, read_key_file
from multitask.task_names import TaskNameError, check_task_name


class TextLimits(BaseModel):
    """How many texts a request may carry and how much of each the service reads (part of the Ingress's
    `user_config`, `IngressSettings`; changed at runtime, so the request schemas take them as validation context)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_texts_per_request: int = Field(default=64, gt=0, description="More texts -> 413 too_many_texts.")
    max_chars_per_text: int = Field(
        default=100_000,
        gt=0,
        description="Characters of a text the service reads; the rest is dropped and the text flagged `truncated` "
        "(the encoder reads at most its token window anyway). Never an error: bodies are bounded by max_body_bytes.",
    )


class HttpSettings(BaseModel):
    """The HTTP layer's part of the Ingress's `user_config`: the body limit and the API keys. Keys come from
    `api_keys` (inline), `api_keys_file`, and the single unnamed bearer token of `auth_token_env` /
    `auth_token_file` (a key named `token`, without limits); none of them = auth off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(default=1_048_576, gt=0, description="Larger body -> 413 body_too_large.")
    auth_token_env: str | None = Field(
        default=None, description="Bearer-token auth: the environment variable (of the ingress replica) holding it."
    )
    auth_token_file: str | None = Field(
        default=None, description="Bearer-token auth: a file holding it (read at deploy time; whitespace stripped)."
    )
    api_keys: list[ApiKeySpec] = Field(
        default_factory=list, description="Named API keys (`key_sha256` keeps the secret out of the config)."
    )
    api_keys_file: str | None = Field(
        default=None, description="A YAML/JSON file {keys: [...]} of named API keys, read at every reconfigure."
    )
    api_keys_revision: int = Field(
        default=0, description="Change it to re-read api_keys_file without changing anything else (no restart)."
    )

    def http_policy(self, previous: HttpPolicy | None = None) -> HttpPolicy:
        """The settings with the keys read (raises ValueError if one is named but not there: the deploy fails).
        Keys of `previous` whose limits did not change keep their rate-limit state."""
        specs = list(self.api_keys)
        if self.api_keys_file:
            specs += read_key_file(self.api_keys_file)
        token = self.read_token()
        if token is not None:
            specs.append(ApiKeySpec(name="token", key=token.decode()))
        keys = KeyTable(specs, previous=previous.keys if previous else None) if specs else None
        return HttpPolicy(max_body_bytes=self.max_body_bytes, keys=keys)

    def read_token(self) -> bytes | None:
        """The bearer token the config names (environment variable or file), or None when auth is off. A token that is
        named but missing or empty is an error: failing the deploy beats serving without the auth that was asked for."""
        if self.auth_token_env and self.auth_token_file:
            raise ValueError("Ingress user_config: set auth_token_env or auth_token_file, not both.")
        if self.auth_token_env:
            token = os.environ.get(self.auth_token_env, "").strip()
            where = f"environment variable {self.auth_token_env} (set it in the application's runtime_env.env_vars)"
        elif self.auth_token_file:
            path = Path(self.auth_token_file).expanduser()
            try:
                token = path.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"Ingress auth_token_file {path} cannot be read ({exc}); create it on every node."
                ) from exc
            where = f"file {path}"
        else:
            return None
        if not token:
            raise ValueError(f"Ingress bearer-token auth is on but the {where} is empty or unset; put the token there.")
        return token.encode()


@dataclass(frozen=True)
class HttpPolicy:
    """What the HTTP layer enforces before a route runs, as of the last reconfigure."""

    max_body_bytes: int
    keys: KeyTable | None = None  # None = auth off


class IngressSettings(HttpSettings, TextLimits):
    """The Ingress's `user_config`, one flat dict in the YAML: the limits on a request's texts (`TextLimits`), the
    HTTP layer's body limit and bearer-token auth (`HttpSettings`), and the ingress's own deadlines and load
    shedding (below)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_timeout_s: float = Field(default=30.0, gt=0, description="Graph answer deadline -> 503 timeout.")
    health_timeout_s: float = Field(default=5.0, gt=0, description="Per-deployment ping deadline in /healthz.")
    max_inflight_requests: int = Field(
        default=96,
        gt=0,
        description="Requests one ingress replica works on at once; more -> 503 overloaded with Retry-After at once. "
        "Keep it below the Ingress's max_ongoing_requests, so that the ingress sheds load before Serve's proxy queues.",
    )
    tasks: dict[str, str] = Field(
        default_factory=dict,
        description="The tasks served, in the default order of results: task name -> its head application (one of "
        "graph:build_head). Changed in place: a task added here answers once its head does (503 unavailable until "
        "then, for that task alone); one left out is no longer served.",
    )

    task_start_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="How long a deploy waits for the heads of tasks added to answer (the application is ready once "
        "they do, or after this); meanwhile and after, such a task answers 503 unavailable until its head does.",
    )

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks: dict[str, str]) -> dict[str, str]:
        checked: list[str] = []
        for task in tasks:
            try:
                checked.append(check_task_name(task, existing=checked))
            except TaskNameError as exc:
                raise ValueError(str(exc)) from exc
        return tasks


class EncoderSettings(BaseModel):
    """The encoder's `user_config`: dynamic batching and CPU threads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(
        default=32, gt=0, description="Texts per forward pass, across requests (batches form without waiting)."
    )
    max_batch_tokens: int = Field(
        default=4096, ge=0, description="Padded tokens per forward pass (texts x longest); 0 = no limit."
    )
    threads: int = Field(
        default=0, ge=0, description="CPU threads of a forward pass (onnxruntime or torch intra-op); 0 = the default."
    )


class HeadSettings(BaseModel):
    """A head's `user_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int = Field(default=1, ge=0, description="BLAS threads of the (numpy) head MLP; 0 = leave as is.")
