"""serve_config.yaml on a three-node cluster: placement as configured, requests over HTTP, and nodes that die.

Bounded load on 127.0.0.1 only (8 client threads, at most 90 s a case, stopping by themselves). The figures print
with -s:
    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -s tests/cluster
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import yaml

from operations.config_overlay import deployments_by_name
from tests.support.load import Load, Outcome, assert_every_request_answered, errors_stopped_after

from .conftest import CLUSTER_CONFIG, ServedCluster

pytestmark = pytest.mark.slow

CLIENTS = 8
REQUEST_TIMEOUT_S = deployments_by_name(yaml.safe_load(CLUSTER_CONFIG.read_text()))["Ingress"]["user_config"][
    "request_timeout_s"
]
DEADLINE_S = REQUEST_TIMEOUT_S + 5  # the ingress answers 503 timeout at its deadline; nothing may take longer
CLIENT_TIMEOUT_S = REQUEST_TIMEOUT_S + 12  # a request still open after this has hung
RECOVERY_BOUND_S = 60
TARGET_REPLICAS = {"Ingress": 2, "Encoder": 1, "TopicHead": 1, "SentimentHead": 1}  # serve_config.yaml's minimums


def summary(outcomes: list[Outcome]) -> str:
    counts = Counter((o.status, o.error_type or "") for o in outcomes)
    text = ", ".join(f"{n} x {status}{' ' + kind if kind else ''}" for (status, kind), n in sorted(counts.items()))
    retried = [o for o in outcomes if o.retries]
    return text + (
        f"; {len(retried)} of them answered on a client retry after losing the first attempt" if retried else ""
    )


def rescheduled(cluster: ServedCluster) -> bool:
    """Every deployment back at its replica count, none on a lost node."""
    placed = cluster.replicas()
    return all(len(placed.get(name, [])) >= n and "lost" not in placed[name] for name, n in TARGET_REPLICAS.items())


def watch_recovery(cluster: ServedCluster, load: Load, event_at: float, times: dict) -> None:
    """Keep the load on until the replicas are rescheduled and the service has answered only 200s for 10 s (at most
    RECOVERY_BOUND_S + 15 s), noting when the replicas were back."""
    while time.monotonic() - event_at < RECOVERY_BOUND_S + 15:
        if "rescheduled" not in times and rescheduled(cluster):
            times["rescheduled"] = time.monotonic() - event_at
        recent = [o for o in load.outcomes if o.start > event_at]
        last_failure = max((o.end for o in recent if o.status != 200), default=event_at)
        if "rescheduled" in times and time.monotonic() - last_failure > 10 and recent:
            break
        time.sleep(1)
    load.stop.set()


def test_replicas_are_placed_as_configured_and_answer_over_http(served_cluster: ServedCluster):
    placed = served_cluster.replicas()
    assert placed["Encoder"] == ["gpu"], placed  # num_gpus: 1
    for name in ("Ingress", "TopicHead", "SentimentHead"):  # CPU-only deployments stay off the GPU node
        assert len(placed[name]) == TARGET_REPLICAS[name] and "gpu" not in placed[name], placed
    response = served_cluster.get("/v1/tasks")
    assert response.status_code == 200 and {t["name"] for t in response.json()["tasks"]} == {"topic", "sentiment"}
    import requests

    predicted = requests.post(
        served_cluster.url + "/v1/predict", json={"texts": ["The striker scored twice.", "Awful service."]}, timeout=30
    )
    assert predicted.status_code == 200, predicted.text
    results = predicted.json()["results"]
    assert [set(r) >= {"topic", "sentiment"} for r in results] == [True, True]
    print(f"\n[cluster] placement: {placed}")


def survive(served_cluster: ServedCluster, event, recovered_from: str, max_s: float):
    """Run the load while `event(times)` acts on the cluster (noting times, e.g. "lost"), keep it on until the
    service has recovered from `times[recovered_from]`, and check what every test of a node loss checks: every
    request answered (200, or 503 with Retry-After) within the deadline, only 200s again within RECOVERY_BOUND_S,
    the lost replicas rescheduled. Returns the outcomes, the times and the seconds until errors stopped."""
    times: dict[str, float] = {}

    def during(load: Load) -> None:
        event(times)
        watch_recovery(served_cluster, load, times[recovered_from], times)

    outcomes = Load(served_cluster, clients=CLIENTS, max_s=max_s, client_timeout_s=CLIENT_TIMEOUT_S).run(during)
    assert_every_request_answered(outcomes, allowed={200, 503}, deadline_s=DEADLINE_S)
    recovery_s = errors_stopped_after(outcomes, times[recovered_from])
    assert recovery_s < RECOVERY_BOUND_S, f"answering normally only {recovery_s:.1f} s after {recovered_from}"
    assert "rescheduled" in times, f"lost replicas not rescheduled: {served_cluster.replicas()}"
    return outcomes, times, recovery_s


def test_losing_the_worker_node_of_a_head_costs_no_answer(served_cluster: ServedCluster):
    """The CPU worker holds an Ingress replica (two replicas, spread) and, where Ray's scheduler put one there, a
    head: each head is its own application, deployed on its own, so the scheduler may also pack both heads onto the
    head node."""
    placed = served_cluster.replicas()
    on_worker = [name for name in ("Ingress", "TopicHead", "SentimentHead") if "cpu" in placed[name]]
    assert on_worker, f"no replica on the CPU worker to lose: {placed}"

    def lose_the_node(times: dict) -> None:
        time.sleep(10)  # steady state under load first
        served_cluster.cluster.remove_node(served_cluster.workers.pop("cpu"), allow_graceful=False)
        times["lost"] = time.monotonic()

    outcomes, times, recovery_s = survive(served_cluster, lose_the_node, "lost", max_s=RECOVERY_BOUND_S + 30)
    after = [o for o in outcomes if o.end > times["lost"]]
    print(
        f"\n[cluster] lost the CPU worker (held {placed}) under {CLIENTS} clients: {len(outcomes)} requests "
        f"({summary(outcomes)}); after the loss: {summary(after)}; errors stopped {recovery_s:.1f} s after it, "
        f"replicas rescheduled after {times['rescheduled']:.1f} s ({served_cluster.replicas()}), "
        f"slowest request {max(o.seconds for o in outcomes):.1f} s"
    )


def test_losing_the_encoder_node_is_answered_with_503_until_it_returns(served_cluster: ServedCluster):
    assert served_cluster.replicas()["Encoder"] == ["gpu"]

    def lose_and_return(times: dict) -> None:
        time.sleep(5)
        served_cluster.cluster.remove_node(served_cluster.workers.pop("gpu"), allow_graceful=False)
        times["lost"] = time.monotonic()
        time.sleep(15)  # the only accelerator is gone: nothing can encode
        served_cluster.add_worker("gpu")
        times["returned"] = time.monotonic()

    outcomes, times, recovery_s = survive(served_cluster, lose_and_return, "returned", max_s=RECOVERY_BOUND_S + 50)
    assert served_cluster.replicas()["Encoder"] == ["gpu"], "the Encoder did not return to the GPU node"
    during = [o for o in outcomes if times["lost"] < o.end <= times["returned"]]
    print(
        f"\n[cluster] lost the GPU node (the Encoder's) under {CLIENTS} clients for "
        f"{times['returned'] - times['lost']:.0f} s: {len(outcomes)} requests ({summary(outcomes)}); while it was "
        f"gone: {summary(during)}; errors stopped {recovery_s:.1f} s after it returned, Encoder rescheduled "
        f"{times['rescheduled']:.1f} s after, slowest request {max(o.seconds for o in outcomes):.1f} s"
    )
