"""`python -m operations.stale_haproxy` stops only this setup's HAProxy whose Ray is gone, nothing else.

Stand-ins, no Ray: a process with HAProxy's arguments (`-db -f <dir>/<node id>/haproxy.cfg`) started either as an
orphan (its starter exits, as HAProxyManager does in a crash) or under a live parent titled like a Ray worker
(`ray::HAProxyManager`). The real crash, with Ray and HAProxy, is tests/reliability/test_crash_recovery.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from operations.stale_haproxy import (
    StaleHAProxySettings,
    find_haproxies,
    find_stale_haproxies,
    stop_stale_haproxies,
)

NODE_ID = "e72718b1dfb77af4864a93703a47c5ace604f1cdd3b756580b0b99c5"


def _haproxy_command(config_dir: Path) -> str:
    """A shell command line that sleeps with HAProxy's arguments for a node's config under `config_dir`."""
    return f"{sys.executable} -c 'import time; time.sleep(60)' -db -f {config_dir}/{NODE_ID}/haproxy.cfg"


def _exited(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited; its parent (init) has not reaped it
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids this test started; each is killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_orphan(config_dir: Path, spawned: list[int]) -> int:
    starter = subprocess.run(
        ["sh", "-c", f"{_haproxy_command(config_dir)} >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    pid = int(starter.stdout)
    spawned.append(pid)
    return pid


def start_under_live_ray_worker(config_dir: Path, spawned: list[int]) -> int:
    parent = subprocess.Popen(
        ["bash", "-c", f"{_haproxy_command(config_dir)} >/dev/null 2>&1 & exec -a ray::HAProxyManager sleep 60"]
    )
    spawned.append(parent.pid)
    deadline = time.monotonic() + 10
    while not (children := psutil.Process(parent.pid).children()) or not parent_titled(parent.pid):
        assert time.monotonic() < deadline, "the stand-in HAProxyManager did not start its child"
        time.sleep(0.05)
    spawned.append(children[0].pid)
    return children[0].pid


def parent_titled(pid: int) -> bool:
    return psutil.Process(pid).cmdline()[:1] == ["ray::HAProxyManager"]


def wait_cmdline(pid: int) -> None:
    """Until the stand-in runs Python with HAProxy's arguments (not still the forked shell)."""
    deadline = time.monotonic() + 10
    while "-db" not in psutil.Process(pid).cmdline():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_stops_an_orphaned_haproxy_of_this_setup_only(tmp_path: Path, spawned: list[int]) -> None:
    ours, other_setup = tmp_path / "ours", tmp_path / "other"
    settings = StaleHAProxySettings.from_environ({"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{ours}/haproxy.cfg"})
    orphan = start_orphan(ours, spawned)
    other_orphan = start_orphan(other_setup, spawned)
    live = start_under_live_ray_worker(ours, spawned)
    for pid in (orphan, other_orphan, live):
        wait_cmdline(pid)

    assert sorted(haproxy.pid for haproxy in find_haproxies(settings)) == sorted([orphan, live])
    assert [stale.pid for stale in find_stale_haproxies(settings)] == [orphan]
    assert [stale.pid for stale in stop_stale_haproxies(settings)] == [orphan]
    assert _exited(orphan)
    assert not _exited(other_orphan), "another setup's HAProxy (another config dir) was stopped"
    assert not _exited(live), "the HAProxy of a running Ray was stopped"
    assert find_stale_haproxies(settings) == []


def test_the_command_reports_what_it_stopped(tmp_path: Path, spawned: list[int]) -> None:
    orphan = start_orphan(tmp_path, spawned)
    wait_cmdline(orphan)
    env = {**os.environ, "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{tmp_path}/haproxy.cfg"}
    result = subprocess.run(
        [sys.executable, "-m", "operations.stale_haproxy"], env=env, capture_output=True, text=True, check=True
    )
    assert f"stopped stale HAProxy pid {orphan}" in result.stderr
    assert _exited(orphan)


def test_defaults_to_rays_config_file_location() -> None:
    assert StaleHAProxySettings.from_environ({}).config_file == Path("/tmp/haproxy-serve/haproxy.cfg")
