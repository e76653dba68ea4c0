"""Stop the HAProxy processes that a test's Ray left behind under this session's private HAProxy directory
(tests/conftest.py). A CI run found one after the graph tier: a reloaded HAProxy (`-sf <old pids>`) whose
HAProxyManager was gone once `serve.shutdown()` and `ray.shutdown()` had returned. It kept the session's HAProxy stats
and metrics ports, which the next Ray of the session binds again. Only orphans are stopped (operations.stale_haproxy:
this user's, under this setup's config directory, their HAProxyManager gone); a live one is never touched."""

from __future__ import annotations

from operations.stale_haproxy import StaleHAProxySettings, stop_stale_haproxies


def stop_orphaned_haproxies() -> None:
    stopped = stop_stale_haproxies(StaleHAProxySettings.from_environ())
    if stopped:
        print(f"\n[teardown] stopped {len(stopped)} orphaned HAProxy: {[(s.pid, str(s.config_file)) for s in stopped]}")
