"""The shape of one task's result for one text, the same from every predictor: the in-process model
(`MultiTaskModel.predict`), the head replicas and the benchmarks' bare paths."""

from __future__ import annotations

from collections.abc import Sequence


def label_scores(labels: Sequence[str], probabilities: Sequence[float]) -> dict:
    """One task's result: the top label, its probability, and every label's probability."""
    best = max(range(len(labels)), key=lambda i: probabilities[i])
    return {
        "label": labels[best],
        "confidence": float(probabilities[best]),
        "scores": {label: float(p) for label, p in zip(labels, probabilities)},
    }
