"""A separate, small-capacity deployment of the real graph for the overload and replica-fault tests (marked slow),
and `make run` as a user starts it, for the crash and live-task tests.

Its own local Ray and Serve (so killing replicas never disturbs tests/graph), the options of
serve_config.local.yaml with smaller queues, a shorter request deadline and bearer-token auth on, on the shipped
checkpoint. Capacity: one ingress replica works on `MAX_INFLIGHT` requests at once; beyond that it sheds.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.graph_under_test import GraphClient, graph_under_test, local_config_with
from tests.support.make_run import MakeRun
from tests.support.paths import SHIPPED_CHECKPOINT

MAX_INFLIGHT = 16  # the ingress's max_inflight_requests here: "capacity" of the overload test
REQUEST_TIMEOUT_S = 8.0  # the ingress's request_timeout_s here
TOKEN = "reliability-test-token"


@pytest.fixture(scope="package")
def deployed(tmp_path_factory, shipped_onnx_cache: Path) -> GraphClient:
    directory = tmp_path_factory.mktemp("reliability")
    token_file = directory / "token"
    token_file.write_text(TOKEN + "\n")
    config = local_config_with(
        directory / "serve_config.small.yaml",
        ingress={
            "max_inflight_requests": MAX_INFLIGHT,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "auth_token_file": str(token_file),
        },
        others={"max_ongoing_requests": 8, "max_queued_requests": 16},
    )
    with graph_under_test(
        config, num_cpus=3, checkpoint=str(SHIPPED_CHECKPOINT), onnx_cache_dir=str(shipped_onnx_cache)
    ) as url:
        yield GraphClient(url, {"authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def make_run(shipped_onnx_cache: Path) -> Iterator[MakeRun]:
    """`make run` of the shipped local config, stopped (its sessions killed, HAProxy included) whatever happens."""
    # short: Ray's and HAProxy's unix sockets live under it (at most 107 characters)
    work_dir = Path(tempfile.mkdtemp(prefix="mr"))
    service = MakeRun(work_dir, shipped_onnx_cache)
    try:
        yield service
    finally:
        service.kill_all()
        shutil.rmtree(work_dir, ignore_errors=True)
