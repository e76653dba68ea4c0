"""Each deployment's `user_config`: the knobs Serve hands to `reconfigure`, changed by redeploying the config without
a restart. Keys left out of a config take these defaults; unknown keys fail the deploy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from deployments.http import HttpSettings
from deployments.schemas import TextLimits


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
