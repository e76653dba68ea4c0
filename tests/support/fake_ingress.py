"""A Ray-free stand-in for the ingress behind the HTTP app: it implements `deployments.http.IngressApi` (a test
checks both it and the real `Ingress` against the Protocol) with fixed answers, and records the errors that the HTTP
layer answered itself, so routes, auth, body limits and error shapes are tested without a graph."""

from __future__ import annotations

from deployments.api_keys import ApiKeySpec
from deployments.errors import ErrorKind
from deployments.settings import HttpPolicy, HttpSettings

MODEL = {"encoder": "fake", "fingerprint": "0" * 16, "finetune": "frozen", "embedding_dim": 4, "checkpoint": "fake"}


class FakeIngress:
    http_policy: HttpPolicy

    def __init__(
        self,
        token: bytes | None = None,
        max_body_bytes: int = HttpSettings().max_body_bytes,
        api_keys: list[ApiKeySpec] = (),
    ):
        """`token`: the single bearer token (`auth_token_*`); `api_keys`: named keys; neither = auth off."""
        specs = [*api_keys, *([ApiKeySpec(name="token", key=token.decode())] if token is not None else [])]
        self.http_policy = HttpSettings(max_body_bytes=max_body_bytes, api_keys=specs).http_policy()
        self.http_errors: list[ErrorKind] = []
        self.key_requests: list[tuple[str, int, int]] = []  # (key name, status, texts)
        self.calls: list[tuple] = []  # (method, texts, tasks) of the calls that reached the ingress

    def count_http_error(self, kind: ErrorKind) -> None:
        self.http_errors.append(kind)

    def count_key_request(self, key: str, status: int, texts: int) -> None:
        self.key_requests.append((key, status, texts))

    async def predict(self, texts: list[str], tasks: list[str] | None = None, return_embeddings: bool = False) -> dict:
        self.calls.append(("predict", len(texts), tasks))
        return {"results": [{"truncated": False} for _ in texts], "model": MODEL}

    async def embed(self, texts: list[str], normalize: bool = True) -> dict:
        return {"embeddings": [[0.5] * 4 for _ in texts], "dimension": 4, "truncated": [False] * len(texts)}

    async def openai_embeddings(
        self,
        input: str | list[str],
        model: str | None = None,
        encoding_format: str = "float",
        dimensions: int | None = None,
        user: str | None = None,
    ) -> dict:
        return {"object": "list", "data": [], "model": "fake", "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    async def classify(self, task: str, inputs: str | list[str], top_k: int | None = None) -> list[list[dict]]:
        return [[{"label": "fake", "score": 1.0}]]

    async def tasks(self) -> dict:
        return {"tasks": [], "model": MODEL}

    async def health(self) -> dict:
        return {"status": "ok", "deployments": {}}
