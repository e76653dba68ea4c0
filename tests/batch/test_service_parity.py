"""`multitask classify` answers as the service does: the real graph of serve_config.local.yaml deployed on a local
Ray, the same checkpoint and runtime classified on Ray Data in the same Ray, compared row by row with POST
/v1/predict (labels equal, confidences within 1e-5, the same truncation flags), and the rows classify marks bad are
those the service refuses (422).

The local config's runtime (int8), as users run it: a text's answer does not depend on the batch it is in (int8
runs each text alone; tests/model/test_batch_invariance.py), so classify's batches of 64 and the Encoder's gathered
requests give the same answers.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import yaml

from multitask.cli import main
from tests.batch.helpers import report_of
from tests.graph.helpers import sample_texts
from tests.support.graph_under_test import graph_under_test
from tests.support.paths import LOCAL_CONFIG, SHIPPED_CHECKPOINT

RUNTIME = yaml.safe_load(LOCAL_CONFIG.read_text())["applications"][0]["args"]["runtime"]


@pytest.mark.slow
def test_classify_answers_as_the_service_does(tmp_path, capsys, shipped_onnx_cache):
    texts: list[str | None] = sample_texts(150)
    texts[3] = "Markets rallied after the vote. " * 40  # truncated by both
    texts[10], texts[20] = "", None
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), tmp_path / "in.parquet")
    with graph_under_test(
        LOCAL_CONFIG,
        num_cpus=4,  # the graph takes 1.75; classify one encoder of 0.5 and Ray Data's file listing one
        checkpoint=str(SHIPPED_CHECKPOINT),
        onnx_cache_dir=str(shipped_onnx_cache),
    ) as url:
        argv = ["classify", str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--runtime", RUNTIME]
        argv += ["--onnx-cache-dir", str(shipped_onnx_cache), "--encoders", "1", "--cpus-per-encoder", "0.5"]
        assert main([*argv, "--batch-size", "64", "--no-progress"]) == 0  # on the Ray the graph runs on
        report = report_of(capsys.readouterr().out)
        good = [i for i, text in enumerate(texts) if text]
        served = []
        for start in range(0, len(good), 64):  # the service's limit of texts per request
            chunk = [texts[i] for i in good[start : start + 64]]
            response = requests.post(f"{url}/v1/predict", json={"texts": chunk}, timeout=120)
            assert response.status_code == 200, response.text
            served += response.json()["results"]
        refused = [requests.post(f"{url}/v1/predict", json={"texts": [texts[i]]}, timeout=60) for i in (10, 20)]
    assert (report["rows_out"], report["rows_with_errors"]) == (len(texts), 2)
    assert [r.status_code for r in refused] == [422, 422]
    rows = sorted(pq.read_table(tmp_path / "out").to_pylist(), key=lambda row: row["id"])  # by id: check_rows
    assert [row["id"] for row in rows] == list(range(len(texts)))
    assert rows[10]["error"] and rows[20]["error"] and rows[10]["topic_label"] is None
    for i, want in zip(good, served):
        row = rows[i]
        assert row["truncated"] == want["truncated"], i
        for task in ("topic", "sentiment"):
            assert row[f"{task}_label"] == want[task]["label"], (i, task)
            assert row[f"{task}_confidence"] == pytest.approx(want[task]["confidence"], abs=1e-5), (i, task)
    assert rows[3]["truncated"] is True
