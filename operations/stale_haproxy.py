"""Stop the HAProxy that a crashed Ray left behind on this machine, so that the next start can bind its ports.

In HAProxy mode (serve.env) each node's `HAProxyManager` actor runs `haproxy -db -f <dir>/<node id>/<name>` as its
child, where `<dir>/<name>` is RAY_SERVE_HAPROXY_CONFIG_FILE_LOC. Ray stops that child on a clean shutdown (Ctrl-C,
`serve shutdown`, `ray stop`), but when the actor's own process is killed (`ray stop --force`, a SIGKILL of the Ray
processes, the OOM killer) the child outlives it: it keeps the HTTP, stats and metrics ports, and the next
HAProxyManager fails with `cannot bind socket (Address already in use)` and never retries. Ray 2.60 has nothing that
covers this: its child-process cleanups (per-worker process groups, the raylet subreaper) run in the raylet, which
died in the same crash, and HAProxyManager only ever stops the processes it started itself. So whatever starts Ray
runs this first: `make run` does, and on a cluster node it goes before `ray start`.

A process is stopped only when all of these hold, so a live service, another setup's HAProxy or another user's
process is never touched (and nothing is matched by name):
- its command line has `-f <dir>/<node id>/<name>` for this setup's config file;
- it runs as the same user as this command;
- its parent is not a Ray worker (`ray::...` process title): the HAProxyManager that started it is gone.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

# Ray's own default (ray/serve/_private/constants.py), used when the variable is unset.
DEFAULT_CONFIG_FILE = Path("/tmp/haproxy-serve/haproxy.cfg")
RAY_WORKER_TITLE_PREFIX = b"ray::"


class StaleHAProxySettings(BaseModel):
    """Which HAProxy is this setup's, and how long it may take to exit."""

    config_file: Path = Field(
        DEFAULT_CONFIG_FILE,
        description="RAY_SERVE_HAPROXY_CONFIG_FILE_LOC; Ray puts each node's config at <parent>/<node id>/<name>",
    )
    stop_timeout_s: float = Field(5.0, gt=0, description="SIGTERM, then SIGKILL after this long")

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> StaleHAProxySettings:
        """Reads the one variable Ray reads for the config file's location, with Ray's default."""
        environ = os.environ if environ is None else environ
        return cls(config_file=Path(environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", str(DEFAULT_CONFIG_FILE))))

    def is_node_config(self, path: Path) -> bool:
        """Whether `path` is a per-node config file that Ray derives from `config_file`."""
        return path.name == self.config_file.name and path.parent.parent == self.config_file.parent


@dataclass(frozen=True)
class StaleHAProxy:
    pid: int
    config_file: Path


def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:  # gone meanwhile, or not ours to read
        return None


def _parent_pid(pid: int) -> int | None:
    stat = _read_proc(pid, "stat")
    if stat is None:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after its last ")"
    return int(stat.rsplit(b")", 1)[1].split()[1])


def _config_argument(argv: list[bytes]) -> Path | None:
    for flag, value in itertools.pairwise(argv):
        if flag == b"-f":
            return Path(os.fsdecode(value))
    return None


def _is_orphaned(pid: int) -> bool:
    """True when the process's parent is not a Ray worker, i.e. its HAProxyManager is gone."""
    parent = _parent_pid(pid)
    parent_argv = _read_proc(parent, "cmdline") if parent else None
    return not (parent_argv or b"").startswith(RAY_WORKER_TITLE_PREFIX)


def _as_setup_haproxy(pid: int, settings: StaleHAProxySettings) -> StaleHAProxy | None:
    """The process as this setup's HAProxy (this user's, reading a node config of `settings`), live or orphaned."""
    cmdline = _read_proc(pid, "cmdline")
    if not cmdline:
        return None
    config_file = _config_argument(cmdline.rstrip(b"\0").split(b"\0"))
    if config_file is None or not settings.is_node_config(config_file):
        return None
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
    except OSError:
        return None
    return StaleHAProxy(pid, config_file)


def _as_stale_haproxy(pid: int, settings: StaleHAProxySettings) -> StaleHAProxy | None:
    haproxy = _as_setup_haproxy(pid, settings)
    return haproxy if haproxy is not None and _is_orphaned(pid) else None


def _find(settings: StaleHAProxySettings, as_found) -> list[StaleHAProxy]:
    try:
        pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []
    return [found for pid in pids if (found := as_found(pid, settings)) is not None]


def find_haproxies(settings: StaleHAProxySettings) -> list[StaleHAProxy]:
    """This setup's HAProxy processes, live or orphaned (Linux /proc; elsewhere, none)."""
    return _find(settings, _as_setup_haproxy)


def find_stale_haproxies(settings: StaleHAProxySettings) -> list[StaleHAProxy]:
    """This setup's HAProxy processes whose Ray is gone (Linux /proc; elsewhere, none)."""
    return _find(settings, _as_stale_haproxy)


def _stop(stale: StaleHAProxy, settings: StaleHAProxySettings) -> None:
    """SIGTERM, then SIGKILL; returns once it has exited (its ports are free then, even if nobody reaps it).

    Through a pidfd, checked again after opening, so that a pid reused since the scan is never signalled.
    """
    try:
        pidfd = os.pidfd_open(stale.pid)
    except ProcessLookupError:
        return
    try:
        if _as_stale_haproxy(stale.pid, settings) != stale:
            return
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)  # readable once the process has exited
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:  # exited meanwhile
                return
            if poller.poll(settings.stop_timeout_s * 1000):
                return
        raise TimeoutError(f"HAProxy pid {stale.pid} ({stale.config_file}) did not exit after SIGKILL")
    finally:
        os.close(pidfd)


def stop_stale_haproxies(settings: StaleHAProxySettings) -> list[StaleHAProxy]:
    """Stops every stale HAProxy of this setup; returns what it stopped."""
    stale = find_stale_haproxies(settings)
    for haproxy in stale:
        _stop(haproxy, settings)
    return stale


def main() -> None:
    settings = StaleHAProxySettings.from_environ()
    for haproxy in stop_stale_haproxies(settings):
        print(
            f"stopped stale HAProxy pid {haproxy.pid} (-f {haproxy.config_file}): the Ray that started it is gone",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
