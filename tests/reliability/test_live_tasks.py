"""Add, swap and remove a task on the running service, under load, with the commands README gives
("Add a task to a running service"): `multitask add-task` trains a head on the served encoder, `serve deploy` of the
config with one more head application and its line in the ingress's `tasks:` adds it; a second artifact in that
application's `head:` swaps it; the config without them removes it.

The service is `make run` as a user starts it (the shipped local config, serve.env, Ray's token auth: `serve deploy`
sends the service's token). Meanwhile 8 clients post both existing tasks back to back: every one of their requests
must answer 200, and the Encoder, the existing heads and the Ingress must be the same replica processes (actor ids)
before and after (Serve starts only the new head's replica, and reconfigures the ingress in place).

    RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/reliability/test_live_tasks.py -s
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml

from graph import head_app_name
from multitask.example_data import write_news_kind_csv
from operations.config_overlay import deployments_by_name
from tests.support.load import Load, Outcome, assert_every_request_answered
from tests.support.make_run import MakeRun, replica_actor_ids
from tests.support.paths import ROOT, SHIPPED_CHECKPOINT

pytestmark = pytest.mark.slow

TASK = "news_kind"
EXISTING = ["topic", "sentiment"]
CLIENTS = 8
NEW_TASK_WITHIN_S = 60  # serve deploy -> the new task's first 200 (measured: see the closing print)
CLIENT_TIMEOUT_S = 40  # the ingress's request_timeout_s (30) plus slack: a request open longer has hung


@dataclass
class Service:
    url: str
    headers: dict = field(default_factory=dict)


def add_task(output: Path, data: Path, onnx_cache: Path, seed: int) -> float:
    """`multitask add-task` as README gives it; returns its seconds."""
    started = time.monotonic()
    command = [
        str(Path(sys.executable).with_name("multitask")), "add-task", TASK, "--data", str(data),
        "--checkpoint", str(SHIPPED_CHECKPOINT), "--output", str(output), "--onnx-cache-dir", str(onnx_cache),
        "--cache-dir", str(output.parent / "embeddings"), "--threads", "1", "--seed", str(seed), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.monotonic() - started


def with_task(config: dict, head: Path) -> dict:
    """The config plus the task's head application (the options of the existing heads, a deployment named after the
    task) and its line in the ingress's `tasks:`."""
    changed = copy.deepcopy(config)
    apps = changed["applications"]
    topic = next(app for app in apps if app["name"] == head_app_name("topic"))
    new = copy.deepcopy(topic)
    new["name"] = head_app_name(TASK)
    new["args"].update(task=TASK, head=str(head))
    new["deployments"][0]["name"] = "NewsKindHead"
    apps.insert(len(apps) - 1, new)  # before the ingress, as in the shipped file
    deployments_by_name(changed)["Ingress"]["user_config"]["tasks"][TASK] = head_app_name(TASK)
    return changed


def deploy(service: MakeRun, config: dict, path: Path) -> float:
    """`serve deploy` of `config` with the service's token; returns when the command returned (monotonic time)."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    done = service.serve_cli("deploy", str(path), "-a", service.dashboard())
    assert done.returncode == 0, done.stdout + done.stderr
    return time.monotonic()


def replica_ids(service: MakeRun) -> dict[str, set[str]]:
    return replica_actor_ids(service.dashboard(), service.env["RAY_AUTH_TOKEN"])


def wait_for(check, within_s: float, what: str) -> float:
    """Poll `check()` until it is true; returns the monotonic time it first was."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {within_s} s"
        time.sleep(0.25)
    return time.monotonic()


def new_task_answer(url: str, seen: list[tuple[int, str, str | None]]) -> bool:
    """POST /v1/predict/news_kind once; records (status, error_type, Retry-After); true on 200."""
    response = requests.post(f"{url}/v1/predict/{TASK}", json={"texts": ["The senate bill passed."]}, timeout=30)
    body = response.json()
    seen.append((response.status_code, body.get("error_type", ""), response.headers.get("retry-after")))
    return response.status_code == 200


def test_add_swap_and_remove_a_task_under_load(make_run: MakeRun, tmp_path: Path, shipped_onnx_cache: Path):
    data = write_news_kind_csv(tmp_path / "news_kind.csv")
    first, second = tmp_path / "heads" / "news_kind", tmp_path / "heads" / "news_kind_v2"
    trained_s = add_task(first, data, shipped_onnx_cache, seed=0)
    add_task(second, data, shipped_onnx_cache, seed=1)
    make_run.start()
    url = f"http://127.0.0.1:{make_run.port}"
    base = yaml.safe_load(make_run.config.read_text())
    before = replica_ids(make_run)
    untouched = {key for key in before if not key.startswith(head_app_name(TASK))}
    assert len(untouched) == 4, before  # encoder, two heads, ingress
    timeline: dict[str, float] = {}
    seen: list[tuple[int, str, str | None]] = []

    def steps(load: Load) -> None:
        time.sleep(3)  # the load runs first
        # add: one more head application and its line in `tasks:`
        timeline["add_deployed"] = deploy(make_run, with_task(base, first), tmp_path / "added.yaml")
        timeline["add_answers"] = wait_for(lambda: new_task_answer(url, seen), NEW_TASK_WITHIN_S, "the new task")
        tasks = requests.get(f"{url}/v1/tasks", timeout=30).json()
        assert [task["name"] for task in tasks["tasks"]] == [*EXISTING, TASK] and tasks["starting"] == []
        added = replica_ids(make_run)
        # swap: the same application, another artifact: only that application rolls
        timeline["swap_deployed"] = deploy(make_run, with_task(base, second), tmp_path / "swapped.yaml")
        new_head = f"{head_app_name(TASK)}:NewsKindHead"
        timeline["swap_done"] = wait_for(
            lambda: (ids := replica_ids(make_run).get(new_head)) and ids.isdisjoint(added[new_head]) and len(ids) == 1,
            NEW_TASK_WITHIN_S,
            "the swapped head",
        )
        assert new_task_answer(url, seen)
        # remove: the config as it was
        timeline["remove_deployed"] = deploy(make_run, base, tmp_path / "removed.yaml")

        def removed() -> bool:
            response = requests.post(f"{url}/v1/predict/{TASK}", json={"texts": ["Gone?"]}, timeout=30)
            return response.status_code == 422 and response.json()["error_type"] == "unknown_task"

        timeline["remove_done"] = wait_for(removed, NEW_TASK_WITHIN_S, "the task's removal")
        wait_for(lambda: head_app_name(TASK) not in {k.split(":")[0] for k in replica_ids(make_run)}, 60, "its replica")
        time.sleep(2)  # the load goes on a little after the last change
        load.stop.set()

    load = Load(
        Service(url),
        CLIENTS,
        max_s=400,
        client_timeout_s=CLIENT_TIMEOUT_S,
        body={"texts": ["A goal!"] * 4, "tasks": EXISTING},
    )
    outcomes: list[Outcome] = load.run(during=steps)

    assert outcomes and all(o.status == 200 for o in outcomes), _summary(outcomes)
    assert_every_request_answered(outcomes, {200}, CLIENT_TIMEOUT_S)
    after = replica_ids(make_run)
    assert {key: after.get(key) for key in untouched} == {key: before[key] for key in untouched}, (before, after)
    # before its head answered, the new task was unknown (ingress not reconfigured yet) or starting: 503 + Retry-After
    for status, kind, retry_after in seen:
        assert (status, kind) in {(200, ""), (422, "unknown_task"), (503, "unavailable")}, seen
        assert status != 503 or retry_after is not None, seen
    first_answer_s = timeline["add_answers"] - timeline["add_deployed"]
    assert first_answer_s < NEW_TASK_WITHIN_S
    print(
        f"\n[live tasks] add-task {trained_s:.1f} s ({sum(1 for _ in data.open()) - 1} examples); serve deploy -> first "
        f"answer {first_answer_s:.1f} s; swap rolled in {timeline['swap_done'] - timeline['swap_deployed']:.1f} s; "
        f"removed in {timeline['remove_done'] - timeline['remove_deployed']:.1f} s; {_summary(outcomes)} on "
        f"{EXISTING} from {CLIENTS} clients; new task's answers while it started: "
        f"{sorted({(status, kind) for status, kind, _ in seen})}"
    )


def _summary(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        key = f"{o.status} {o.error_type}".strip()
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} x {key}" for key, n in sorted(counts.items()))
