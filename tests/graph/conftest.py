"""The real serving graph, deployed once for every test in tests/graph/ and torn down after them.

A local Ray (no dashboard, token auth off), Serve's HTTP proxy on a free port of 127.0.0.1, and the application
of serve_config.local.yaml (every deployment option of the file, but one Encoder replica) on a temporary
checkpoint: the real embedded encoder with seeded, untrained heads (so the tests do not depend on training), plus
evaluation metrics to report.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployments.options import DEFAULT_OPTIONS
from graph import APP_NAME
from multitask.checkpoint.load import load_model, save_checkpoint
from multitask.model import MultiTaskModel
from tests.support.graph_under_test import GraphClient, graph_under_test, local_config_with

from .helpers import METRICS


@pytest.fixture(scope="session")
def checkpoint_dir(minilm_model: MultiTaskModel, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("serving") / "ckpt"
    save_checkpoint(minilm_model, directory, metrics=METRICS)
    return directory


@pytest.fixture(scope="session")
def reference_model(checkpoint_dir: Path) -> MultiTaskModel:
    """The same checkpoint loaded in-process: what the service must agree with."""
    return load_model(checkpoint_dir)


ONE_ENCODER = {
    "autoscaling_config": {
        **DEFAULT_OPTIONS["Encoder"]["autoscaling_config"],  # = the local config's (tests/unit/test_serve_configs.py)
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 1,
    }
}
"""The local config's Encoder, one replica instead of one per core: the batching tests read `Encoder.stats`, which
is one replica's (tests/graph/test_serve_run.py serves the file's two)."""

RUNTIME = "onnx"
"""The float32 encoder: the tests here compare the service with the in-process torch model within 1e-4, closer than
the local config's int8 encoder comes (tests/graph/test_onnx_int8.py checks int8 against float32)."""


@dataclass(kw_only=True)
class Service(GraphClient):
    checkpoint: Path
    gcs_address: str
    onnx_cache: Path

    def redeploy(self, **ingress_user_config) -> None:
        """Deploy the same graph with these Ingress `user_config` keys changed (none = the file's values): Serve
        reconfigures the ingress replica in place, nothing restarts."""
        from ray import serve

        from graph import app_from_config

        with tempfile.TemporaryDirectory() as directory:
            changed = local_config_with(
                Path(directory) / "serve_config.yaml", ingress=ingress_user_config, encoder=ONE_ENCODER
            )
            app, _ = app_from_config(
                changed, checkpoint=str(self.checkpoint), runtime=RUNTIME, onnx_cache_dir=str(self.onnx_cache)
            )
        serve.run(app, name=APP_NAME, route_prefix="/")


@pytest.fixture(scope="package")
def service(checkpoint_dir: Path, tmp_path_factory) -> Service:
    import ray

    # a fresh ONNX cache: the Encoder exports this checkpoint on start, as on a user's first run
    onnx_cache = tmp_path_factory.mktemp("onnx-cache")
    # the local config asks for 1.75 CPUs; one more leaves room for the second application of the handle tests
    config = local_config_with(tmp_path_factory.mktemp("config") / "serve_config.yaml", encoder=ONE_ENCODER)
    with graph_under_test(
        config, num_cpus=3, checkpoint=str(checkpoint_dir), runtime=RUNTIME, onnx_cache_dir=str(onnx_cache)
    ) as url:
        yield Service(
            url,
            checkpoint=checkpoint_dir,
            gcs_address=ray.get_runtime_context().gcs_address,
            onnx_cache=Path(onnx_cache),
        )
