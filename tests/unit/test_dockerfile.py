"""The Dockerfile that README and docs/cluster.md build (it cannot be built here: no Docker) names what the rest of
the repo says: the wheel `pip wheel .` writes (pyproject's name and version), the Python pyproject allows, the Ray of
the RayService manifest and of this install, and the Makefile's torch pin."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

import yaml

from tests.support.paths import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def manifest_ray_version() -> str:
    manifest = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "rayservice.yaml").read_text())
    return manifest["spec"]["rayClusterConfig"]["rayVersion"]


def test_the_image_is_ray_of_the_manifest_and_of_this_install_on_the_projects_python():
    (base,) = re.findall(r"^FROM (\S+)$", DOCKERFILE, flags=re.MULTILINE)
    ray_version, major, minor = re.fullmatch(r"rayproject/ray:([\d.]+)-py(\d)(\d+)-gpu", base).groups()
    assert ray_version == manifest_ray_version() == version("ray")
    assert PROJECT["requires-python"] == f">={major}.{minor},<{major}.{int(minor) + 1}"


def test_the_image_installs_the_wheel_pip_builds_and_the_pinned_torch():
    wheel = f"{PROJECT['name'].replace('-', '_')}-{PROJECT['version']}-py3-none-any.whl"
    assert f"COPY dist/{wheel} " in DOCKERFILE and f"pip install --no-cache-dir /tmp/{wheel}" in DOCKERFILE
    (makefile_torch,) = re.findall(r"pip install --quiet (torch==[\d.]+)", (ROOT / "Makefile").read_text())
    assert f"pip install --no-cache-dir {makefile_torch} " in DOCKERFILE
    assert (ROOT / ".dockerignore").read_text().splitlines()[-2:] == ["*", "!dist/*.whl"]
