"""Does a text's answer depend on what it is batched with? Each text encoded alone (a pass of its own, no padding),
then again inside random passes of other texts, through the same runtime and heads; the served confidences and
labels compared.

    report = measure_batch_invariance(ServedModel.load(checkpoint, runtime="onnx-int8"), texts, pass_sizes=(4, 32))
    report[32]["topic"]   # {"max_confidence_change": 0.0, "max_score_change": 0.0, "label_changes": 0, "texts": n}

A pass of random mates pads every text to its longest mate, and changes the batch dimension each kernel sees: what a
continuously batching service does to a request, whose mates are other clients' texts. Used by the batch-invariance
tests (tests/model, every CPU runtime) and by `bench/batch_invariance.py`.
"""

from __future__ import annotations

import random

import numpy as np

from multitask.served_model import ServedModel


def encode_in_random_passes(model: ServedModel, texts: list[str], pass_size: int, seed: int = 13) -> np.ndarray:
    """Embeddings of `texts` (input order) computed in passes of `pass_size` texts drawn at random (a shuffle cut
    into calls of `pass_size`, each call one pass: its texts padded to the call's longest)."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    out = np.empty((len(texts), model.runtime.embedding_dim), np.float32)
    for start in range(0, len(order), pass_size):
        call = order[start : start + pass_size]
        embeddings, _ = model.runtime.forward([texts[i] for i in call], max_batch=pass_size)
        out[call] = embeddings
    return out


def compare_answers(model: ServedModel, alone: np.ndarray, batched: np.ndarray) -> dict[str, dict]:
    """Per task: the largest change of the served confidence (the top label's probability) and of any score, and
    how many top labels differ, between two embeddings of the same texts."""
    report = {}
    for task, (p, q) in zip(
        model.tasks, zip(model.probabilities(alone).values(), model.probabilities(batched).values())
    ):
        top_p, top_q = p.argmax(1), q.argmax(1)
        rows = np.arange(len(p))
        report[task] = {
            "texts": len(p),
            "max_confidence_change": float(np.abs(p[rows, top_p] - q[rows, top_q]).max(initial=0.0)),
            "max_score_change": float(np.abs(p - q).max(initial=0.0)),
            "label_changes": int((top_p != top_q).sum()),
        }
    return report


def measure_batch_invariance(
    model: ServedModel,
    texts: list[str],
    pass_sizes: tuple[int, ...] = (4, 32),
    seed: int = 13,
    alone: np.ndarray | None = None,
) -> dict[int, dict[str, dict]]:
    """`compare_answers` of each text alone against the same text in random passes of each size. `alone`: the
    texts' embeddings each in a pass of its own, if the caller has them already (else computed here)."""
    if alone is None:
        alone, _ = model.runtime.forward(list(texts), max_batch=1)
    return {
        size: compare_answers(model, alone, encode_in_random_passes(model, texts, size, seed)) for size in pass_sizes
    }
