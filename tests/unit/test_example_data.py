"""`multitask example-data` writes the small CSV README's add-task walkthrough trains on, and never overwrites."""

from __future__ import annotations

import csv
from collections import Counter

from multitask.cli import main


def test_example_data_writes_a_balanced_labelled_csv_once(tmp_path, capsys):
    path = tmp_path / "news_kind.csv"
    assert main(["example-data", str(path)]) == 0
    rows = list(csv.DictReader(path.open()))
    assert Counter(row["label"] for row in rows) == {"sports": 108, "technology": 108, "politics": 108}
    assert all(row["text"].strip() for row in rows) and len({row["text"] for row in rows}) == len(rows)
    capsys.readouterr()

    assert main(["example-data", str(path)]) == 2  # an existing file is never written over
    assert "exists already" in capsys.readouterr().err
