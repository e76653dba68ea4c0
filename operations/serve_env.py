"""`serve.env`: the Ray Serve settings of the cluster that serves the graph, as KEY=VALUE lines.

They are environment variables read once by each Ray process when it starts (HAProxy instead of the Python proxy,
the throughput-optimized mode), so they must be in the environment of whatever starts Ray: the shell of
`serve run` / `ray start` (`set -a; . ./serve.env; set +a`), or, for Python that starts Ray itself (tests, the
serving benchmark), `os.environ.update(read_serve_env())` before `ray.init` and before importing `ray.serve`.
No Ray import here, for that reason.
"""

from __future__ import annotations

from pathlib import Path

SERVE_ENV_FILE = Path(__file__).resolve().parents[1] / "serve.env"


def read_serve_env(path: Path = SERVE_ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines of `path` (a value with spaces is quoted, as the shell that sources the file needs); blank
    lines and `#` comments skipped."""
    settings = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        settings[key.strip()] = value
    return settings
