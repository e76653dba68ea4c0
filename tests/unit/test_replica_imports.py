"""The Encoder and head replicas load only what they run: their modules never import the HTTP layer (FastAPI routes,
request schemas, error handlers, the ingress), however they reach their settings and options. Each import is made
in a fresh interpreter, as a replica makes it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

HTTP_LAYER = ["deployments.http", "deployments.schemas", "deployments.errors", "deployments.ingress"]


def http_modules_loaded_by(module: str) -> list[str]:
    """The modules of the HTTP layer that importing `module` loads, in a fresh interpreter."""
    probe = f"import json, sys, {module}; print(json.dumps(sorted(m for m in {HTTP_LAYER!r} if m in sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("module", ["deployments.encoder", "deployments.head", "deployments.options"])
def test_encoder_and_head_replicas_do_not_load_the_http_layer(module):
    assert http_modules_loaded_by(module) == []


def test_the_ingress_does_load_it():
    """The probe above can see an import: the ingress's module does load the HTTP layer."""
    assert http_modules_loaded_by("deployments.ingress") == sorted(HTTP_LAYER)
