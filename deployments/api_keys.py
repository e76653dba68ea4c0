"""Named API keys for the HTTP API: which key a request carries, what that key may ask for, and how fast.

    keys = KeyTable([ApiKeySpec(name="team-a", key_sha256="9f86...", requests_per_s=20, tasks=("topic",))])
    key = keys.identify(b"the key the client sent")      # None: no such key (401)
    key.refused_tasks(["topic", "sentiment"])            # ["sentiment"]: not this key's (403)
    keys.admit(key, texts=4)                             # 0.0: go; else seconds to wait (429 + Retry-After)

Each key has a name (what metrics and logs show; never the key), an optional rate limit (a token bucket per
requests/s and per texts/s: a full bucket lets a burst of `burst_s` seconds' worth through, then the rate holds;
a request over the limit is refused at once, never queued) and an optional list of the tasks it may ask for.
The table holds the keys' SHA-256 digests only and compares a presented key's digest with every one of them in
constant time (`hmac.compare_digest`, no early exit). Pure logic, no Ray, no HTTP: the clock is a parameter.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

KEY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ApiKeySpec(BaseModel):
    """One key of the Ingress's `api_keys` (user_config) or of its `api_keys_file`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=KEY_NAME, description="What metrics and logs show for this key (never the key).")
    key: str | None = Field(default=None, min_length=1, description="The key itself (keep it out of shared configs).")
    key_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="The key's SHA-256, hex (`printf %s KEY | sha256sum`): the config then holds no secret.",
    )
    requests_per_s: float | None = Field(default=None, gt=0, description="Requests per second; None = no limit.")
    texts_per_s: float | None = Field(default=None, gt=0, description="Texts per second; None = no limit.")
    burst_s: float = Field(default=1.0, gt=0, description="A full bucket holds this many seconds of each rate.")
    tasks: tuple[str, ...] | None = Field(
        default=None, min_length=1, description="The tasks this key may ask for; None = every task."
    )
    embeddings: bool = Field(default=True, description="May call /v1/embed and /v1/embeddings.")

    @model_validator(mode="after")
    def _one_key(self) -> ApiKeySpec:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"API key {self.name!r}: give `key` or `key_sha256`, exactly one.")
        return self

    def digest(self) -> bytes:
        return bytes.fromhex(self.key_sha256) if self.key_sha256 else digest(self.key.encode())

    def limits(self) -> tuple[float | None, float | None, float]:
        return self.requests_per_s, self.texts_per_s, self.burst_s


class ApiKeyFile(BaseModel):
    """An `api_keys_file`: YAML (or JSON) `{"keys": [ApiKeySpec, ...]}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[ApiKeySpec] = Field(min_length=1)


def digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def read_key_file(path: str | Path) -> list[ApiKeySpec]:
    """The keys of an `api_keys_file` (ValueError naming the file if it cannot be read or does not validate)."""
    path = Path(path).expanduser()
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"Ingress api_keys_file {path} cannot be read ({exc}); create it on every node.") from exc
    try:
        return ApiKeyFile.model_validate(document).keys
    except ValueError as exc:
        raise ValueError(f"Ingress api_keys_file {path}: {exc}") from exc


class TokenBucket:
    """`rate` tokens per second, at most `capacity` held. A cost over the capacity passes when the bucket is full and
    leaves it in debt, so that the long-run rate holds for large requests too and none waits forever."""

    def __init__(self, rate: float, capacity: float, now: float):
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def wait_s(self, cost: float, now: float) -> float:
        """0.0 when `cost` may be taken at `now`, else the seconds until it may."""
        self._refill(now)
        need = min(cost, self.capacity)
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, cost: float, now: float) -> None:
        self._refill(now)
        self.tokens -= cost

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(now - self.stamp, 0.0) * self.rate)
        self.stamp = max(now, self.stamp)


def _bucket(rate: float | None, burst_s: float, now: float) -> TokenBucket | None:
    return None if rate is None else TokenBucket(rate, max(rate * burst_s, 1.0), now)


@dataclass(eq=False)
class ApiKey:
    """A key of the table: its spec, digest and buckets (the buckets change as requests are admitted)."""

    spec: ApiKeySpec
    digest: bytes
    requests: TokenBucket | None = field(repr=False)
    texts: TokenBucket | None = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def refused_tasks(self, tasks: Iterable[str]) -> list[str]:
        """The tasks of `tasks` this key may not ask for."""
        allowed = self.spec.tasks
        return [] if allowed is None else [task for task in tasks if task not in allowed]


class KeyTable:
    """The keys in force: built from specs on every reconfigure; a key whose name and limits did not change keeps
    its buckets (`previous`), so a reload neither refills nor empties them."""

    def __init__(
        self,
        specs: Iterable[ApiKeySpec],
        clock: Callable[[], float] = time.monotonic,
        previous: KeyTable | None = None,
    ):
        self.clock = clock
        now = clock()
        kept = {key.name: key for key in previous.keys} if previous else {}
        self.keys: list[ApiKey] = []
        for spec in specs:
            if any(key.name == spec.name for key in self.keys):
                raise ValueError(f"API key name {spec.name!r} is given twice; names must be unique.")
            key_digest = spec.digest()
            if any(hmac.compare_digest(key.digest, key_digest) for key in self.keys):
                raise ValueError(f"API key {spec.name!r} is the same key as another one; give each name its own key.")
            old = kept.get(spec.name)
            if old is not None and old.spec.limits() == spec.limits():
                self.keys.append(ApiKey(spec, key_digest, old.requests, old.texts))
            else:
                self.keys.append(
                    ApiKey(
                        spec,
                        key_digest,
                        _bucket(spec.requests_per_s, spec.burst_s, now),
                        _bucket(spec.texts_per_s, spec.burst_s, now),
                    )
                )

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def names(self) -> list[str]:
        return [key.name for key in self.keys]

    def identify(self, presented: bytes) -> ApiKey | None:
        """The key whose digest equals `presented`'s; every key is compared (constant time, no early exit)."""
        wanted = digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, wanted):
                found = key
        return found

    def admit(self, key: ApiKey, texts: int) -> float:
        """Take one request and `texts` texts from the key's buckets: 0.0 if both had room (taken), else the
        seconds until both will (nothing taken)."""
        now = self.clock()
        waits = [
            bucket.wait_s(cost, now) for bucket, cost in ((key.requests, 1), (key.texts, texts)) if bucket is not None
        ]
        wait = max(waits, default=0.0)
        if wait > 0:
            return wait
        for bucket, cost in ((key.requests, 1), (key.texts, texts)):
            if bucket is not None:
                bucket.take(cost, now)
        return 0.0
