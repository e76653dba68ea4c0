"""The wheel is what a cluster image installs (README, Run on a cluster): it must carry the code, graph.py and the
shipped checkpoint, and serve_config.yaml's `checkpoint: checkpoints/default` must resolve inside the installed
package, from any working directory, with no copy of this repository around."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.slow  # builds a wheel (~20 s)


def test_the_wheel_carries_code_and_shipped_checkpoint_and_serves_from_anywhere(tmp_path):
    wheel_command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)]
    # not --quiet: the build backend's warnings are what the second check reads
    built = subprocess.run(wheel_command, check=False, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    # every folder the wheel ships is listed in pyproject (else setuptools warns, once per folder)
    assert "is absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("multitask_serve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"checkpoints/default/{p.relative_to(ROOT / 'checkpoints' / 'default')}"
        for p in (ROOT / "checkpoints" / "default").rglob("*")
        if p.is_file()
    }
    assert shipped <= names, sorted(shipped - names)
    assert {"graph.py", "deployments/ingress.py", "deployments/static/index.html", "multitask/storage.py"} <= names
    assert {"operations/stale_haproxy.py", "operations/serve_env.py"} <= names  # run on cluster nodes before Ray

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel installs by unpacking
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import graph, multitask.storage as s, multitask.checkpoint.check as c;"
        "p = s.locate_checkpoint('checkpoints/default');"
        "c.check_checkpoint(p);"
        "print(graph.__file__); print(p)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    ran = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    graph_file, checkpoint = ran.stdout.split()
    assert Path(graph_file).is_relative_to(site), "graph imported from the repository, not the wheel"
    assert Path(checkpoint) == site / "checkpoints" / "default"
