"""On a first deploy the head and ingress builds wait for an Encoder replica to run (so the Encoder is placed before
any CPU replica can take the GPU node's CPUs), and never wait otherwise. Serve's status is faked here: the states
are what `serve.status()` reports; the real deploy is tests/cluster's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import ray
from ray import serve

import graph


def status_of(app_status: str | None, running: int = 0, built: bool = True) -> SimpleNamespace:
    """`built` False: the encoder application's build is still running, so Serve lists no deployments for it."""
    applications = {}
    if app_status is not None:
        encoder = SimpleNamespace(replica_states={"RUNNING": running} if running else {"STARTING": 1})
        deployments = {"Encoder": encoder} if built else {}
        applications["encoder"] = SimpleNamespace(status=app_status, deployments=deployments)
    return SimpleNamespace(applications=applications)


@pytest.fixture
def fake_serve(monkeypatch):
    """`serve.status()` answers the given statuses in turn (the last one again); returns the calls made."""
    calls: list[SimpleNamespace] = []

    def install(*statuses: SimpleNamespace) -> list:
        answers = list(statuses)
        monkeypatch.setattr(ray, "is_initialized", lambda: True)
        monkeypatch.setattr(
            serve, "status", lambda: calls.append(answers[min(len(calls), len(answers) - 1)]) or calls[-1]
        )
        monkeypatch.setattr(graph.time, "sleep", lambda seconds: None)
        return calls

    return install


def test_a_build_waits_until_the_first_encoder_replica_runs(fake_serve):
    calls = fake_serve(status_of("DEPLOYING"), status_of("DEPLOYING"), status_of("DEPLOYING", running=1))
    graph.wait_for_first_encoder("encoder", wait_s=60)
    assert len(calls) == 3


def test_a_build_waits_while_the_encoder_application_is_still_building(fake_serve):
    calls = fake_serve(
        status_of("NOT_STARTED", built=False),
        status_of("DEPLOYING", built=False),
        status_of("DEPLOYING"),
        status_of("DEPLOYING", running=1),
    )
    graph.wait_for_first_encoder("encoder", wait_s=60)
    assert len(calls) == 4


@pytest.mark.parametrize(
    "status",
    [
        status_of("DEPLOYING", running=1),  # a rolling update: the old Encoder runs and holds its node
        status_of("RUNNING", running=2),
        status_of("DEPLOY_FAILED"),  # nothing will come: the head's own start says why
        status_of(None),  # no such application (another encoder_app): the head's own start says so
    ],
)
def test_no_wait_when_an_encoder_runs_failed_or_is_not_there(fake_serve, status):
    calls = fake_serve(status)
    graph.wait_for_first_encoder("encoder", wait_s=60)
    assert len(calls) == 1


def test_the_wait_is_bounded(fake_serve, monkeypatch):
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(graph.time, "monotonic", lambda: next(clock))
    calls = fake_serve(status_of("DEPLOYING"))
    graph.wait_for_first_encoder("encoder", wait_s=35)
    assert 1 <= len(calls) <= 4


def test_no_serve_here_no_wait(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(serve, "status", lambda: pytest.fail("serve.status() called without Ray"))
    graph.wait_for_first_encoder("encoder", wait_s=60)
