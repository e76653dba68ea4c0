"""Stop the HAProxy processes that a test's Ray left behind under a private HAProxy directory (the session's,
tests/conftest.py, or a test's own). CI runs found them after the graph tier: a reloaded HAProxy (`-sf <old pids>`)
whose HAProxyManager was gone once Serve and Ray had stopped. One holds its ports (the session's are bound again by
the session's next Ray). Only orphans are stopped (operations.stale_haproxy: this user's, under this setup's config
directory, their HAProxyManager gone); a live one is never touched."""

from __future__ import annotations

import time

from operations.stale_haproxy import StaleHAProxySettings, find_haproxies, stop_stale_haproxies


def stop_orphaned_haproxies(environ: dict[str, str] | None = None, settle_s: float = 0) -> None:
    """Stop the orphans of `environ`'s HAProxy setup (default: this process's). `settle_s` > 0, once its Ray is gone:
    wait that long at most for a HAProxy whose HAProxyManager is still exiting to become an orphan, and stop it too."""
    settings = StaleHAProxySettings.from_environ(environ)
    deadline = time.monotonic() + settle_s
    stopped = stop_stale_haproxies(settings)
    while settle_s and find_haproxies(settings) and time.monotonic() < deadline:
        time.sleep(1)
        stopped += stop_stale_haproxies(settings)
    if stopped:
        print(f"\n[teardown] stopped {len(stopped)} orphaned HAProxy: {[(s.pid, str(s.config_file)) for s in stopped]}")
