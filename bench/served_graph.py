"""The one way a benchmark starts the graph: a Serve config file on a fresh local Ray of this process, as `make run`
serves it (serve.env's settings, HAProxy on private ports and files so that a service already running here is not
disturbed), on a free port of 127.0.0.1, stopped on exit.

    with served_graph(ROOT / "serve_config.local.yaml") as url:     # "http://127.0.0.1:<port>"
        ...

`serve_env` replaces serve.env's settings (`{}`: Ray's defaults); `encoder_args` override the Encoder's args as
`graph.run_config` does (heads of the same checkpoint follow it). The Ray has no dashboard and no token auth: it
listens on 127.0.0.1 only, and serve.env's `token` mode would have it write a token into ~/.ray.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from operations.ports import free_port, private_haproxy_env
from operations.serve_env import read_serve_env


@contextmanager
def served_graph(
    config: Path, serve_env: dict[str, str] | None = None, num_cpus: int | None = None, **encoder_args: Any
) -> Iterator[str]:
    settings = read_serve_env() if serve_env is None else serve_env
    os.environ.update(settings)  # before Ray starts and before ray.serve is imported: Ray reads them once
    if settings.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":  # its fixed ports may be taken by another Ray here
        os.environ.update(private_haproxy_env())
    os.environ.update(RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import ray
    from ray import serve

    from graph import run_config

    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        run_config(config, port=port, **encoder_args)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
