"""Overload is answered, not queued forever; killed replicas are replaced and the service answers again within 30 s.

Bounded load on 127.0.0.1 only (threads that stop by themselves). Run alone, with the figures printed:
    RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -s -m slow tests/reliability
"""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest
import requests

from tests.support.graph_under_test import app_of, deployment_statuses
from tests.support.load import Load, assert_every_request_answered, errors_stopped_after

from .conftest import MAX_INFLIGHT, REQUEST_TIMEOUT_S

pytestmark = pytest.mark.slow

CLIENT_TIMEOUT_S = REQUEST_TIMEOUT_S + 12  # a request still open after this has hung
DEADLINE_S = REQUEST_TIMEOUT_S + 5


def replica_rss_bytes() -> int:
    """Resident memory of the Serve replica processes this test session's Ray started (children of this process)."""
    total = 0
    for process in psutil.Process().children(recursive=True):
        try:
            if "ServeReplica" in " ".join(process.cmdline()):
                total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def test_overload_at_4x_capacity_is_shed_quickly_and_nothing_hangs(deployed):
    rss_before = replica_rss_bytes()
    clients = 4 * MAX_INFLIGHT
    outcomes = Load(deployed, clients=clients, max_s=30, client_timeout_s=CLIENT_TIMEOUT_S).run()
    rss_after = replica_rss_bytes()

    assert_every_request_answered(outcomes, allowed={200, 429, 503, 504}, deadline_s=DEADLINE_S)
    ok = [o for o in outcomes if o.status == 200]
    shed = [o for o in outcomes if o.status in (429, 503)]
    assert ok, "nothing was served under overload"
    assert shed, f"{clients} clients against capacity {MAX_INFLIGHT}: nothing was shed"
    ok_s, shed_s = [o.end - o.start for o in ok], [o.end - o.start for o in shed]
    shed_p50 = float(np.median(shed_s))
    assert shed_p50 < 1.0, f"503s took {shed_p50:.2f} s (median): shedding must be quick"
    growth = rss_after - rss_before
    assert growth < 512 * 2**20, f"replica memory grew {growth / 2**20:.0f} MiB under overload"
    deployed.wait_healthy(within_s=15)
    assert deployed.post("/v1/predict", json={"texts": ["after the storm"]}).status_code == 200
    print(
        f"\n[overload] {clients} clients (4x capacity {MAX_INFLIGHT}) for 30 s: {len(outcomes)} requests, "
        f"{len(ok)} x 200 ({len(ok) / 30:.1f}/s, p50 {np.median(ok_s):.2f} s, "
        f"p99 {np.quantile(ok_s, 0.99):.2f} s), {len(shed)} shed "
        f"(p50 {shed_p50 * 1000:.0f} ms, p99 {np.quantile(shed_s, 0.99) * 1000:.0f} ms; "
        f"{sorted({o.error_type for o in shed})}), slowest {max(o.end - o.start for o in outcomes):.2f} s, "
        f"replica RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
    )


def _replica_names(deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app_of(deployment)}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def _running_replicas(deployment: str) -> int:
    return deployment_statuses()[deployment].replica_states.get("RUNNING", 0)


def _replaced(deployment: str, victim: str, count: int) -> bool:
    """The killed replica is gone and `count` replicas run again (Serve counts a dead replica as running until its
    health check fails)."""
    names = _replica_names(deployment)
    return victim not in names and len(names) == count and _running_replicas(deployment) == count


@pytest.mark.parametrize("deployment", ["Encoder", "TopicHead"])
def test_a_killed_replica_is_replaced_and_service_recovers_within_30_s(deployed, deployment):
    import ray

    deployed.wait_healthy()
    before = _replica_names(deployment)  # the Encoder has two (one per core), a head one
    victim = before[0]
    killed_at: list[float] = []

    def kill_then_watch(load: Load) -> None:
        time.sleep(3)  # requests in flight
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        killed_at.append(time.monotonic())
        while time.monotonic() - killed_at[0] < 40:  # keep the load on until it has been answering for 5 s
            recent = [o for o in load.outcomes if o.start > killed_at[0]]
            failed_after = [o.end for o in recent if o.status != 200]
            last_failure = max(failed_after, default=killed_at[0])
            if any(o.status == 200 and o.start > last_failure for o in recent) and time.monotonic() - last_failure > 5:
                break
            time.sleep(0.5)
        load.stop.set()

    outcomes = Load(deployed, clients=6, max_s=60, client_timeout_s=CLIENT_TIMEOUT_S).run(during=kill_then_watch)
    assert_every_request_answered(outcomes, allowed={200, 503}, deadline_s=DEADLINE_S)
    after = [o for o in outcomes if o.end > killed_at[0]]
    failures = [o for o in after if o.status != 200]
    recovery_s = errors_stopped_after(outcomes, killed_at[0])
    assert recovery_s < 30, f"answering normally only {recovery_s:.1f} s after the kill"
    # with a second Encoder replica answering, errors may stop before Serve even notices the death (its health
    # check, every 10 s): wait for the replacement to run, so that the next test starts from a settled graph
    replaced_by = time.monotonic() + 60
    while not (replaced := _replaced(deployment, victim, len(before))) and time.monotonic() < replaced_by:
        time.sleep(0.5)
    assert replaced, (victim, _replica_names(deployment), _running_replicas(deployment))
    deployed.wait_healthy(within_s=30)
    print(
        f"\n[fault] killed {deployment} replica under load (6 clients): {len(after)} requests after the kill, "
        f"{len(failures)} failed with {sorted({(o.status, o.error_type) for o in failures})}, "
        f"errors stopped {recovery_s:.1f} s after the kill, slowest request {max(o.end - o.start for o in after):.1f} s"
    )


def test_auth_on_the_deployed_graph_refuses_missing_tokens_and_keeps_healthz_open(deployed):
    url = deployed.url
    missing = requests.post(url + "/v1/predict", json={"texts": ["hello"]}, timeout=30)
    assert missing.status_code == 401 and missing.json()["error_type"] == "unauthorized"
    wrong = requests.get(url + "/v1/tasks", headers={"authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    assert requests.get(url + "/healthz", timeout=30).status_code == 200
    assert deployed.post("/v1/predict", json={"texts": ["hello"]}).status_code == 200
