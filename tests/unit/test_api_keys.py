"""Named API keys: the key table (parsing, lookup), the token buckets on a fake clock, and the HTTP layer's use of
them on a fake ingress (401 / 403 / 429 + Retry-After in the error shapes, per-key counts, the clients' header)."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest
from fastapi.testclient import TestClient

from deployments.api_keys import ApiKeySpec, KeyTable, TokenBucket, read_key_file
from deployments.errors import ErrorKind, ServiceError, error_response
from deployments.http import create_app
from deployments.settings import HttpSettings
from tests.support.fake_ingress import FakeIngress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# --- token bucket ----------------------------------------------------------------------------------------------------
def test_a_bucket_lets_its_burst_through_then_holds_the_rate():
    bucket = TokenBucket(rate=8, capacity=4, now=0.0)
    admitted = 0
    for step in range(2 * 1024 + 1):  # 2 s, a request offered every 1/1024 s (exact in binary floating point)
        now = step / 1024
        if bucket.wait_s(1, now) == 0:
            bucket.take(1, now)
            admitted += 1
    assert admitted == 4 + 16  # the full bucket, then 8/s for 2 s


def test_a_refused_cost_is_told_when_it_will_pass():
    bucket = TokenBucket(rate=4, capacity=4, now=0.0)
    bucket.take(4, 0.0)
    assert bucket.wait_s(2, 0.0) == pytest.approx(0.5)
    assert bucket.wait_s(2, 0.25) == pytest.approx(0.25)
    assert bucket.wait_s(2, 0.5) == 0


def test_a_cost_over_the_capacity_passes_on_a_full_bucket_and_leaves_debt():
    bucket = TokenBucket(rate=10, capacity=10, now=0.0)
    assert bucket.wait_s(30, 0.0) == 0  # a 30-text request is not refused forever
    bucket.take(30, 0.0)
    assert bucket.wait_s(1, 1.0) == pytest.approx(1.1)  # 30 texts at 10/s: the next text after 2.1 s
    assert bucket.wait_s(1, 2.1) == pytest.approx(0, abs=1e-9)


# --- the key table ---------------------------------------------------------------------------------------------------
def test_keys_are_found_by_their_key_or_its_digest_and_nothing_else():
    table = KeyTable(
        [ApiKeySpec(name="plain", key="alpha-key-0001"), ApiKeySpec(name="hashed", key_sha256=sha256("beta-key-0002"))]
    )
    assert table.identify(b"alpha-key-0001").name == "plain"
    assert table.identify(b"beta-key-0002").name == "hashed"
    for wrong in (b"", b"alpha-key-000", b"alpha-key-00011", sha256("beta-key-0002").encode()):
        assert table.identify(wrong) is None


@pytest.mark.parametrize(
    "specs, message",
    [
        ([{"name": "a", "key": "k1"}, {"name": "a", "key": "k2"}], "given twice"),
        ([{"name": "a", "key": "k1"}, {"name": "b", "key_sha256": sha256("k1")}], "same key"),
    ],
)
def test_a_table_refuses_repeated_names_and_keys(specs, message):
    with pytest.raises(ValueError, match=message):
        KeyTable([ApiKeySpec.model_validate(spec) for spec in specs])


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "a"},  # no key
        {"name": "a", "key": "k", "key_sha256": sha256("k")},  # both
        {"name": "a", "key_sha256": "abc"},  # not a SHA-256
        {"name": "has space", "key": "k"},  # a name that is no metric label
        {"name": "a", "key": "k", "requests_per_s": 0},
        {"name": "a", "key": "k", "tasks": []},
        {"name": "a", "key": "k", "rate": 5},  # unknown field
    ],
)
def test_bad_key_specs_are_refused(spec):
    with pytest.raises(ValueError):
        ApiKeySpec.model_validate(spec)


def test_the_key_file_is_yaml_or_json_and_errors_name_it(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - {name: team-a, key: aaaa-1111, requests_per_s: 5, tasks: [topic]}\n")
    (spec,) = read_key_file(path)
    assert (spec.name, spec.requests_per_s, spec.tasks) == ("team-a", 5, ("topic",))
    path.write_text(json.dumps({"keys": [{"name": "b", "key_sha256": sha256("x")}]}))
    assert read_key_file(path)[0].digest() == hashlib.sha256(b"x").digest()
    path.write_text("keys: [{name: b}]\n")
    with pytest.raises(ValueError, match=str(path)):
        read_key_file(path)
    with pytest.raises(ValueError, match="cannot be read"):
        read_key_file(tmp_path / "missing.yaml")


def test_requests_and_texts_limits_both_hold_and_a_refusal_takes_nothing():
    clock = FakeClock()
    table = KeyTable([ApiKeySpec(name="a", key="k", requests_per_s=10, texts_per_s=20)], clock=clock)
    (key,) = table.keys
    assert table.admit(key, texts=20) == 0  # the texts bucket (20) is now empty
    wait = table.admit(key, texts=1)
    assert wait == pytest.approx(0.05)
    assert key.requests.tokens == pytest.approx(9)  # the refused request took no request token
    clock.now += 1.0
    assert [table.admit(key, texts=1) for _ in range(11)].count(0.0) == 10  # now the request bucket binds


def test_a_reload_keeps_the_buckets_of_unchanged_keys_only():
    clock = FakeClock()
    first = KeyTable(
        [ApiKeySpec(name="same", key="k1", requests_per_s=1), ApiKeySpec(name="changed", key="k2", requests_per_s=1)],
        clock=clock,
    )
    for key in first.keys:
        assert first.admit(key, 1) == 0 and first.admit(key, 1) > 0  # both emptied
    second = KeyTable(
        [ApiKeySpec(name="same", key="k1", requests_per_s=1), ApiKeySpec(name="changed", key="k2", requests_per_s=2)],
        clock=clock,
        previous=first,
    )
    same, changed = second.keys
    assert second.admit(same, 1) > 0  # still empty: a reload does not refill
    assert second.admit(changed, 1) == 0  # new limits, new bucket


# --- the HTTP layer ----------------------------------------------------------------------------------------------------
KEYS = [
    ApiKeySpec(name="full", key="full-access-key"),
    ApiKeySpec(name="topic-only", key="topic-only-key", tasks=("topic",), embeddings=False),
    ApiKeySpec(name="slow", key="slow-key", requests_per_s=2, burst_s=1.0),
]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def keyed() -> tuple[TestClient, FakeIngress]:
    fake = FakeIngress(api_keys=KEYS)
    fake.http_policy.keys.clock = lambda: 0.0  # time stands still: no bucket refills, however slow the machine
    return TestClient(create_app(fake)), fake


def test_each_key_gets_in_and_is_counted_under_its_name(keyed):
    client, fake = keyed
    assert client.post("/v1/predict", json={"texts": ["a", "b"]}, headers=bearer("full-access-key")).status_code == 200
    assert client.get("/v1/tasks", headers=bearer("topic-only-key")).status_code == 200
    refused = client.post("/v1/predict", json={"texts": ["a"]}, headers=bearer("no-such-key"))
    assert refused.status_code == 401 and refused.json()["error_type"] == "unauthorized"
    assert fake.key_requests == [("full", 200, 2), ("topic-only", 200, 0)]  # names, never keys


def test_a_key_asking_for_a_task_not_its_own_gets_403_in_the_error_shape(keyed):
    client, fake = keyed
    headers = bearer("topic-only-key")
    for path, body in (
        ("/v1/predict", {"texts": ["a"], "tasks": ["topic", "sentiment"]}),
        ("/v1/predict/sentiment", {"texts": ["a"]}),
        ("/v1/classify/sentiment", {"inputs": "a"}),
        ("/v1/embed", {"texts": ["a"]}),
    ):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error_type"] == "forbidden" and "topic-only" in response.json()["error"]
    openai = client.post("/v1/embeddings", json={"input": "a"}, headers=headers)
    assert openai.status_code == 403 and openai.json()["error"]["code"] == "forbidden"  # OpenAI's shape there
    assert fake.calls == []  # nothing refused reached the ingress
    # its own task, and "every task" meaning its tasks
    assert client.post("/v1/predict/topic", json={"texts": ["a"]}, headers=headers).status_code == 200
    assert client.post("/v1/predict", json={"texts": ["a"]}, headers=headers).status_code == 200
    assert fake.calls == [("predict", 1, ["topic"]), ("predict", 1, ["topic"])]


def test_over_its_rate_a_key_gets_429_with_retry_after_and_other_keys_do_not(keyed):
    client, fake = keyed
    statuses = [
        client.post("/v1/predict", json={"texts": ["a"]}, headers=bearer("slow-key")).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 429, 429]  # a bucket of 2 (2/s x 1 s), never refilled here
    limited = client.post("/v1/classify/topic", json={"inputs": ["a"]}, headers=bearer("slow-key"))
    assert limited.status_code == 429 and limited.json()["error_type"] == "rate_limited"
    assert limited.headers["retry-after"] == "1"
    openai = client.post("/v1/embeddings", json={"input": "a"}, headers=bearer("slow-key"))
    assert openai.status_code == 429 and openai.json()["error"]["code"] == "rate_limited"
    assert client.post("/v1/predict", json={"texts": ["a"]}, headers=bearer("full-access-key")).status_code == 200
    assert [status for name, status, _ in fake.key_requests if name == "slow"] == [200, 200, 429, 429, 429, 429]


def test_the_single_bearer_token_and_named_keys_work_side_by_side(tmp_path):
    (tmp_path / "token").write_text("legacy-token\n")
    (tmp_path / "keys.yaml").write_text("keys: [{name: from-file, key: file-key-1234}]\n")
    settings = HttpSettings(
        auth_token_file=str(tmp_path / "token"), api_keys_file=str(tmp_path / "keys.yaml"), api_keys=KEYS[:1]
    )
    assert settings.http_policy().keys.names == ["full", "from-file", "token"]
    assert HttpSettings().http_policy().keys is None  # nothing configured: auth off


def test_a_rate_limited_error_keeps_its_retry_time_and_rounds_it_up_for_the_header():
    error = pickle.loads(pickle.dumps(ServiceError(ErrorKind.rate_limited, "slow down", retry_after_s=2.2)))
    assert (error.status_code, error.retry_after_s) == (429, 2.2)
    response = error_response(error.kind, error.message, "/v1/predict", error.retry_after_s)
    assert response.headers["retry-after"] == "3" and response.status_code == 429
    assert error_response(ErrorKind.forbidden, "no").status_code == 403
