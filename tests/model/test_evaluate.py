"""`multitask evaluate` and the shipped default checkpoint.

The CLI test needs nothing outside the repo; the shipped-checkpoint tests read ../shared/data and skip without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multitask.checkpoint.load import load_model
from multitask.checkpoint.manifest import read_manifest
from multitask.cli import main
from multitask.evaluate import evaluate_file
from tests.support.paths import SHARED_DATA, SHIPPED_CHECKPOINT

needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "topic" / "test.jsonl").is_file(),
    reason=f"{SHARED_DATA} is absent (CI has it): shipped-checkpoint metrics are checked against the shared test split",
)


def test_evaluate_cli_prints_metrics_json_and_writes_plot(tmp_path: Path, capsys) -> None:
    texts = [
        "the senate passed the budget bill after a long debate",
        "apple unveils a new iphone with a faster chip",
        "the striker scored twice in the cup final",
    ]
    labels = ["Politics", "Technology", "Sports"]
    data = tmp_path / "topic.csv"
    data.write_text("text,label\n" + "".join(f'"{text}",{label}\n' for text, label in zip(texts, labels)))
    plots = tmp_path / "plots"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(SHIPPED_CHECKPOINT),
            "--task",
            "topic",
            "--data",
            str(data),
            "--plots-dir",
            str(plots),
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 3
    # the accuracy the CLI reports is the model's own: its predictions in-process, scored against the file's labels
    predicted = [r["topic"]["label"] for r in load_model(SHIPPED_CHECKPOINT).predict(texts, tasks=["topic"])]
    assert metrics["accuracy"] == pytest.approx(np.mean([p == label for p, label in zip(predicted, labels)]))
    assert metrics["accuracy"] >= 2 / 3  # (the shipped model reads the football final as Entertainment by a hair)
    assert set(metrics["per_class"]) == set(read_manifest(SHIPPED_CHECKPOINT).model.task("topic").labels)
    assert [Path(p).name for p in metrics["plots"]] == ["confusion_topic_topic.png"]
    assert (plots / "confusion_topic_topic.png").stat().st_size > 1000


def test_evaluate_cli_reports_bad_rows_with_file_and_line(tmp_path: Path, capsys) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine", "label": "Sports"}\n{"text": "x", "label": "Weather"}\n')
    assert main(["evaluate", "--checkpoint", str(SHIPPED_CHECKPOINT), "--task", "topic", "--data", str(data)]) == 2
    assert f"{data}:2: unknown label 'Weather'" in capsys.readouterr().err


def test_shipped_checkpoint_is_small_and_fine_tuned() -> None:
    manifest = read_manifest(SHIPPED_CHECKPOINT)
    weights = sum(f.stat().st_size for f in SHIPPED_CHECKPOINT.glob("*.safetensors"))
    assert weights < 20 * 2**20
    assert manifest.encoder.finetune.value == "lora"
    assert manifest.model.task_names == ["topic", "sentiment"]
    assert set(manifest.calibration) == {"topic", "sentiment"}


@needs_shared
def test_shipped_checkpoint_metrics_reproduce_on_the_topic_test_split() -> None:
    stored = read_manifest(SHIPPED_CHECKPOINT).metrics["topic"]["test"]
    fresh = evaluate_file(SHIPPED_CHECKPOINT, "topic", SHARED_DATA / "topic" / "test.jsonl", progress=False)
    assert fresh["examples"] == stored["examples"] == 899
    assert fresh["macro_f1"] == pytest.approx(stored["macro_f1"], abs=0.005)  # stored when it was trained
    assert fresh["macro_f1"] >= 0.82  # the target for the shipped checkpoint
