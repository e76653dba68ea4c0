"""A crashed Ray leaves nothing that blocks the next start: `make run` after a crash is healthy again by itself.

The crash is `ray stop --force` scoped to one Ray: SIGKILL of every Ray process (raylet, GCS, workers, the
`make run` / `serve run` processes), so HAProxyManager cannot stop its HAProxy child, which keeps the HTTP port.
(`ray stop --force` itself would stop every Ray on the machine, so the test kills its own session's processes.)
The service is started by the real `make run` in its own session, with private ports, Ray temp dir and HAProxy
files (serve.env only sets the mode, not these), and `RAY_ADDRESS=local` so it never joins another Ray on the
machine. Teardown kills only the processes of the sessions this test started, HAProxy included.

    RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/reliability/test_crash_recovery.py -s
"""

from __future__ import annotations

import psutil
import pytest

from operations.stale_haproxy import find_stale_haproxies
from tests.support.make_run import STOPPED_WITHIN_S, MakeRun, cmdline, port_in_use

pytestmark = pytest.mark.slow


def test_make_run_after_a_crash_is_healthy_again(make_run: MakeRun) -> None:
    first_start_s = make_run.start()
    haproxy = make_run.the_haproxy()
    assert find_stale_haproxies(make_run.haproxy_settings) == [], "the running service's HAProxy was taken as stale"

    make_run.crash()
    # the repro: Ray is gone, its HAProxy is not, and it still holds the service's port
    leftovers = make_run.wait_stopped(within_s=30)
    assert leftovers == [haproxy], f"expected only the orphaned HAProxy to survive the crash, found {leftovers}"
    assert port_in_use(make_run.port), "the crash freed the HTTP port: nothing left to recover from"
    assert [stale.pid for stale in find_stale_haproxies(make_run.haproxy_settings)] == [haproxy.pid]

    recovered_s = make_run.start()
    # (the stale HAProxy may answer /healthz itself when the new Ingress replica takes the old one's port)
    assert not haproxy.is_running() or haproxy.status() == psutil.STATUS_ZOMBIE, "the stale HAProxy still runs"
    assert make_run.the_haproxy() != haproxy and find_stale_haproxies(make_run.haproxy_settings) == []

    make_run.ctrl_c()
    left = make_run.wait_stopped(within_s=STOPPED_WITHIN_S)
    assert left == [], f"Ctrl-C left processes behind: {[cmdline(p) for p in left]}"
    assert not port_in_use(make_run.port)
    print(f"\ncrash recovery: first start healthy in {first_start_s:.1f} s, after the crash in {recovered_s:.1f} s")
