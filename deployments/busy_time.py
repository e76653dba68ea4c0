"""Autoscaling on busy time: how much of the wall clock a replica spends working, not how many calls it has open.

A head answers a batch in about a millisecond, so Serve's default signal (requests in flight, sampled) stays near
zero for it whatever the load, and a saturated head never scales. Each head replica therefore reports the share of
time it spent in `classify` since its last report (`record_autoscaling_stats`), and the heads' autoscaling policy
asks for as many replicas as that busy time needs at `target_busy` each:

    autoscaling_config:
      policy:
        policy_function: deployments.busy_time:BusyTimePolicy
        policy_kwargs: {target_busy: 0.5}

    desired replicas = sum over replicas of their busy share (averaged by Serve over look_back_period_s) / target_busy

Serve then applies the deployment's bounds, delays and factors (`upscale_delay_s`, `downscale_delay_s`, ...) to
the result, as for its own policy. (Ray 2.60 reads `policy.policy_function`; a `policy: {name: ...}` is ignored.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BUSY_METRIC = "busy_fraction"


class BusyClock:
    """Busy seconds of one replica, read as a share of the wall time since the previous read."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._busy_s = 0.0
        self._since = clock()

    @contextmanager
    def busy(self) -> Iterator[None]:
        start = self._clock()
        try:
            yield
        finally:
            self._busy_s += self._clock() - start

    def share(self) -> float:
        """Busy share of the wall time since the last call (0..1; more when calls overlap), then start again."""
        now = self._clock()
        elapsed, busy = now - self._since, self._busy_s
        self._since, self._busy_s = now, 0.0
        return busy / elapsed if elapsed > 0 else 0.0


class BusyTimePolicy:
    """Serve autoscaling policy (`policy_function: deployments.busy_time:BusyTimePolicy`): replicas for the busy
    time the deployment's replicas report, at `target_busy` each."""

    def __init__(self, target_busy: float = 0.5):
        if not 0 < target_busy <= 1:
            raise ValueError(f"target_busy must be in (0, 1], got {target_busy}")
        self.target_busy = target_busy

    def __call__(self, ctx: Any) -> tuple[float, dict]:
        """`ctx`: Serve's AutoscalingContext. Without reports yet (a replica just started), keep the target."""
        shares = (ctx.aggregated_metrics or {}).get(BUSY_METRIC) or {}
        if not shares or ctx.current_num_replicas == 0:
            return ctx.target_num_replicas, ctx.policy_state
        return sum(shares.values()) / self.target_busy, ctx.policy_state
