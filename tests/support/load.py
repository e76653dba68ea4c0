"""Bounded closed-loop HTTP load for the fault tests (tests/reliability, tests/cluster): threads that post
/v1/predict back to back on 127.0.0.1 and stop by themselves, and the checks every fault test makes of what came back.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, Self

import requests

TEXTS = ["The central bank raised rates again.", "What a fantastic match!", "New phone, same battery.", "Rain."]
SHED_BACKOFF_S = 0.1  # clients retry a non-200 after this (impatient clients: keeps the pressure on)
CLIENT_RETRIES = 2
"""How often a client resends a request lost in transit, as HTTP clients do for idempotent requests (the openai SDK
retries connection errors twice by default): every route of the service is idempotent. The outcomes count them."""


class Target(Protocol):
    url: str
    headers: dict


@dataclass
class Outcome:
    start: float
    end: float
    status: int  # 0 = no response (client timeout or connection error)
    error_type: str = ""  # the service's error_type, or the client's exception class when there was no response
    retry_after: str | None = None
    detail: str = ""  # the client's exception message, when there was no response
    retries: int = 0  # attempts before this one that were lost in transit (see `lost_in_transit`)

    @property
    def lost_in_transit(self) -> bool:
        """No answer from the service: the connection closed first, or HAProxy answered its own plain-text error
        page (Ray's HAProxy turns its 502/503/504 into a bare 500) because the replica it forwarded to died."""
        return (self.status == 0 and self.error_type == "ConnectionError") or self.error_type == "not-json"

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Load:
    """`clients` threads posting `body` to /v1/predict back to back until `stop` is set or `max_s` passes; a request
    open longer than `client_timeout_s` counts as hung (status 0)."""

    service: Target
    clients: int
    max_s: float
    client_timeout_s: float
    body: dict = field(default_factory=lambda: {"texts": TEXTS})
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _client(self) -> None:
        session = requests.Session()
        session.headers.update(self.service.headers)
        deadline = time.monotonic() + self.max_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            outcome = self._request(session)
            for _ in range(CLIENT_RETRIES):
                if not outcome.lost_in_transit:
                    break
                time.sleep(SHED_BACKOFF_S)
                outcome = self._request(session, outcome)
            self.outcomes.append(outcome)
            if outcome.status != 200:
                time.sleep(SHED_BACKOFF_S)

    def _request(self, session: requests.Session, failed: Outcome | None = None) -> Outcome:
        start = failed.start if failed else time.monotonic()
        retries = failed.retries + 1 if failed else 0
        try:
            response = session.post(self.service.url + "/v1/predict", json=self.body, timeout=self.client_timeout_s)
            try:
                body = response.json() if response.status_code != 200 else {}
            except ValueError:  # not the service's error shape: a proxy's own error page
                body = {"error_type": "not-json", "detail": response.text[:300]}
            return Outcome(
                start,
                time.monotonic(),
                response.status_code,
                body.get("error_type", ""),
                response.headers.get("retry-after"),
                detail=body.get("detail", ""),
                retries=retries,
            )
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # the connection closed before the answer was whole (a node died mid-response): lost in transit too
            return Outcome(start, time.monotonic(), 0, "ConnectionError", detail=str(exc)[:300], retries=retries)
        except requests.RequestException as exc:
            return Outcome(start, time.monotonic(), 0, type(exc).__name__, detail=str(exc)[:300], retries=retries)

    def run(self, during=None) -> list[Outcome]:
        """Run the load; `during(load)` runs in this thread meanwhile (e.g. kill a replica or a node), then the load
        goes on until `max_s` or until `during` sets `stop`."""
        with ThreadPoolExecutor(self.clients) as pool:
            futures = [pool.submit(self._client) for _ in range(self.clients)]
            if during is not None:
                during(self)
            for future in futures:
                future.result()
        return self.outcomes


class ThreadedLoad:
    """`threads` threads running `self.client()` from `with` until its end (`stop` set, then joined)."""

    def __init__(self, threads: int, join_s: float = 60):
        self.stop = threading.Event()
        self.join_s = join_s
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(threads)]

    def client(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(self.join_s)


def assert_every_request_answered(outcomes: list[Outcome], allowed: set[int], deadline_s: float) -> None:
    """No request hung or lost its connection, every status is allowed, none took longer than `deadline_s`, and
    every 429/503 says when to retry and why."""
    hung = [o for o in outcomes if o.status == 0]
    assert not hung, f"{len(hung)} requests got no response: {hung[:3]}"
    unexpected = [o for o in outcomes if o.status not in allowed]
    assert not unexpected, f"{len(unexpected)} answers with a status not in {sorted(allowed)}: {unexpected[:3]}"
    slowest = max(o.seconds for o in outcomes)
    assert slowest < deadline_s, f"a request took {slowest:.1f} s (deadline {deadline_s} s)"
    for o in outcomes:
        if o.status in (429, 503):
            assert o.retry_after is not None, o
            assert o.error_type in ("overloaded", "timeout", "unavailable"), o


def errors_stopped_after(outcomes: list[Outcome], event_at: float) -> float:
    """Seconds from `event_at` (a kill, a node loss) to the end of the last failed request after it; 0 if none
    failed. Asserts that something succeeded after that."""
    after = [o for o in outcomes if o.end > event_at]
    recovered_at = max((o.end for o in after if o.status != 200), default=event_at)
    assert any(o.status == 200 and o.start > recovered_at for o in after), "no success after the event"
    return recovered_at - event_at
