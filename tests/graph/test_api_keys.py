"""Named API keys on the deployed graph: loaded through the Ingress's `user_config` (no restart), used by the
clients as they send keys (OpenAI's SDK, huggingface_hub), counted by key name in the metrics, and their rate
limits hold under a bounded burst: the counts of 200 and 429 match the configured rate within 10%.

The bursts are short (5 s each, 4 client threads on 127.0.0.1) and print their counts with -s:
    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -s tests/graph/test_api_keys.py
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import openai
import pytest
import ray
import requests
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from openai import OpenAI

from tests.support.graph_under_test import GraphClient

CLIENTS = 4
BURST_S = 5.0
REQUESTS_PER_S = 4.0  # under what the graph answers even on 2 cores loaded by other jobs (~5-6 requests/s seen):
TEXTS_PER_S = 16.0  # the limiter, not the service's speed, must decide the counts
TEXTS_PER_REQUEST = 4
KEYS = {"req-limited": "req-limited-key-0001", "text-limited": "text-limited-key-0002", "topic": "topic-key-0003"}
API_KEYS = [
    {"name": "req-limited", "key_sha256": hashlib.sha256(KEYS["req-limited"].encode()).hexdigest(),
     "requests_per_s": REQUESTS_PER_S, "burst_s": 1.0},
    {"name": "text-limited", "key": KEYS["text-limited"], "texts_per_s": TEXTS_PER_S, "burst_s": 1.0},
    {"name": "topic", "key": KEYS["topic"], "tasks": ["topic"]},
]  # fmt: skip


@dataclass
class Burst:
    statuses: list[int]
    first_sent: float
    last_sent: float
    retry_after_ok: bool

    def count(self, status: int) -> int:
        return self.statuses.count(status)

    @property
    def seconds(self) -> float:
        return self.last_sent - self.first_sent


def assert_limited_as_expected(result: Burst, expected: float, what: str) -> None:
    """Every request of the burst got 200 or 429 (with a Retry-After), the 200s within 10% of `expected` (what the
    key's bucket admits over the burst's span), and more 429s than 200s."""
    ok, limited = result.count(200), result.count(429)
    print(
        f"{what}, {CLIENTS} clients for {result.seconds:.2f} s: {ok} x 200, {limited} x 429 "
        f"(expected {expected:.1f} x 200)"
    )
    assert ok + limited == len(result.statuses), set(result.statuses)
    assert abs(ok - expected) <= 0.1 * expected and limited > ok and result.retry_after_ok


def burst(url: str, key: str, texts: int) -> Burst:
    """CLIENTS threads posting back to back for BURST_S seconds (no client waits on a 429: what a client that
    ignores Retry-After does)."""
    statuses: list[int] = []
    sent: list[float] = []
    retry_after_ok = [True]
    lock = threading.Lock()
    stop = time.monotonic() + BURST_S
    body = {"texts": [f"Rate limits, text {i}." for i in range(texts)]}

    def client() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        while (now := time.monotonic()) < stop:
            response = session.post(f"{url}/v1/predict/topic", json=body, timeout=30)
            with lock:
                statuses.append(response.status_code)
                sent.append(now)
                if response.status_code == 429:
                    retry_after_ok[0] &= (
                        response.json()["error_type"] == "rate_limited" and int(response.headers["retry-after"]) >= 1
                    )

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Burst(statuses, min(sent), max(sent), retry_after_ok[0])


def wait_for_keys(service: GraphClient, within_s: float = 60) -> None:
    """Until the reconfigured ingress knows the keys (a redeploy reconfigures it asynchronously)."""
    deadline = time.monotonic() + within_s
    headers = {"Authorization": f"Bearer {KEYS['topic']}"}
    while service.post("/v1/predict/topic", json={"texts": ["probe"]}, headers=headers).status_code != 200:
        assert time.monotonic() < deadline, f"the ingress did not take the API keys within {within_s} s"
        time.sleep(0.5)


@pytest.fixture
def hub_client_online(monkeypatch):
    """huggingface_hub refuses every request under HF_HUB_OFFLINE=1; the client here only calls 127.0.0.1."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_rate_limits_hold_under_a_burst_and_keys_load_without_a_restart(service, hub_client_online):
    service.redeploy(api_keys=API_KEYS)
    try:
        wait_for_keys(service)
        assert service.post("/v1/predict", json={"texts": ["no key"]}).status_code == 401
        forbidden = service.post(
            "/v1/predict/sentiment", json={"texts": ["x"]}, headers={"Authorization": f"Bearer {KEYS['topic']}"}
        )
        assert forbidden.status_code == 403 and forbidden.json()["error_type"] == "forbidden"
        # the clients send the key as their `api_key` / `token`
        topic_only = OpenAI(base_url=f"{service.url}/v1", api_key=KEYS["topic"], max_retries=0)
        assert len(topic_only.embeddings.create(model="multitask", input="a key").data[0].embedding) == 1024
        hub = InferenceClient(model=f"{service.url}/v1/classify/topic", token=KEYS["topic"])
        assert len(hub.text_classification("Parliament votes today.")) == 6
        with pytest.raises(HfHubHTTPError) as raised:
            InferenceClient(model=f"{service.url}/v1/classify/sentiment", token=KEYS["topic"]).text_classification("x")
        assert raised.value.response.status_code == 403

        requests_burst = burst(service.url, KEYS["req-limited"], texts=1)
        # a full bucket (rate x burst_s) plus the rate over the burst's span
        expected = REQUESTS_PER_S * 1.0 + REQUESTS_PER_S * requests_burst.seconds
        assert_limited_as_expected(requests_burst, expected, f"\n[api keys] {REQUESTS_PER_S:.0f} requests/s key")
        limited_client = OpenAI(base_url=f"{service.url}/v1", api_key=KEYS["req-limited"], max_retries=0)
        with pytest.raises(openai.RateLimitError) as raised:
            for _ in range(int(REQUESTS_PER_S) + 2):  # more than a full bucket at once
                limited_client.embeddings.create(model="multitask", input="over the limit")
        assert raised.value.code == "rate_limited" and int(raised.value.response.headers["retry-after"]) >= 1

        texts_burst = burst(service.url, KEYS["text-limited"], texts=TEXTS_PER_REQUEST)
        expected = (TEXTS_PER_S * 1.0 + TEXTS_PER_S * texts_burst.seconds) / TEXTS_PER_REQUEST
        what = f"[api keys] {TEXTS_PER_S:.0f} texts/s key, {TEXTS_PER_REQUEST}-text requests"
        assert_limited_as_expected(texts_burst, expected, what)
        assert_counted_by_key_name()
    finally:
        service.redeploy()
        deadline = time.monotonic() + 60
        while service.post("/v1/predict", json={"texts": ["auth off again"]}).status_code != 200:
            assert time.monotonic() < deadline, "the ingress did not drop the API keys"
            time.sleep(0.5)


def assert_counted_by_key_name(within_s: float = 60) -> None:
    """The ingress's per-key counters reach Prometheus under the keys' names; no key itself appears there."""
    port = ray.nodes()[0]["MetricsExportPort"]
    deadline = time.monotonic() + within_s  # replicas push metrics every few seconds
    while True:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        lines = [line for line in text.splitlines() if line.startswith("ray_multitask_key_")]
        wanted = [
            ("ray_multitask_key_requests_total{", 'key="req-limited"', 'status="429"'),
            ("ray_multitask_key_requests_total{", 'key="text-limited"', 'status="200"'),
            ("ray_multitask_key_texts_total{", 'key="text-limited"'),
        ]
        if all(any(all(part in line for part in parts) for line in lines) for parts in wanted):
            break
        assert time.monotonic() < deadline, f"per-key metrics not exported: {lines}"
        time.sleep(2)
    assert not any(key in text for key in KEYS.values())
