"""Bad input never hurts the service: every malformed or hostile request gets the JSON error shape with a 4xx (one
table), a bounded property-based fuzz run gets no 5xx, the service is healthy after both, odd-but-valid texts
(emoji, other scripts, control characters inside text, huge texts) work, and request texts never reach the logs at
INFO. Against the deployed graph, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class BadRequest:
    name: str
    path: str
    body: bytes
    status: int
    error_type: str
    content_type: str = "application/json"


BAD_REQUESTS = [
    # not JSON
    BadRequest("malformed JSON", "/v1/predict", b'{"texts": ["unterminated', 400, "malformed_json"),
    BadRequest("not JSON at all", "/v1/embed", b"texts=hello", 400, "malformed_json"),
    BadRequest("binary body", "/v1/embed", b"\xff\x00", 400, "malformed_json"),
    BadRequest("trailing junk", "/v1/predict", b'{"texts": ["a"]} xyz', 400, "malformed_json"),
    BadRequest(
        "deeply nested junk",
        "/v1/predict",
        b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        "malformed_json",
    ),
    BadRequest(
        "integer with 5000 digits",
        "/v1/predict",
        b'{"texts": ["a"], "normalize": ' + b"9" * 5000 + b"}",
        400,
        "malformed_json",
    ),
    BadRequest(
        "invalid UTF-8 inside a string", "/v1/predict", b'{"texts": ["caf\xc3\x28 \xff\xfe"]}', 400, "malformed_json"
    ),
    BadRequest("raw control character in a string", "/v1/predict", b'{"texts": ["a\x01b"]}', 400, "malformed_json"),
    BadRequest(
        "multipart form",
        "/v1/predict",
        b'--x\r\nContent-Disposition: form-data; name="texts"\r\n\r\na\r\n--x--\r\n',
        400,
        "malformed_json",
        "multipart/form-data; boundary=x",
    ),
    BadRequest("XML", "/v1/predict", b"<texts><t>a</t></texts>", 400, "malformed_json", "application/xml"),
    BadRequest(
        "url-encoded form",
        "/v1/predict",
        b"texts=a&texts=b",
        400,
        "malformed_json",
        "application/x-www-form-urlencoded",
    ),
    # JSON of the wrong shape
    BadRequest("empty body", "/v1/predict", b"", 422, "validation_error"),
    BadRequest("null body", "/v1/predict", b"null", 422, "validation_error"),
    BadRequest("body not an object", "/v1/predict", b'["a"]', 422, "validation_error"),
    BadRequest("missing texts", "/v1/embed", b'{"normalize": true}', 422, "validation_error"),
    BadRequest("unknown field", "/v1/predict", b'{"texts": ["a"], "task": "topic"}', 422, "validation_error"),
    BadRequest("empty list", "/v1/predict", b'{"texts": []}', 422, "validation_error"),
    BadRequest("texts not a list", "/v1/predict", b'{"texts": "a sentence"}', 422, "validation_error"),
    BadRequest("texts null", "/v1/predict", b'{"texts": null}', 422, "validation_error"),
    BadRequest("null in texts", "/v1/embed", b'{"texts": ["a", null]}', 422, "validation_error"),
    BadRequest("number in texts", "/v1/predict", b'{"texts": ["a", 3]}', 422, "validation_error"),
    BadRequest("nested list in texts", "/v1/predict", b'{"texts": [["a"]]}', 422, "validation_error"),
    BadRequest("object in texts", "/v1/predict", b'{"texts": [{"text": "a"}]}', 422, "validation_error"),
    BadRequest("lone surrogate escape", "/v1/predict", b'{"texts": ["a\\ud800b"]}', 422, "validation_error"),
    BadRequest(
        "flag not a bool", "/v1/predict", b'{"texts": ["a"], "return_embeddings": "yes"}', 422, "validation_error"
    ),
    BadRequest("flag null", "/v1/predict", b'{"texts": ["a"], "return_embeddings": null}', 422, "validation_error"),
    BadRequest("number for a bool", "/v1/embed", b'{"texts": ["a"], "normalize": 1}', 422, "validation_error"),
    BadRequest("NaN flag", "/v1/embed", b'{"texts": ["a"], "normalize": NaN}', 422, "validation_error"),
    # texts with nothing to read
    BadRequest("empty text", "/v1/predict", b'{"texts": ["fine", ""]}', 422, "empty_text"),
    BadRequest("blank text", "/v1/embed", b'{"texts": ["   "]}', 422, "empty_text"),
    BadRequest("only control characters", "/v1/predict", b'{"texts": ["\\u0000\\u0007\\u001b"]}', 422, "empty_text"),
    BadRequest("only zero-width characters", "/v1/embed", b'{"texts": ["\\u200b\\ufeff\\u2060"]}', 422, "empty_text"),
    BadRequest("only unicode spaces", "/v1/embed", b'{"texts": ["\\u3000\\u00a0\\n\\t"]}', 422, "empty_text"),
    # tasks
    BadRequest("unknown task", "/v1/predict", b'{"texts": ["a"], "tasks": ["weather"]}', 422, "unknown_task"),
    BadRequest("unknown task route", "/v1/predict/weather", b'{"texts": ["a"]}', 422, "unknown_task"),
    BadRequest("task with odd case", "/v1/predict", b'{"texts": ["a"], "tasks": ["Topic"]}', 422, "unknown_task"),
    BadRequest("empty task list", "/v1/predict", b'{"texts": ["a"], "tasks": []}', 422, "validation_error"),
    BadRequest(
        "duplicate tasks", "/v1/predict", b'{"texts": ["a"], "tasks": ["topic", "topic"]}', 422, "validation_error"
    ),
    BadRequest("task not a string", "/v1/predict", b'{"texts": ["a"], "tasks": [{"a": 1}]}', 422, "validation_error"),
    # too much
    BadRequest(
        "too many texts", "/v1/predict", json.dumps({"texts": ["a sentence"] * 65}).encode(), 413, "too_many_texts"
    ),
    BadRequest("10000 texts", "/v1/predict", json.dumps({"texts": ["a"] * 10_000}).encode(), 413, "too_many_texts"),
    BadRequest(
        "body too large", "/v1/predict", json.dumps({"texts": ["y" * 9_000] * 120}).encode(), 413, "body_too_large"
    ),
    BadRequest("one 2 MB text", "/v1/embed", json.dumps({"texts": ["w" * 2_000_000]}).encode(), 413, "body_too_large"),
]


def _post(service, path: str, body: bytes, content_type: str = "application/json"):
    return service.post(path, data=body, headers={"content-type": content_type})


def _assert_error_shape(response, status: int, error_type: str | None = None) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "error_type"} and body["error"], body
    if error_type is not None:
        assert body["error_type"] == error_type, body


def _assert_healthy(service) -> None:
    assert service.get("/healthz").status_code == 200
    assert service.post("/v1/predict", json={"texts": ["Still answering after all that?"]}).status_code == 200


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[case.name for case in BAD_REQUESTS])
def test_bad_requests_get_the_json_error_shape(service, case):
    _assert_error_shape(_post(service, case.path, case.body, case.content_type), case.status, case.error_type)


@pytest.mark.parametrize(
    "method, path, status, error_type",
    [("get", "/v1/nothing", 404, "not_found"), ("get", "/v1/predict", 405, "method_not_allowed")],
)
def test_unknown_routes_have_the_json_error_shape(service, method, path, status, error_type):
    _assert_error_shape(getattr(service, method)(path), status, error_type)


def test_body_limit_holds_without_content_length(service):
    def chunks():  # chunked transfer: no Content-Length to check up front
        yield b'{"texts": ['
        for _ in range(200):
            yield b'"' + b"z" * 8000 + b'",'
        yield b'"end"]}'

    _assert_error_shape(_post(service, "/v1/predict", chunks()), 413, "body_too_large")


def test_the_service_is_healthy_after_every_bad_request(service):
    for case in BAD_REQUESTS:
        assert _post(service, case.path, case.body, case.content_type).status_code == case.status, case.name
    _assert_healthy(service)


# --- odd but valid -----------------------------------------------------------------------------------------------
def test_emoji_other_scripts_and_control_characters_inside_text_work(service):
    texts = [
        "The team won the final 😀🎉🏆",
        "株価が急落した。",  # Japanese
        "Правительство приняло новый закон.",  # Russian
        "الفريق فاز بالمباراة",  # Arabic, right to left
        "नई फ़िल्म शानदार है",  # Hindi
        "Zalgo t̷̢e̵x̸t̴ with combining marks",
        "tab\tand\nnewline and a bell\x07 and NUL\x00 inside",
        "emoji only: 👍👍👍",
        "👨‍👩‍👧‍👦 family (zero-width joiners) and 🇫🇷 flags",
    ]
    response = service.post("/v1/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == len(texts)
    embedded = service.post("/v1/embed", json={"texts": texts}).json()
    assert len(embedded["embeddings"]) == len(texts)


def test_a_huge_text_is_truncated_and_flagged(service):
    huge = "Markets rallied on strong earnings; " * 2770  # 99,720 characters, thousands of tokens
    response = service.post("/v1/predict", json={"texts": [huge, "short"]})
    assert response.status_code == 200, response.text
    assert [result["truncated"] for result in response.json()["results"]] == [True, False]
    surrogate_pair = service.post("/v1/predict/topic", data=b'{"texts": ["ok \\ud83d\\ude00"]}', headers=JSON)
    assert surrogate_pair.status_code == 200, surrogate_pair.text  # a valid escaped pair is one emoji


# --- property-based fuzz ------------------------------------------------------------------------------------------
_ODD_STRINGS = st.sampled_from(["", " ", "\u200b", "\x00", "\ud800", "😀", "日本語", "topic", "sentiment", "a" * 300])
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | _ODD_STRINGS
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_TEXTS = st.lists(st.text(max_size=40) | _ODD_STRINGS, max_size=6)
_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "texts": _TEXTS | _JSON,
        "tasks": st.lists(st.sampled_from(["topic", "sentiment", "weather", ""]), max_size=3) | _JSON,
        "return_embeddings": st.booleans() | _JSON,
        "normalize": st.booleans() | _JSON,
        "extra": _JSON,
    },
)
_BODIES = st.one_of(
    _FIELDS.map(lambda body: json.dumps(body).encode()),
    _JSON.map(lambda body: json.dumps(body).encode()),
    st.binary(max_size=300),
)
_PATHS = st.sampled_from(
    ["/v1/predict", "/v1/predict/topic", "/v1/predict/sentiment", "/v1/predict/x%00y", "/v1/embed"]
)


def test_fuzzed_requests_never_get_a_server_error_and_leave_the_service_healthy(service):
    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,  # the same cases on every run: CI failures reproduce
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(path=_PATHS, body=_BODIES)
    def fuzz(path: str, body: bytes) -> None:
        response = _post(service, path, body)
        assert response.status_code < 500, (path, body[:200], response.status_code, response.text[:300])
        if response.status_code >= 400:
            _assert_error_shape(response, response.status_code)
            assert response.status_code in (400, 404, 413, 422)
        else:
            assert "results" in response.json() or "embeddings" in response.json()

    fuzz()
    _assert_healthy(service)


# --- privacy -----------------------------------------------------------------------------------------------------
def test_request_texts_are_not_logged_at_info(service):
    import ray

    marker = f"zq-private-text-{time.time_ns()}"
    assert service.post("/v1/predict", json={"texts": [f"{marker} ok"]}).status_code == 200
    assert service.post("/v1/embed", json={"texts": [f"{marker} too long " * 8000]}).status_code == 200  # truncated
    assert service.post("/v1/embed", json={"texts": [f"{marker} " * 60_000]}).status_code == 413  # body too large
    assert service.post("/v1/predict", json={"texts": [f"{marker}"], "tasks": ["nope"]}).status_code == 422
    time.sleep(2)  # let the replicas' log files flush
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    leaked = [path for path in logs.rglob("*") if path.is_file() and marker.encode() in path.read_bytes()]
    assert not leaked, f"request text found in {leaked}"


def test_the_most_texts_allowed_in_one_request_are_served(service):
    texts = [f"Sentence {i}: the council approved the stadium budget." for i in range(64)]  # max_texts_per_request
    response = service.post("/v1/predict", json={"texts": texts})
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["results"]) == 64
