"""A tiny, obviously separable two-task data set and training config, written into a test's tmp folder.

topic: sports / technology / politics sentences built around keywords; sentiment: positive / negative reviews.
Used by the training tests (single process and Ray Train); nothing here needs ../shared.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from multitask.config import EMBEDDED_ENCODER
from multitask.example_data import TOPIC_TEMPLATES, TOPIC_WORDS

SENTIMENT_WORDS = {
    "positive": ["wonderful", "excellent", "fantastic", "delightful", "amazing", "superb"],
    "negative": ["terrible", "awful", "horrible", "disgusting", "dreadful", "miserable"],
}
SENTIMENT_TEMPLATES = [
    "The dinner was {w}.",
    "What a {w} movie, I feel it all day.",
    "Honestly the service was {w}.",
    "My holiday was {w} from start to end.",
    "This phone is {w} to use.",
    "The concert last night was {w}.",
]
LABELS = {"topic": tuple(TOPIC_WORDS), "sentiment": tuple(SENTIMENT_WORDS)}

# Held-out probes with words the training data never uses.
TOPIC_PROBES = {
    "sports": "The goalkeeper saved a penalty in the championship final.",
    "technology": "The new graphics card runs the software twice as fast.",
    "politics": "The president signed the law after the parliament debate.",
}
SENTIMENT_PROBES = {
    "positive": "I loved it, a truly brilliant and joyful experience.",
    "negative": "It was a horrible, painful and disappointing experience.",
}


def _rows(words: dict[str, list[str]], templates: list[str]) -> list[dict]:
    return [{"text": t.format(w=w), "label": label} for label, ws in words.items() for w in ws for t in templates]


def write_tiny_data(folder: Path, seed: int = 0) -> dict[str, dict[str, Path]]:
    """Write train (~64 rows) and validation JSONL files per task; returns task -> split -> path."""
    rng = random.Random(seed)
    files: dict[str, dict[str, Path]] = {}
    for task, rows in (
        ("topic", _rows(TOPIC_WORDS, TOPIC_TEMPLATES)),  # 108 rows
        ("sentiment", _rows(SENTIMENT_WORDS, SENTIMENT_TEMPLATES)),  # 72 rows
    ):
        rng.shuffle(rows)
        cut = 64 if len(rows) > 88 else len(rows) - 24
        files[task] = {}
        for split, part in (("train", rows[:cut]), ("validation", rows[cut : cut + 24])):
            path = folder / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(row) + "\n" for row in part))
            files[task][split] = path
    return files


def tiny_config_dict(folder: Path, mode: str = "frozen", **training) -> dict:
    """A training config (as the YAML would hold it) over the tiny data in `folder`, output in `folder/ckpt`."""
    files = write_tiny_data(folder)
    settings = {
        "mode": mode,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]},
        "epochs": 2,
        "steps_per_epoch": 8,
        "batch_size": 16,
        "eval_batch_size": 64,
        "head_learning_rate": 5e-3,
        "encoder_learning_rate": 1e-3,
        "sampling": "round_robin",
        "early_stopping_patience": 2,
        "seed": 7,
        "device": "cpu",
        "frozen_cache_dir": str(folder / "cache"),
    }
    settings.update(training)
    return {
        "model": {
            "encoder": EMBEDDED_ENCODER,
            "max_length": 32,
            "embedding_dim": 128,
            "dropout": 0.0,
            "tasks": [{"name": task, "labels": list(labels), "hidden_size": 64} for task, labels in LABELS.items()],
        },
        "data": {task: {k: str(v) for k, v in splits.items()} for task, splits in files.items()},
        "training": settings,
        "output_dir": str(folder / "ckpt"),
    }
