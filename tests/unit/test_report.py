"""The evaluation report says where its numbers come from when a task has no test split."""

from __future__ import annotations

import numpy as np

from multitask.training.metrics import classification_metrics
from multitask.training.report import write_report

LABELS = ["a", "b"]


def metrics_of(splits: list[str]) -> dict:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    return {split: classification_metrics([0, 1, 1, 1], probabilities, LABELS) for split in splits}


def test_a_report_without_a_test_split_says_its_numbers_are_the_validation_splits(tmp_path):
    metrics = {"topic": metrics_of(["validation"]), "sentiment": metrics_of(["validation", "test"])}
    report = write_report(tmp_path, metrics, {"topic": LABELS, "sentiment": LABELS}).read_text()
    assert "**No test split for topic**" in report and "sentiment**" not in report
    assert "chose the kept epoch and fitted the calibration" in report


def test_a_report_with_test_splits_says_nothing_of_it(tmp_path):
    metrics = {"topic": metrics_of(["validation", "test"])}
    assert "No test split" not in write_report(tmp_path, metrics, {"topic": LABELS}).read_text()
