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
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("multitask_serve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"checkpoints/default/{p.relative_to(ROOT / 'checkpoints' / 'default')}"
        for p in (ROOT / "checkpoints" / "default").rglob("*")
        if p.is_file()
    }
    assert shipped <= names, sorted(shipped - names)
    assert {"graph.py", "deployments/ingress.py", "multitask/storage.py"} <= names

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
