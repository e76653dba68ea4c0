"""The heads autoscale separately: a topic-only load scales TopicHead up and leaves SentimentHead alone; both
return to their minimum once the load stops. Timeouts are generous (the shared 2-core machine is slow at times);
the load is bounded in time and targets 127.0.0.1 only.
"""

from __future__ import annotations

import threading
import time
from typing import Self

import pytest
import requests

from .conftest import Autoscaled

CLIENTS = 8
TEXTS = [f"Shares of chip makers rallied for the {i}th day as demand for servers grew." for i in range(16)]
SCALE_UP_WITHIN_S = 120
HOLD_S = 5  # load kept on after TopicHead scaled, to see SentimentHead stay where it is
SCALE_DOWN_WITHIN_S = 120
MAX_LOAD_S = SCALE_UP_WITHIN_S + HOLD_S + 10


class TopicLoad:
    """CLIENTS threads posting /v1/predict/topic back to back until stopped, or MAX_LOAD_S at most."""

    def __init__(self, url: str):
        self.url, self.stop, self.statuses = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        session, deadline = requests.Session(), time.monotonic() + MAX_LOAD_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                status = session.post(f"{self.url}/v1/predict/topic", json={"texts": TEXTS}, timeout=30).status_code
            except requests.RequestException:
                status = 0
            self.statuses.append(status)

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


@pytest.mark.slow
def test_topic_only_load_scales_the_topic_head_alone_then_both_return_to_the_minimum(autoscaled: Autoscaled):
    minimum = autoscaled.min_replicas
    at_start = autoscaled.replicas()  # TopicHead may already be rising from the fixture's readiness request
    assert {k: v for k, v in at_start.items() if k != "TopicHead"} == {
        k: v for k, v in minimum.items() if k != "TopicHead"
    }
    timeline: list[tuple[float, dict[str, int]]] = []
    start = time.monotonic()

    def sample() -> dict[str, int]:
        replicas = autoscaled.replicas()
        timeline.append((round(time.monotonic() - start, 1), replicas))
        return replicas

    with TopicLoad(autoscaled.url) as load:
        while sample()["TopicHead"] <= minimum["TopicHead"]:
            assert time.monotonic() - start < SCALE_UP_WITHIN_S, f"TopicHead never scaled up: {changes(timeline)}"
            time.sleep(0.5)
        scaled_at = time.monotonic()
        while time.monotonic() - scaled_at < HOLD_S:
            sample()
            time.sleep(0.5)
    stopped_at = round(time.monotonic() - start, 1)
    during_load = [replicas for _, replicas in timeline]
    assert all(r["SentimentHead"] == minimum["SentimentHead"] for r in during_load), changes(timeline)
    assert all(r["Encoder"] == minimum["Encoder"] and r["Ingress"] == minimum["Ingress"] for r in during_load)
    assert load.statuses.count(200) == len(load.statuses), f"non-200 answers: {set(load.statuses)}"

    while sample() != minimum:
        assert time.monotonic() - start - stopped_at < SCALE_DOWN_WITHIN_S, f"not back to minimum: {changes(timeline)}"
        time.sleep(0.5)
    print(f"\nautoscaling timeline (s from the load's start; load stopped at {stopped_at} s): {changes(timeline)}")


def changes(timeline: list[tuple[float, dict[str, int]]]) -> list[tuple[float, dict[str, int]]]:
    """The first sample and each one that differs from the one before."""
    return [timeline[0]] + [(t, r) for (t, r), (_, before) in zip(timeline[1:], timeline) if r != before]
