"""The multi-task forward pass: every task, a subset, the embedding, and `predict`'s result dicts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from multitask.config import DEFAULT_TASKS, ModelConfig, TaskSpec
from multitask.encoder import SentenceEncoder
from multitask.model import MultiTaskModel

TEXTS = ["The new phone has a faster chip.", "The match ended in a draw.", "I love this!"]
TOPIC_LABELS = ["Technology", "Business", "Sports", "Entertainment", "Politics", "Science/Health"]


def run(model: MultiTaskModel, texts=TEXTS, **kwargs):
    with torch.inference_mode():
        return model(**model.encoder.tokenize(texts), **kwargs)


def test_forward_runs_every_task_by_default(minilm_model):
    out = run(minilm_model)
    assert list(out.logits) == ["topic", "sentiment"]
    assert out.logits["topic"].shape == (3, 6)
    assert out.logits["sentiment"].shape == (3, 3)
    assert out.embeddings is None


def test_forward_runs_only_the_asked_tasks_and_returns_embeddings(minilm_model):
    out = run(minilm_model, tasks=["sentiment"], return_embeddings=True)
    assert list(out.logits) == ["sentiment"]
    assert out.embeddings.shape == (3, 1024)
    with torch.inference_mode():
        expected = minilm_model.encoder(**minilm_model.encoder.tokenize(TEXTS))
    torch.testing.assert_close(out.embeddings, expected)


def test_subset_gives_the_same_logits_as_running_every_task(minilm_model):
    every = run(minilm_model)
    topic_only = run(minilm_model, tasks=["topic"])
    torch.testing.assert_close(topic_only.logits["topic"], every.logits["topic"])


def test_unknown_task_error_lists_the_valid_tasks(minilm_model):
    with pytest.raises(KeyError, match=r"No task 'emotion'.*\['topic', 'sentiment'\]"):
        run(minilm_model, tasks=["topic", "emotion"])
    with pytest.raises(KeyError, match=r"\['topic', 'sentiment'\]"):
        minilm_model.predict(TEXTS, tasks=["emotion"])


def test_a_single_task_name_as_a_string_means_that_task(minilm_model):
    assert list(run(minilm_model, tasks="topic").logits) == ["topic"]
    assert list(minilm_model.predict(TEXTS[:1], tasks="sentiment")[0]) == ["sentiment"]


def test_heads_follow_the_design(minilm_model):
    head = minilm_model.heads["topic"].net
    assert [type(layer) for layer in head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (1024, 512)
    assert head[2].p == minilm_model.config.dropout
    assert (head[3].in_features, head[3].out_features) == (512, 6)
    assert minilm_model.heads["sentiment"].net[3].out_features == 3
    assert minilm_model.heads["topic"].task.labels == tuple(TOPIC_LABELS)


def test_predict_returns_one_result_per_text_in_order_with_only_the_asked_tasks(minilm_model):
    results = minilm_model.predict(TEXTS, tasks=["topic"], return_embeddings=True)
    assert len(results) == len(TEXTS)
    for result, logits in zip(results, run(minilm_model, tasks=["topic"]).logits["topic"]):
        assert set(result) == {"topic", "embedding"}
        topic = result["topic"]
        assert list(topic["scores"]) == TOPIC_LABELS
        assert math.isclose(sum(topic["scores"].values()), 1.0, abs_tol=1e-5)
        assert topic["label"] == TOPIC_LABELS[int(logits.argmax())]
        assert topic["confidence"] == max(topic["scores"].values())
        assert len(result["embedding"]) == 1024


def test_predict_is_the_same_for_a_text_alone_and_in_a_batch(minilm_model):
    alone = minilm_model.predict(TEXTS[2:])[0]
    batched = minilm_model.predict(TEXTS)[2]
    for task in ("topic", "sentiment"):
        assert alone[task]["label"] == batched[task]["label"]
        for label, score in alone[task]["scores"].items():
            assert score == pytest.approx(batched[task]["scores"][label], abs=1e-5)


def test_predict_of_no_texts_is_an_empty_list(minilm_model):
    assert minilm_model.predict([]) == []


def test_predict_uses_eval_mode_and_restores_training_mode(fresh_minilm_encoder):
    model = MultiTaskModel(fresh_minilm_encoder).train()  # dropout active, as during training
    first = model.predict(TEXTS[:1])
    second = model.predict(TEXTS[:1])
    assert first == second  # no dropout noise at inference
    assert model.training and model.heads["topic"].training


def test_predict_confidences_use_the_head_temperature(minilm_encoder):
    model = MultiTaskModel(minilm_encoder).eval()
    before = model.predict(TEXTS[:1], tasks=["topic"])[0]["topic"]
    model.heads["topic"].temperature.fill_(1000.0)  # a huge temperature flattens the distribution
    after = model.predict(TEXTS[:1], tasks=["topic"])[0]["topic"]
    assert after["label"] == before["label"]
    assert after["confidence"] < before["confidence"]
    assert after["confidence"] == pytest.approx(1 / 6, abs=1e-3)


def test_a_third_task_is_only_config(minilm_encoder):
    config = ModelConfig(
        tasks=(*DEFAULT_TASKS, TaskSpec(name="emotion", labels=("joy", "anger", "fear", "sadness"), hidden_size=64))
    )
    encoder = SentenceEncoder(minilm_encoder.transformer, minilm_encoder.tokenizer, config)
    model = MultiTaskModel(encoder).eval()
    out = run(model, tasks=["emotion", "topic"])
    assert list(out.logits) == ["emotion", "topic"]
    assert out.logits["emotion"].shape == (3, 4)
    assert model.heads["emotion"].net[0].out_features == 64
    scores = model.predict(TEXTS[:1], tasks=["emotion"])[0]["emotion"]["scores"]
    assert set(scores) == {"joy", "anger", "fear", "sadness"}
