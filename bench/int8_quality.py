"""How close each int8 encoder is to float32, in and out of the training domains: the served static int8
(`onnx-int8`, fixed activation scales, in passes of 16) and dynamic int8 (`int8-dynamic`, one text per pass: what a
checkpoint without activation ranges gets), on the topic, sentiment, BBC and financial test splits. Per split: the least and mean cosine of a text's
embedding to float32's, and the share of texts whose served label is float32's.

    python bench/int8_quality.py            # -> bench/results/int8_quality.md
"""

from __future__ import annotations

import json

import numpy as np
from batch_invariance import DATA, RESULTS, ROOT, load

SPLITS = {"topic": "topic", "sentiment": "sentiment", "topic_bbc": "topic", "sentiment_financial": "sentiment"}
RUNTIMES = {"onnx-int8": 16, "int8-dynamic": 1}  # runtime -> texts per pass


def main() -> None:
    checkpoint = str(ROOT / "checkpoints" / "default")
    float32 = load(checkpoint, "onnx")
    models = {name: load(checkpoint, name) for name in RUNTIMES}
    lines = [
        "Each int8 encoder against float32 onnx on the shipped checkpoint. Command: `python bench/int8_quality.py`.",
        "",
        "| test split | runtime | least cosine | mean cosine | labels as float32's |",
        "|---|---|---:|---:|---:|",
    ]
    for split, task in SPLITS.items():
        path = DATA / split / "test.jsonl"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: this benchmark reads the shared test splits (../shared/data)")
        texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
        reference = float32.runtime.forward(texts, max_batch=16)[0]
        reference_labels = float32.probabilities(reference, [task])[task].argmax(1)
        for name, per_pass in RUNTIMES.items():
            embeddings = models[name].runtime.forward(texts, max_batch=per_pass)[0]
            cosine = (embeddings * reference).sum(1)
            cosine /= np.linalg.norm(embeddings, axis=1) * np.linalg.norm(reference, axis=1)
            same = (models[name].probabilities(embeddings, [task])[task].argmax(1) == reference_labels).mean()
            lines.append(f"| {split} ({len(texts)}) | {name} | {cosine.min():.4f} | {cosine.mean():.4f} | {same:.4f} |")
            print(lines[-1], flush=True)
    (RESULTS / "int8_quality.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
