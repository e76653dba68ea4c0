"""A small labelled example the project writes itself, to try `multitask add-task` (and training) without data of
your own: news sentences of three kinds (sports, technology, politics) built around keywords.

    multitask example-data news_kind.csv     # 324 rows, 108 per label: CSV with `text` and `label`

The same sentences make the tests' tiny topic task (tests/support/tiny_tasks.py).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

TOPIC_WORDS = {
    "sports": ["football match", "tennis final", "basketball game", "marathon race", "soccer team", "cricket series"],
    "technology": [
        "smartphone chip",
        "software update",
        "laptop processor",
        "cloud database",
        "computer virus",
        "AI model",
    ],
    "politics": [
        "parliament vote",
        "election campaign",
        "senate bill",
        "prime minister",
        "new tax law",
        "foreign minister",
    ],
}
TOPIC_TEMPLATES = [
    "News today about the {w}.",
    "Everyone is talking about the {w} this week.",
    "A report on the {w} was published.",
    "Latest coverage of the {w}.",
    "Experts discussed the {w} on the radio.",
    "The {w} made headlines again.",
]
NEWS_KIND_PREFIXES = ("", "Breaking: ", "Tonight, ")


def write_news_kind_csv(path: Path) -> Path:
    """A task for `multitask add-task`: 324 texts, 108 per label (sports, technology, politics): every keyword in
    every template, with three openings, shuffled (fixed seed); CSV with `text` and `label`. Returns `path`."""
    rows = [
        {"text": prefix + template.format(w=word), "label": label}
        for label, words in TOPIC_WORDS.items()
        for word in words
        for template in TOPIC_TEMPLATES
        for prefix in NEWS_KIND_PREFIXES
    ]
    random.Random(0).shuffle(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path
