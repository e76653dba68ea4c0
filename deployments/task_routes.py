"""The Ingress's tasks: task -> the head application that answers it, and whether that head answers yet.

The table comes from the Ingress's `user_config` (`tasks: {topic: topic-head, ...}`), so Serve changes it in place:
a task added there starts as `starting` (503 unavailable with Retry-After for that task alone) until its head
answers a ping, then it is `ready`; a task whose application changes starts again; a task left out is gone. Tasks
keep the config's order, which is the default order of results.

    routes = TaskRoutes(connect=lambda task, app: serve.get_deployment_handle(head_deployment_name(task), app))
    routes.configure({"topic": "topic-head"})
    await routes.probe(timeout_s=2.0)      # pings the starting heads once
    routes.handle("topic")                 # its DeploymentHandle, or ServiceError (unknown_task / unavailable)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deployments.errors import ErrorKind, ServiceError
from multitask.config import unknown_task_message

logger = logging.getLogger("ray.serve")


@dataclass
class TaskRoute:
    task: str
    app: str
    handle: Any  # a DeploymentHandle to the head deployment of `app`
    ready: bool = False


class TaskRoutes:
    def __init__(self, connect: Callable[[str, str], Any]):
        self._connect = connect  # (task, app) -> handle
        self._routes: dict[str, TaskRoute] = {}

    def configure(self, tasks: Mapping[str, str]) -> None:
        """Take the new table; a task whose application is unchanged keeps its handle and its readiness."""
        routes = {}
        for task, app in tasks.items():
            old = self._routes.get(task)
            routes[task] = old if old is not None and old.app == app else TaskRoute(task, app, self._connect(task, app))
        changes = {
            "added": [task for task in routes if task not in self._routes],
            "moved": [task for task in routes if task in self._routes and routes[task] is not self._routes[task]],
            "removed": [task for task in self._routes if task not in routes],
        }
        if any(changes.values()):
            logger.info(f"Tasks {dict(tasks)}: {', '.join(f'{k} {v}' for k, v in changes.items() if v)}")
        self._routes = routes

    @property
    def tasks(self) -> list[str]:
        """Every configured task, ready or not, in the config's order."""
        return list(self._routes)

    @property
    def ready(self) -> list[str]:
        return [task for task, route in self._routes.items() if route.ready]

    @property
    def starting(self) -> list[str]:
        return [task for task, route in self._routes.items() if not route.ready]

    def check(self, tasks: list[str] | None) -> list[str]:
        """The tasks a request asked for, in its order (None = every ready task); ServiceError for an unknown task
        (422), a task asked twice (422) or one whose head does not answer yet (503, Retry-After)."""
        if tasks is None:
            if not self.ready:
                raise ServiceError(ErrorKind.unavailable, f"No task is ready yet (starting: {self.starting}).")
            return self.ready
        for task in tasks:
            self.handle(task)
        repeated = sorted({task for task in tasks if tasks.count(task) > 1})
        if repeated:
            raise ServiceError(ErrorKind.validation_error, f"tasks: {repeated} listed more than once; name each once.")
        return list(tasks)

    def handle(self, task: str) -> Any:
        """The ready head of `task`, or ServiceError: unknown_task (422) or unavailable (503)."""
        route = self._routes.get(task)
        if route is None:
            raise ServiceError(ErrorKind.unknown_task, unknown_task_message(task, self.tasks))
        if not route.ready:
            raise ServiceError(
                ErrorKind.unavailable,
                f"Task {task!r} is starting: its head application {route.app!r} does not answer yet; retry shortly.",
            )
        return route.handle

    async def probe(self, timeout_s: float) -> list[str]:
        """Ping every starting head once, concurrently; the ones that answer are ready. Returns those."""
        starting = [route for route in self._routes.values() if not route.ready]
        answers = await asyncio.gather(
            *(asyncio.wait_for(_ping(route.handle), timeout_s) for route in starting), return_exceptions=True
        )
        now_ready = []
        for route, answer in zip(starting, answers):
            if answer == "ok" and self._routes.get(route.task) is route:
                route.ready = True
                now_ready.append(route.task)
        if now_ready:
            logger.info(f"Tasks ready: {now_ready} (still starting: {self.starting})")
        return now_ready


async def _ping(handle: Any) -> str:
    return await handle.ping.remote()
