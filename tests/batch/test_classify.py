"""`multitask classify` end to end on a local Ray of this module's own: Parquet, JSON Lines and CSV in and out,
bad rows kept, a storage URI on the local S3 server, answers equal to the inference core's run in this process.

The S3 server starts before Ray, so that Ray's workers inherit its AWS variables. Two encoder actors of half a CPU
and 16-row batches: the rows pass through both actors in many blocks. Rows are matched by their `id` column, since
Ray Data's `preserve_order` did not always keep the input order here (`check_rows`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.fs
import pyarrow.json
import pyarrow.parquet as pq
import pytest

from multitask.batch.rows import text_problem
from multitask.cli import main
from multitask.numpy_head import NumpyHead
from multitask.results import label_scores
from multitask.runtime.select import select_runtime
from tests.batch.helpers import report_of
from tests.graph.helpers import sample_texts
from tests.support.paths import SHIPPED_CHECKPOINT
from tests.support.s3_server import s3_server

ROWS = 120
BAD = {5: None, 17: "", 40: "   \n", 77: "\u200b"}  # null, empty, whitespace, a zero-width space only
RUNTIME = "onnx"  # float32 onnxruntime: the reference below runs the same runtime in this process
FAST = ["--runtime", RUNTIME, "--encoders", "2", "--cpus-per-encoder", "0.5", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def local_ray(s3):
    import os

    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    assert not ray.is_initialized(), "these tests need a Ray of their own; another test left one running"
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def texts() -> list[object]:
    texts: list[object] = sample_texts(ROWS)
    texts[0] = "Markets rallied after the vote. " * 40  # over the encoder's window: truncated
    for i, bad in BAD.items():
        texts[i] = bad
    return texts


@pytest.fixture(scope="module")
def reference(texts, shipped_onnx_cache) -> dict[int, dict]:
    """Row -> {task: label_scores, truncated}: the inference core in this process (the Encoder's runtime and the
    the head deployment's numpy heads), one text per pass."""
    runtime = select_runtime(SHIPPED_CHECKPOINT, RUNTIME, "cpu", onnx_cache_dir=shipped_onnx_cache)
    heads = {task: NumpyHead.load(SHIPPED_CHECKPOINT, task) for task in ("topic", "sentiment")}
    out = {}
    for i, text in enumerate(texts):
        if text_problem(text) is None:
            embeddings, truncated = runtime.forward([text])
            out[i] = {task: label_scores(h.task.labels, h.probabilities(embeddings)[0]) for task, h in heads.items()}
            out[i]["truncated"] = truncated[0]
    return out


def run(capsys, *argv: str, cache: Path) -> dict:
    assert main(["classify", *argv, "--onnx-cache-dir", str(cache), *FAST]) == 0
    return report_of(capsys.readouterr().out)


def read_back(folder: Path, format: str) -> pa.Table:
    """The written files as one table, in the order of the input's `id` column (see `check_rows` on order)."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    if format == "parquet":
        table = pa.concat_tables(pq.read_table(p) for p in files)
    elif format == "json":
        table = pa.concat_tables(pyarrow.json.read_json(p) for p in files)
    else:
        options = pyarrow.csv.ConvertOptions(strings_can_be_null=True)
        table = pa.concat_tables(pyarrow.csv.read_csv(p, convert_options=options) for p in files)
    return table.sort_by("id")


def check_rows(table: pa.Table, texts: list[object], reference: dict, tasks=("topic", "sentiment")) -> None:
    """Every row once, with its input columns; good rows have the core's answers, bad ones an error. Rows are matched
    by their `id` column: Ray Data's `preserve_order` kept input order in most runs here, but one full-suite run had
    two 16-row blocks swapped, so the order is not what these tests promise (README, Classify a dataset)."""
    rows = sorted(table.to_pylist(), key=lambda row: row["id"])
    assert [row["id"] for row in rows] == list(range(len(texts)))
    for i, row in enumerate(rows):
        if i in reference:
            assert row["error"] is None and row["truncated"] == reference[i]["truncated"], i
            for task in tasks:
                assert row[f"{task}_label"] == reference[i][task]["label"], (i, task)
                assert row[f"{task}_confidence"] == pytest.approx(reference[i][task]["confidence"], abs=1e-5)
        else:
            assert row["error"] and all(row[f"{task}_label"] is None for task in tasks), i
    assert rows[0]["truncated"] is True


def test_parquet_round_trip_with_scores_and_embeddings(
    local_ray, tmp_path, capsys, texts, reference, shipped_onnx_cache
):
    source = tmp_path / "in"
    source.mkdir()
    half = ROWS // 2  # two files: both read, and each file's
    ids = list(range(ROWS))
    pq.write_table(pa.table({"id": ids[:half], "text": texts[:half]}), source / "part-0.parquet")
    pq.write_table(pa.table({"id": ids[half:], "text": texts[half:]}), source / "part-1.parquet")
    report = run(
        capsys, str(source), str(tmp_path / "out"), "--with-scores", "--with-embeddings", cache=shipped_onnx_cache
    )
    assert (report["rows_in"], report["rows_out"], report["rows_with_errors"]) == (ROWS, ROWS, len(BAD))
    table = read_back(tmp_path / "out", "parquet")
    check_rows(table, texts, reference)
    assert table.column("text").to_pylist() == texts  # every input column kept, as it was
    row = table.to_pylist()[1]
    assert list(row["topic_scores"]) == list(reference[1]["topic"]["scores"])
    assert len(row["embedding"]) == 1024 and table.to_pylist()[5]["embedding"] is None


def test_json_lines_with_rows_that_are_not_text(local_ray, tmp_path, capsys, texts, reference, shipped_onnx_cache):
    """A number, a list and a missing key in the text column: kept, flagged, never fatal."""
    odd = {60: 5, 61: ["a", "list"], 62: "missing"}
    lines = []
    for i, text in enumerate(texts):
        row = {"id": i, "text": odd.get(i, text)}
        if odd.get(i) == "missing":
            del row["text"]
        lines.append(json.dumps(row))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    report = run(capsys, str(tmp_path / "in.jsonl"), str(tmp_path / "out"), cache=shipped_onnx_cache)
    assert (report["rows_out"], report["rows_with_errors"]) == (ROWS, len(BAD) + len(odd))
    table = read_back(tmp_path / "out", "json")
    check_rows(table, texts, {i: r for i, r in reference.items() if i not in odd})
    errors = table.column("error").to_pylist()
    assert errors[60:63] == ["not a string: int", "not a string: list", "no text (null)"]
    assert table.column("text").to_pylist()[60:63] == ["5", '["a", "list"]', None]


def test_csv_round_trip(local_ray, tmp_path, capsys, texts, reference, shipped_onnx_cache):
    pyarrow.csv.write_csv(pa.table({"id": list(range(ROWS)), "text": texts}), tmp_path / "in.csv")
    report = run(capsys, str(tmp_path / "in.csv"), str(tmp_path / "out"), "--with-scores", cache=shipped_onnx_cache)
    assert (report["rows_in"], report["rows_out"], report["rows_with_errors"]) == (None, ROWS, len(BAD))
    table = read_back(tmp_path / "out", "csv")
    check_rows(table, texts, reference)
    assert set(json.loads(table.column("sentiment_scores")[1].as_py())) == {"positive", "neutral", "negative"}


def test_storage_uris_in_and_out(local_ray, s3, tmp_path, capsys, texts, reference, shipped_onnx_cache):
    """Parquet in a bucket -> JSON Lines in the same bucket, one task, through the local S3 server."""
    bucket = s3.create_bucket("datasets")
    fs, path = pyarrow.fs.FileSystem.from_uri(f"{bucket}/tickets/2025/part-0.parquet")
    with fs.open_output_stream(path) as f:
        pq.write_table(pa.table({"id": list(range(ROWS)), "text": texts}), f)
    report = run(
        capsys, f"{bucket}/tickets/", f"{bucket}/labelled.jsonl", "--tasks", "sentiment", cache=shipped_onnx_cache
    )
    assert (report["rows_in"], report["rows_out"], report["rows_with_errors"]) == (ROWS, ROWS, len(BAD))
    assert s3.gets("/tickets/2025/part-0.parquet") >= 1
    out_fs, out_path = pyarrow.fs.FileSystem.from_uri(f"{bucket}/labelled.jsonl")
    written = sorted(info.path for info in out_fs.get_file_info(pyarrow.fs.FileSelector(out_path)))
    table = pa.concat_tables(pyarrow.json.read_json(out_fs.open_input_stream(p)) for p in written)
    check_rows(table, texts, reference, tasks=("sentiment",))
    assert "topic_label" not in table.column_names


def test_bad_rows_everywhere_lose_nothing(local_ray, tmp_path, capsys, shipped_onnx_cache):
    """A file of nothing but bad rows, and one good row: every row comes out, none is fatal."""
    values = [None, "", " ", "\t\n", None] * 20 + ["The team won the final."]
    pq.write_table(
        pa.table({"id": list(range(len(values))), "text": pa.array(values, pa.string())}), tmp_path / "b.parquet"
    )
    report = run(capsys, str(tmp_path / "b.parquet"), str(tmp_path / "out"), cache=shipped_onnx_cache)
    assert (report["rows_in"], report["rows_out"], report["rows_with_errors"]) == (101, 101, 100)
    table = read_back(tmp_path / "out", "parquet")
    assert sorted(table.column("id").to_pylist()) == list(range(101))  # every row once (order: check_rows)
    assert table.column("topic_label").to_pylist()[-1] is not None and table.column("error").to_pylist()[-1] is None
