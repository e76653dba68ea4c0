"""The real serving graph, deployed once for every test in tests/graph/ and torn down after them.

A local Ray (no dashboard, token auth off), Serve's HTTP proxy on a free port of 127.0.0.1, and the application
of serve_config.local.yaml as users run it (every deployment option and `args` of the file, its runtime included:
int8 today; but one Encoder replica) on a temporary checkpoint: the real embedded encoder with seeded, untrained
heads (so the tests do not depend on training), plus evaluation metrics to report and the activation ranges that
training writes (so its int8 is static int8, as for every trained checkpoint). The service's answers are
compared with `served_model`, the same checkpoint and runtime in-process, within `ANSWER_TOLERANCE`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from deployments.options import DEFAULT_OPTIONS
from graph import APP_NAME
from multitask.checkpoint.load import load_model, save_checkpoint
from multitask.model import MultiTaskModel
from multitask.served_model import ServedModel
from multitask.training.activation_ranges import write_activation_ranges
from tests.support.graph_under_test import GraphClient, graph_under_test, local_config_with
from tests.support.paths import LOCAL_CONFIG

from .helpers import METRICS, validation_texts


@pytest.fixture(scope="session")
def checkpoint_dir(minilm_model: MultiTaskModel, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("serving") / "ckpt"
    save_checkpoint(minilm_model, directory, metrics=METRICS)
    write_activation_ranges(directory, {"topic": validation_texts("topic"), "sentiment": validation_texts("sentiment")})
    return directory


@pytest.fixture(scope="session")
def reference_model(checkpoint_dir: Path) -> MultiTaskModel:
    """The same checkpoint loaded in-process with torch: its tokenizer and fingerprint (its float32 answers are
    the ONNX runtimes' own parity tests' business: tests/model)."""
    return load_model(checkpoint_dir)


@pytest.fixture(scope="package")
def served_model(service) -> ServedModel:
    """The service's checkpoint through the runtime the service runs (`LOCAL_RUNTIME`, from the service's ONNX
    cache) and the numpy heads, in this process: what every answer of the service must equal."""
    return ServedModel.load(
        service.checkpoint, runtime=LOCAL_RUNTIME, device="cpu", dtype="float32", onnx_cache_dir=service.onnx_cache
    )


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

LOCAL_RUNTIME = yaml.safe_load(LOCAL_CONFIG.read_text())["applications"][0]["args"]["runtime"]
"""The encoder runtime the shipped local config serves (onnx-int8), which the graph here serves too."""


@dataclass(kw_only=True)
class Service(GraphClient):
    checkpoint: Path
    gcs_address: str
    onnx_cache: Path

    def redeploy(self, **ingress_user_config) -> None:
        """Deploy the same graph with these Ingress `user_config` keys changed (none = the file's values): Serve
        reconfigures the ingress replica in place, nothing restarts."""
        from ray import serve

        from graph import apps_from_config

        with tempfile.TemporaryDirectory() as directory:
            changed = local_config_with(
                Path(directory) / "serve_config.yaml", ingress=ingress_user_config, encoder=ONE_ENCODER
            )
            apps, _ = apps_from_config(changed, checkpoint=str(self.checkpoint), onnx_cache_dir=str(self.onnx_cache))
        (ingress,) = [configured for configured in apps if configured.name == APP_NAME]
        serve.run(ingress.app, name=ingress.name, route_prefix=ingress.route_prefix)


@pytest.fixture(scope="package")
def service(checkpoint_dir: Path, tmp_path_factory) -> Service:
    import ray

    # a fresh ONNX cache: the Encoder exports this checkpoint on start, as on a user's first run
    onnx_cache = tmp_path_factory.mktemp("onnx-cache")
    # the local config asks for 1.45 CPUs; the rest leaves room for the second application of the handle tests
    config = local_config_with(tmp_path_factory.mktemp("config") / "serve_config.yaml", encoder=ONE_ENCODER)
    with graph_under_test(config, num_cpus=3, checkpoint=str(checkpoint_dir), onnx_cache_dir=str(onnx_cache)) as url:
        yield Service(
            url,
            checkpoint=checkpoint_dir,
            gcs_address=ray.get_runtime_context().gcs_address,
            onnx_cache=Path(onnx_cache),
        )
