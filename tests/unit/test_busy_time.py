"""The heads' autoscaling signal and policy (deployments/busy_time.py), with a fake clock and Serve's context
reduced to the fields the policy reads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployments.busy_time import BUSY_METRIC, BusyClock, BusyTimePolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_busy_share_is_the_busy_part_of_the_wall_time_since_the_last_read():
    clock = FakeClock()
    busy = BusyClock(clock)
    for _ in range(3):  # 3 calls of 0.1 s in 1 s
        with busy.busy():
            clock.now += 0.1
        clock.now += 0.2333333
    clock.now += 0.0000001
    assert busy.share() == pytest.approx(0.3, abs=1e-3)
    clock.now += 2.0  # idle since
    assert busy.share() == 0.0


def context(shares: dict[str, float], current: int = 1, target: int = 1) -> SimpleNamespace:
    metrics = {BUSY_METRIC: shares} if shares else {}
    return SimpleNamespace(
        aggregated_metrics=metrics, current_num_replicas=current, target_num_replicas=target, policy_state={"k": 1}
    )


def test_the_policy_asks_for_the_replicas_the_busy_time_needs():
    policy = BusyTimePolicy(target_busy=0.5)
    assert policy(context({"r1": 0.95}))[0] == pytest.approx(1.9)  # saturated: about two replicas
    assert policy(context({"r1": 0.6, "r2": 0.7}, current=2))[0] == pytest.approx(2.6)
    assert policy(context({"r1": 0.01, "r2": 0.0}, current=2))[0] == pytest.approx(0.02)  # idle: down to the minimum
    assert policy(context({}, current=2, target=3)) == (3, {"k": 1})  # no reports yet: keep the target
    with pytest.raises(ValueError, match="target_busy"):
        BusyTimePolicy(target_busy=0)
