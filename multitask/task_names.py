"""Task names: what a new task may be called, checked before anything is trained or deployed.

A name is a route segment (`POST /v1/predict/{task}`), a config key and, through `head_deployment_name`, a Serve
deployment name (`news_region` -> `NewsRegionHead`). So it is lower-case ASCII, starts with a letter, has single
underscores between parts (no leading, trailing or doubled ones) and at most `MAX_TASK_NAME` characters; and two
tasks never share a deployment name (`a_1b` and `a1b` would both be `A1bHead`).

    check_task_name("news_region", existing=["topic", "sentiment"])   # returns "news_region"
    check_task_name("topic", existing=["topic", "sentiment"])         # TaskNameError: already a task
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from multitask.errors import MultitaskError

MAX_TASK_NAME = 32
TASK_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


class TaskNameError(MultitaskError):
    """A task name that cannot be a route and a deployment name, or that another task has already."""


def head_deployment_name(task: str) -> str:
    """`topic` -> `TopicHead`, `news_region` -> `NewsRegionHead`: the deployment name in code and configs."""
    return "".join(part.capitalize() for part in task.split("_")) + "Head"


def head_app_name(task: str) -> str:
    """`topic` -> `topic-head`, `news_kind` -> `news-kind-head`: the head application's name in the shipped configs
    and in what `multitask add-task` suggests (any name works; the Ingress's `tasks:` says which)."""
    return task.replace("_", "-") + "-head"


def check_task_name(name: str, existing: Iterable[str] = ()) -> str:
    """`name` if a new task may take it; else TaskNameError saying why and what fits."""
    rule = (
        f"a task name is 1-{MAX_TASK_NAME} characters of a-z, 0-9 and single underscores between parts, starting "
        "with a letter (e.g. news_region)"
    )
    if not isinstance(name, str) or not name:
        raise TaskNameError(f"Task name {name!r} is empty: {rule}.")
    if len(name) > MAX_TASK_NAME:
        raise TaskNameError(f"Task name {name!r} has {len(name)} characters: {rule}.")
    if not TASK_NAME.match(name):
        raise TaskNameError(f"Task name {name!r} does not fit a route and a deployment name: {rule}.")
    existing = list(existing)
    if name in existing:
        raise TaskNameError(f"Task {name!r} exists already (tasks: {existing}); choose another name.")
    deployment = head_deployment_name(name)
    for other in existing:
        if head_deployment_name(other) == deployment:
            raise TaskNameError(
                f"Task name {name!r} would deploy as {deployment}, the deployment of the existing task {other!r}; "
                "choose another name."
            )
    return name
