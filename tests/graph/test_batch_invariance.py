"""A text's answer must not depend on what it is sent or batched with, over HTTP on the deployed graph (the local
config's runtime, int8): the same text alone, inside requests of other texts, and inside concurrent requests that
the Encoder gathers into shared batches, always gets the answer it gets alone, within `ANSWER_TOLERANCE`, and that
answer is the in-process one of the same runtime."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from graph import ENCODER_APP

from .helpers import assert_matches_model, sample_texts

LONG = "The match went to extra time, and then to penalties, and the crowd stayed to the end. " * 20
TEXTS = [*sample_texts(14), "Hi.", "worst customer service ever", LONG]
TASKS = ["topic", "sentiment"]


def predict(service, texts: list[str]) -> list[dict]:
    response = service.post("/v1/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_a_texts_answer_is_its_own_alone_beside_others_and_under_load(service, served_model):
    alone = {text: predict(service, [text])[0] for text in TEXTS}
    for text, result in alone.items():
        assert_matches_model(result, served_model.predict([text])[0], TASKS)

    # inside one request with others: a long text pads every pass it shares, a short one is padded
    for text in TEXTS:
        for got, mate in zip(predict(service, [LONG, text, "ok"]), [LONG, text]):
            assert_matches_model(got, alone[mate], TASKS)
    shuffled = random.Random(3).sample(TEXTS, len(TEXTS))
    for got, text in zip(predict(service, shuffled), shuffled):
        assert_matches_model(got, alone[text], TASKS)

    # concurrent requests of 1-4 random texts, gathered by the Encoder into shared batches
    rng = random.Random(7)
    requests = [rng.sample(TEXTS, rng.randint(1, 4)) for _ in range(96)]
    encoder = serve.get_deployment_handle("Encoder", app_name=ENCODER_APP)
    before = encoder.stats.remote().result()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda texts: predict(service, texts), requests))
    after = encoder.stats.remote().result()
    for texts, results in zip(requests, answers):
        for text, got in zip(texts, results):
            assert_matches_model(got, alone[text], TASKS)
    assert after["texts"] - before["texts"] == sum(len(texts) for texts in requests)
    assert after["batches"] - before["batches"] < len(requests)  # requests shared the Encoder's batches
    assert after["largest_batch"] > 4  # a batch held texts of several requests
    assert after["largest_pass"] > 1  # and int8 ran them in shared passes (its activation scales are fixed)
