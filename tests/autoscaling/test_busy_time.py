"""Heads scale on busy time with the shipped policy (deployments/busy_time.py): a saturated TopicHead scales out
while SentimentHead and the Encoder stay, and scales back once its load stops.

The heads here take the cluster config's `autoscaling_config` as it is (policy, target, window, delays: what
`serve_config.yaml` deploys), but `max_replicas: 3` (its 8 do not fit 2 cores), on the local config's graph. The
load calls TopicHead directly through its handle, as another application would, with 256 embeddings a call from 8
threads: through HTTP, the encoder is the bottleneck on 2 cores and no head is ever busy (which is why heads do not
scale on HTTP load here, rightly).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml

from operations.config_overlay import deployments_by_name
from tests.support.graph_under_test import deployment_statuses, graph_under_test, local_config_with
from tests.support.paths import ROOT, SHIPPED_CHECKPOINT

pytestmark = pytest.mark.slow

CLUSTER_HEADS = deployments_by_name(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))["TopicHead"]
HEAD_AUTOSCALING = {**CLUSTER_HEADS["autoscaling_config"], "max_replicas": 3}
CALLERS = 8
ROWS = 256
SCALE_UP_WITHIN_S = 150  # the window (30 s) must fill with busy time, then upscale_delay_s (15 s)
SCALE_DOWN_WITHIN_S = 240  # the window empties (30 s), then downscale_delay_s (60 s)
MAX_LOAD_S = SCALE_UP_WITHIN_S + 30


@pytest.fixture(scope="module")
def graph(tmp_path_factory, shipped_onnx_cache):
    config = local_config_with(
        tmp_path_factory.mktemp("busy") / "serve_config.yaml", heads={"autoscaling_config": HEAD_AUTOSCALING}
    )
    with graph_under_test(
        config, num_cpus=2, checkpoint=str(SHIPPED_CHECKPOINT), onnx_cache_dir=str(shipped_onnx_cache)
    ) as url:
        yield url


def changes(timeline: list[tuple[float, dict[str, int]]]) -> list[tuple[float, dict[str, int]]]:
    """The first sample and each one that differs from the one before."""
    return [timeline[0]] + [(t, r) for (t, r), (_, before) in zip(timeline[1:], timeline) if r != before]


def replicas() -> dict[str, int]:
    return {name: status.replica_states.get("RUNNING", 0) for name, status in deployment_statuses().items()}


def head_load_actor():
    """The HeadLoad actor class. Defined in a function so that Ray ships the class itself to its worker (this test
    module is not importable there)."""

    class HeadLoad:
        """CALLERS threads calling TopicHead.classify back to back (ROWS embeddings each) until stopped, in a Ray actor
        of their own: Serve handles made in this test process would outlive this test's Ray here (their routers and
        metrics pushers keep running in the process) and disturb the next tiers' Rays; the actor's die with it."""

        def __init__(self) -> None:
            from ray import serve

            from deployments.encoded_texts import EncodedTexts
            from graph import ENCODER_APP, head_app_name

            fingerprint = serve.get_deployment_handle("Encoder", ENCODER_APP).info.remote().result()["fingerprint"]
            rows = np.random.default_rng(0).normal(size=(ROWS, 1024)).astype(np.float32)
            self.batch = EncodedTexts(rows, [False] * ROWS, fingerprint)
            self.head = serve.get_deployment_handle("TopicHead", head_app_name("topic"))
            self.stopped = threading.Event()
            self.calls, self.errors = 0, []

        def run(self, max_s: float) -> dict:
            threads = [threading.Thread(target=self._call, args=(max_s,)) for _ in range(CALLERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return {"calls": self.calls, "errors": self.errors[:3]}

        def stop(self) -> None:
            self.stopped.set()

        def _call(self, max_s: float) -> None:
            deadline = time.monotonic() + max_s
            while not self.stopped.is_set() and time.monotonic() < deadline:
                try:
                    assert len(self.head.classify.remote(self.batch).result(timeout_s=60)) == ROWS
                    self.calls += 1
                except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                    self.errors.append(repr(exc))

    return HeadLoad


def test_a_saturated_head_scales_out_alone_and_back(graph):
    minimum = replicas()
    assert minimum["TopicHead"] == minimum["SentimentHead"] == 1, minimum
    timeline: list[tuple[float, dict[str, int]]] = []
    start = time.monotonic()

    def sample() -> dict[str, int]:
        now = replicas()
        timeline.append((round(time.monotonic() - start, 1), now))
        return now

    import ray

    load = ray.remote(num_cpus=0, max_concurrency=2)(head_load_actor()).remote()
    try:
        running = load.run.remote(MAX_LOAD_S)
        while sample()["TopicHead"] < 2:
            assert time.monotonic() - start < SCALE_UP_WITHIN_S, f"TopicHead never scaled out: {changes(timeline)}"
            time.sleep(0.5)
        scaled_at = round(time.monotonic() - start, 1)
        time.sleep(5)
        sample()
        ray.get(load.stop.remote())
        done = ray.get(running, timeout=120)
    finally:
        ray.kill(load)
    stopped_at = round(time.monotonic() - start, 1)
    assert not done["errors"], done["errors"]
    others = [{k: v for k, v in now.items() if k != "TopicHead"} for _, now in timeline]
    assert all(now == {k: v for k, v in minimum.items() if k != "TopicHead"} for now in others), changes(timeline)

    while sample()["TopicHead"] != minimum["TopicHead"]:
        assert time.monotonic() - stopped_at - start < SCALE_DOWN_WITHIN_S, f"not back: {changes(timeline)}"
        time.sleep(1)
    assert sample() == minimum
    print(
        f"\n[busy time] {done['calls']} calls of {ROWS} rows from {CALLERS} threads; TopicHead scaled out at {scaled_at} s, "
        f"load stopped at {stopped_at} s; timeline (s from the load's start): {changes(timeline)}"
    )
