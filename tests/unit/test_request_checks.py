"""The request models' own checks (deployments/schemas.py), which HTTP routes and handle callers share through the
ingress: too many texts, empty texts, lone surrogates, cutting to max_chars_per_text, OpenAI's token ids. Without
limits as context (FastAPI's first pass) only the shape is checked."""

from __future__ import annotations

import pytest

from deployments.errors import ErrorKind, ServiceError
from deployments.hf_compat import ClassifyRequest
from deployments.openai_compat import OpenAIEmbeddingsRequest, check_dimensions
from deployments.schemas import EmbedRequest, PredictRequest, parse_request
from deployments.settings import IngressSettings, TextLimits

LIMITS = TextLimits(max_texts_per_request=3, max_chars_per_text=10)


def _refusal(model, **fields) -> tuple[ErrorKind, str]:
    with pytest.raises(ServiceError) as raised:
        parse_request(model, LIMITS, **fields)
    return raised.value.kind, raised.value.message


CASES = [
    # (name, model, fields, kind, message)
    ("too many texts", PredictRequest, {"texts": ["a"] * 4}, ErrorKind.too_many_texts, "4 texts in one request; the limit is 3. Split the request."),
    ("empty text", PredictRequest, {"texts": ["fine", ""]}, ErrorKind.empty_text, "texts[1] is empty; every text needs some content."),
    ("zero-width only", EmbedRequest, {"texts": ["\u200b\ufeff"]}, ErrorKind.empty_text, "texts[0] is empty; every text needs some content."),
    ("lone surrogate", EmbedRequest, {"texts": ["a\ud800b"]}, ErrorKind.validation_error, "texts[0] holds a lone UTF-16 surrogate"),
    ("empty input", OpenAIEmbeddingsRequest, {"input": []}, ErrorKind.validation_error, "input: an empty list; send at least one text."),
    ("token ids", OpenAIEmbeddingsRequest, {"input": [1, 2]}, ErrorKind.validation_error, "input: token ids are not accepted"),
    ("empty HF input", ClassifyRequest, {"inputs": " "}, ErrorKind.empty_text, "inputs[0] is empty; every text needs some content."),
    ("schema first", PredictRequest, {"texts": [""], "colour": "red"}, ErrorKind.validation_error, "colour: Extra inputs are not permitted"),
    ("not a list", PredictRequest, {"texts": "one string"}, ErrorKind.validation_error, "texts: Input should be a valid list"),
]  # fmt: skip


@pytest.mark.parametrize("name, model, fields, kind, message", CASES, ids=[case[0] for case in CASES])
def test_checks_refuse_with_the_kind_and_message_callers_see(name, model, fields, kind, message):
    got_kind, got_message = _refusal(model, **fields)
    assert got_kind is kind and got_message.startswith(message), got_message


def test_texts_over_max_chars_are_cut_and_flagged_in_order():
    request = parse_request(PredictRequest, LIMITS, texts=["short", "a" * 11, "b" * 10])
    assert request.checked.texts == ["short", "a" * 10, "b" * 10]
    assert request.checked.clipped == [False, True, False]
    one = parse_request(OpenAIEmbeddingsRequest, LIMITS, input="a sentence longer than ten", model="multitask")
    assert one.checked.texts == ["a sentence"] and one.checked.clipped == [True]


def test_without_limits_only_the_shape_is_checked():
    """FastAPI validates bodies without context: the texts are checked once, by the ingress, with its limits."""
    request = PredictRequest.model_validate({"texts": ["", "a" * 50]})
    with pytest.raises(RuntimeError, match="parse_request"):
        request.checked  # noqa: B018


def test_the_ingress_settings_are_the_limits():
    settings = IngressSettings(max_texts_per_request=1)
    with pytest.raises(ServiceError) as raised:
        parse_request(EmbedRequest, settings, texts=["a", "b"])
    assert raised.value.kind is ErrorKind.too_many_texts


def test_openai_dimensions_must_be_the_embedding_size():
    check_dimensions(None, 1024)
    check_dimensions(1024, 1024)
    with pytest.raises(ServiceError, match="dimensions: 256 is not available"):
        check_dimensions(256, 1024)
