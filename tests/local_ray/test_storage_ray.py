"""Storage URIs where Ray runs, against a real S3-compatible server on 127.0.0.1 (moto's server mode) reached through
the AWS variables: the real serving graph deployed with `checkpoint: s3://...` (every replica fetches it) answers over
HTTP; `multitask train --num-workers 2 --storage-path s3://... --output s3://...` persists the run and the checkpoint
there. Each test starts a Ray of its own and stops it."""

from __future__ import annotations

import os

import pytest
import requests

from multitask.checkpoint.format import MODEL_FILE
from multitask.checkpoint.load import load_model, save_checkpoint
from multitask.cli import main
from multitask.storage import locate_checkpoint, upload_checkpoint
from operations.ports import free_port
from tests.support.graph_under_test import graph_under_test
from tests.support.paths import LOCAL_CONFIG
from tests.support.s3_server import s3_server
from tests.support.tiny_tasks import TOPIC_PROBES, tiny_config_dict


@pytest.mark.slow
def test_the_graph_serves_a_checkpoint_from_s3(minilm_model, tmp_path):
    save_checkpoint(minilm_model, tmp_path / "ckpt")
    cache = tmp_path / "checkpoint-cache"
    with s3_server() as s3:  # the AWS variables are in os.environ from here: Ray's workers inherit them
        uri = s3.create_bucket("serving") + "/multitask/ckpt-v1"
        upload_checkpoint(tmp_path / "ckpt", uri)
        with graph_under_test(
            LOCAL_CONFIG,
            num_cpus=3,
            checkpoint=uri,
            checkpoint_cache_dir=str(cache),
            onnx_cache_dir=str(tmp_path / "onnx"),
        ) as url:
            response = requests.post(f"{url}/v1/predict", json={"texts": ["The match ended 2-1."]}, timeout=60)
            assert response.status_code == 200, response.text
            assert {"topic", "sentiment"} <= set(response.json()["results"][0])
            assert response.json()["model"]["checkpoint"] == "ckpt-v1"
            # the builder and every replica (one node) located it in one cache folder, downloaded once
            assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
            assert s3.gets("/multitask/ckpt-v1/" + MODEL_FILE) == 1


@pytest.mark.slow
def test_ray_train_keeps_its_run_and_the_checkpoint_in_s3(tmp_path, capsys):
    import pyarrow.fs
    import ray
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, mode="frozen")))
    os.environ["RAY_AUTH_MODE"] = "disabled"
    with s3_server() as s3:
        bucket = s3.create_bucket("training")
        assert not ray.is_initialized(), "this test needs its own Ray; another test left one running"
        # a dashboard of its own: Ray Train's placement-group cleaner asks it whether the run is alive
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=free_port(), log_to_driver=False)
        try:
            argv = ["train", "--config", str(config), "--num-workers", "2", "--no-progress"]
            argv += ["--storage-path", f"{bucket}/runs", "--output", f"{bucket}/checkpoints/tiny"]
            assert main(argv) == 0
        finally:
            ray.shutdown()
        fs, path = pyarrow.fs.FileSystem.from_uri(f"{bucket}/runs")
        runs = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
        assert any(info.path.endswith(MODEL_FILE) for info in runs)  # Ray Train persisted rank 0's checkpoint there
        model = load_model(locate_checkpoint(f"{bucket}/checkpoints/tiny", tmp_path / "cache"))
    assert not (tmp_path / "ckpt").exists()  # the config's output_dir was not written
    predictions = model.predict(list(TOPIC_PROBES.values()), tasks=["topic"])
    assert [p["topic"]["label"] for p in predictions] == list(TOPIC_PROBES)
