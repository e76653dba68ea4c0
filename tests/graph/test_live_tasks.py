"""Tasks change on the running graph (README, "Add a task to a running service"): a task added to the ingress's
`tasks:` answers 503 unavailable with Retry-After, for that task alone, until its head application answers, then
every route sees it; a head artifact bound to another encoder is refused at deploy time naming both fingerprints,
and the running tasks keep answering. (tests/reliability/test_live_tasks.py does add, swap and remove with
`multitask add-task` and `serve deploy` under load.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ray import serve

from graph import HeadArgs, build_head, head_app_name
from multitask.checkpoint.format import HIDDEN_LAYER, OUTPUT_LAYER, TEMPERATURE
from multitask.config import TaskSpec
from multitask.head_artifact import BoundEncoder, HeadManifest, save_head_artifact

from .helpers import sample_texts

TASK = "weather"
SPEC = TaskSpec(name=TASK, labels=("sunny", "rainy"), hidden_size=8)
DIM = 1024  # the graph tier's checkpoint: all-MiniLM-L6-v2 with a 1024-dim projection
TASKS = {"topic": head_app_name("topic"), "sentiment": head_app_name("sentiment")}


def write_head(directory: Path, fingerprint: str) -> Path:
    """A small head artifact for TASK bound to `fingerprint` (random weights: the test is about serving it)."""
    rng = np.random.default_rng(0)
    tensors = {
        f"{HIDDEN_LAYER}.weight": rng.normal(size=(8, DIM)).astype(np.float32),
        f"{HIDDEN_LAYER}.bias": np.zeros(8, np.float32),
        f"{OUTPUT_LAYER}.weight": rng.normal(size=(2, 8)).astype(np.float32),
        f"{OUTPUT_LAYER}.bias": np.zeros(2, np.float32),
        TEMPERATURE: np.array(1.0, np.float32),
    }
    encoder = BoundEncoder(name="embedded:all-MiniLM-L6-v2", fingerprint=fingerprint, checkpoint="test")
    manifest = HeadManifest(task=SPEC, embedding_dim=DIM, dropout=0.1, encoder=encoder, metrics={"test": {"f1": 1}})
    return save_head_artifact(directory, manifest, tensors)


@pytest.fixture
def restored(service):
    """The graph as the config has it afterwards, whatever the test did."""
    yield service
    service.redeploy()
    if head_app_name(TASK) in serve.status().applications:
        serve.delete(head_app_name(TASK))


def test_a_task_is_unavailable_alone_until_its_head_answers_then_every_route_has_it(restored, served_model, tmp_path):
    service = restored
    service.redeploy(tasks={**TASKS, TASK: head_app_name(TASK)}, task_start_wait_s=0.5)  # its head not deployed
    missing = service.post(f"/v1/predict/{TASK}", json={"texts": ["Rain again."]})
    assert missing.status_code == 503 and missing.json()["error_type"] == "unavailable", missing.text
    assert missing.headers["Retry-After"] and head_app_name(TASK) in missing.json()["error"]
    both = service.post("/v1/predict", json={"texts": ["Rain again."]})  # every ready task: not the starting one
    assert both.status_code == 200 and set(both.json()["results"][0]) == {"topic", "sentiment", "truncated"}
    assert service.get("/v1/tasks").json()["starting"] == [TASK]
    health = service.get("/healthz")
    assert health.status_code == 200 and health.json()["deployments"]["WeatherHead"] == "starting"

    head = write_head(tmp_path / "weather", served_model.runtime.fingerprint)
    serve.run(build_head(HeadArgs(task=TASK, head=str(head))), name=head_app_name(TASK), route_prefix=None)
    service.wait_healthy()
    texts = sample_texts(3)
    answered = service.post("/v1/predict", json={"texts": texts}).json()["results"]
    assert all(set(result) == {"topic", "sentiment", TASK, "truncated"} for result in answered)
    assert [task["name"] for task in service.get("/v1/tasks").json()["tasks"]] == ["topic", "sentiment", TASK]
    hf = service.post(f"/v1/classify/{TASK}", json={"inputs": texts[0]}).json()
    assert sorted(entry["label"] for entry in hf[0]) == ["rainy", "sunny"]
    assert service.get("/v1/tasks").json()["tasks"][2]["metrics"] == {"test": {"f1": 1}}


def test_a_head_bound_to_another_encoder_is_refused_and_the_others_keep_answering(restored, tmp_path):
    service = restored
    foreign = "0123456789abcdef"
    head = write_head(tmp_path / "foreign", foreign)
    with pytest.raises(RuntimeError, match="WeatherHead"):
        serve.run(build_head(HeadArgs(task=TASK, head=str(head))), name=head_app_name(TASK), route_prefix=None)
    status = serve.status().applications[head_app_name(TASK)]  # what `serve status` shows
    message = status.deployments["WeatherHead"].message
    assert status.status == "DEPLOY_FAILED" and "EncoderMismatchError" in message and foreign in message, message
    answer = service.post("/v1/predict", json={"texts": sample_texts(2)})
    assert answer.status_code == 200 and set(answer.json()["results"][0]) == {"topic", "sentiment", "truncated"}
