"""`multitask add-task` end to end on the real embedded encoder: a head trained on the shipped checkpoint's served
encoder (onnx-int8, as serve_config.local.yaml serves it) from a few hundred generated texts, written as an artifact
that the head replicas' numpy code loads, bound to the encoder's fingerprint; bad data refused with file and line."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from multitask.checkpoint.manifest import read_manifest
from multitask.cli import main
from multitask.errors import EncoderMismatchError
from multitask.example_data import TOPIC_WORDS, write_news_kind_csv
from multitask.head_artifact import HEAD_FILE, HEAD_WEIGHTS_FILE, load_head_artifact, read_head_manifest
from multitask.runtime.select import select_runtime
from tests.support.paths import SHIPPED_CHECKPOINT
from tests.support.tiny_tasks import TOPIC_PROBES

LABELS = sorted(TOPIC_WORDS)  # politics, sports, technology


def add_task(capsys, *args: str) -> tuple[int, dict | str]:
    code = main(["add-task", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("add-task")
    write_news_kind_csv(folder / "news.csv")
    probes = "".join(json.dumps({"text": text, "label": label}) + "\n" for label, text in TOPIC_PROBES.items())
    (folder / "probes.jsonl").write_text(probes)
    return folder


@pytest.fixture(scope="module")
def common(workdir: Path, shipped_onnx_cache: Path) -> list[str]:
    """The options every run shares: the shipped checkpoint, private caches."""
    return [
        "--checkpoint",
        str(SHIPPED_CHECKPOINT),
        "--cache-dir",
        str(workdir / "embeddings"),
        "--onnx-cache-dir",
        str(shipped_onnx_cache),
        "--threads",
        "1",
    ]


@pytest.fixture(scope="module")
def trained(workdir: Path, common: list[str]) -> tuple[Path, dict]:
    out = io.StringIO()  # module scope: capsys is per test, so stdout is read here
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "add-task",
                "news_kind",
                "--data",
                str(workdir / "news.csv"),
                "--test",
                str(workdir / "probes.jsonl"),
                "--output",
                str(workdir / "head"),
                "--no-progress",
                *common,
            ]
        )
    assert code == 0
    return workdir / "head", json.loads(out.getvalue())


def test_the_artifact_holds_weights_labels_fingerprint_metrics_calibration_and_a_report(trained):
    head_dir, summary = trained
    fingerprint = read_manifest(SHIPPED_CHECKPOINT).encoder.fingerprint
    assert (head_dir / HEAD_FILE).is_file() and (head_dir / HEAD_WEIGHTS_FILE).is_file()
    manifest = read_head_manifest(head_dir)
    assert manifest.task.name == "news_kind" and list(manifest.task.labels) == LABELS
    assert manifest.encoder.fingerprint == fingerprint == summary["encoder_fingerprint"]
    assert manifest.encoder.runtime["dtype"] == "int8" and manifest.embedding_dim == 1024
    examples = manifest.training["examples"]
    assert examples["train"] + examples["validation"] == 324 and examples["validation"] == 3 * 22  # 20% per label
    assert manifest.training["validation_held_out"] is True
    assert manifest.metrics["validation"]["macro_f1"] >= 0.95  # keyword topics: separable on these embeddings
    assert manifest.metrics["test"]["accuracy"] == 1.0  # held-out sentences with words the data never uses
    calibration = manifest.calibration
    assert 0.05 <= calibration["temperature"] <= 20 and calibration["ece_after"] <= calibration["ece_before"] + 1e-6
    report = (head_dir / "report" / "report.md").read_text()
    assert "![confusion matrix](confusion_news_kind_validation.png)" in report
    png = head_dir / "report" / "confusion_news_kind_validation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["seconds"]) == {"read", "embed", "train", "report", "total"}


def test_the_artifact_loads_as_the_head_replicas_numpy_head_and_classifies_new_texts(trained, shipped_onnx_cache):
    head_dir, _ = trained
    runtime = select_runtime(SHIPPED_CHECKPOINT, "onnx-int8", "cpu", onnx_cache_dir=shipped_onnx_cache)
    head, labels, temperature, fingerprint, _ = load_head_artifact(head_dir, encoder_fingerprint=runtime.fingerprint)
    assert fingerprint == runtime.fingerprint
    assert list(labels) == LABELS and temperature == pytest.approx(
        read_head_manifest(head_dir).calibration["temperature"]
    )
    embeddings = runtime.encode(list(TOPIC_PROBES.values())).embeddings
    probabilities = head.probabilities(embeddings)
    assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert [labels[i] for i in probabilities.argmax(axis=1)] == list(TOPIC_PROBES)


def test_the_artifact_is_refused_against_another_encoder_naming_both_fingerprints(trained):
    head_dir, summary = trained
    with pytest.raises(EncoderMismatchError) as error:
        load_head_artifact(head_dir, encoder_fingerprint="ffffffffffffffff")
    assert summary["encoder_fingerprint"] in str(error.value) and "ffffffffffffffff" in str(error.value)


def test_data_and_head_go_through_storage_uris_with_the_cached_embeddings(trained, workdir, common, capsys):
    head_dir, _ = trained
    data_uri = f"file://{workdir / 'news.csv'}"
    head_uri = f"file://{workdir}/bucket/heads/news_kind"
    code, summary = add_task(capsys, "news_kind", "--data", data_uri, "--output", head_uri, *common)
    assert code == 0, summary
    assert summary["seconds"]["embed"] < 5.0  # the same texts: read from the embedding cache, not encoded again
    loaded = load_head_artifact(head_uri, cache_dir=workdir / "fetched")
    assert loaded.fingerprint == summary["encoder_fingerprint"]
    x = np.random.default_rng(0).normal(size=(4, 1024)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.head.probabilities(x), load_head_artifact(head_dir).head.probabilities(x), atol=1e-6
    )


def test_bad_data_and_bad_names_are_refused_before_training_naming_file_and_line(workdir, common, capsys):
    out = ["--output", str(workdir / "refused"), *common]
    rows = (workdir / "news.csv").read_text().splitlines()
    (workdir / "empty.csv").write_text("\n".join([*rows[:5], ",sports", *rows[5:]]) + "\n")
    code, err = add_task(capsys, "news_kind", "--data", str(workdir / "empty.csv"), *out)
    assert code == 2 and f"{workdir / 'empty.csv'}:6: empty text" in err
    code, err = add_task(
        capsys, "news_kind", "--data", str(workdir / "news.csv"), "--labels", "sports", "politics", *out
    )
    assert code == 2 and f"{workdir / 'news.csv'}:" in err and "unknown label 'technology'" in err
    assert "108 bad row(s)" in err
    few = [
        rows[0],
        *[r for r in rows[1:] if not r.endswith(",technology")],
        *[r for r in rows if r.endswith(",technology")][:5],
    ]
    (workdir / "few.csv").write_text("\n".join(few) + "\n")
    code, err = add_task(capsys, "news_kind", "--data", str(workdir / "few.csv"), *out)
    assert code == 2 and "too few examples of label(s) {'technology': 5}" in err and "at least 8 examples" in err
    one = [rows[0], *[r for r in rows[1:] if r.endswith(",sports")]]
    (workdir / "one.csv").write_text("\n".join(one) + "\n")
    code, err = add_task(capsys, "news_kind", "--data", str(workdir / "one.csv"), *out)
    assert code == 2 and "only the label 'sports'; a task needs at least 2 labels" in err
    code, err = add_task(capsys, "topic", "--data", str(workdir / "news.csv"), *out)
    assert code == 2 and "Task 'topic' exists already" in err
    code, err = add_task(capsys, "News-Kind", "--data", str(workdir / "news.csv"), *out)
    assert code == 2 and "does not fit a route and a deployment name" in err
    assert not (workdir / "refused").exists()
