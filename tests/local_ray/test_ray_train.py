"""Ray Train: the same config on 2 CPU DDP workers writes a checkpoint that loads and predicts sensibly."""

from __future__ import annotations

import os

import pytest

from multitask.checkpoint.format import ENCODER_FILE
from multitask.checkpoint.load import load_model
from multitask.finetune import FinetuneMode
from multitask.training.config import TrainConfig
from operations.ports import free_port
from tests.support.tiny_tasks import SENTIMENT_PROBES, TOPIC_PROBES, tiny_config_dict

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for this module, shut down afterwards; a Ray someone else started is used and left running."""
    if ray.is_initialized():
        yield
        return
    # Ray >= 2.5x turns on token authentication by default; a throwaway local cluster does not need it.
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # A dashboard on a free port of its own: Ray Train's placement-group cleaner asks it whether the run is alive
    # (without one it would ask 127.0.0.1:8265, which may be another test's Ray on this shared machine).
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=free_port())
    try:
        yield
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous


def test_two_worker_ray_train_writes_a_loadable_checkpoint(local_ray, tmp_path):
    from multitask.training.ray_train import train_on_ray

    config = TrainConfig.model_validate(tiny_config_dict(tmp_path, mode="lora", epochs=2, steps_per_epoch=6))
    (config.output_dir / "stale").mkdir(parents=True)  # an existing output folder is written into, not refused
    result = train_on_ray(config, num_workers=2, use_gpu=False, cpus_per_worker=0.5, progress=False)

    assert result.output_dir == config.output_dir
    assert result.manifest is not None and result.manifest.encoder.finetune is FinetuneMode.lora
    assert (config.output_dir / ENCODER_FILE).is_file()  # the LoRA adapters trained under DDP are saved
    assert (config.output_dir / "report").is_dir()
    assert len(result.history) >= 1
    for task in ("topic", "sentiment"):
        assert result.metrics[task]["validation"]["macro_f1"] >= 0.8, result.metrics[task]["validation"]
        stored = result.manifest.metrics[task]["validation"]["macro_f1"]
        assert stored == pytest.approx(result.metrics[task]["validation"]["macro_f1"])

    model = load_model(config.output_dir)
    predictions = model.predict(list(TOPIC_PROBES.values()), tasks=["topic"])
    assert [p["topic"]["label"] for p in predictions] == list(TOPIC_PROBES)
    predictions = model.predict(list(SENTIMENT_PROBES.values()), tasks=["sentiment"])
    assert [p["sentiment"]["label"] for p in predictions] == list(SENTIMENT_PROBES)


def test_a_worker_error_is_reported_with_its_cause(local_ray, tmp_path):
    from multitask.errors import MultitaskError
    from multitask.training.ray_train import train_on_ray

    config = TrainConfig.model_validate(tiny_config_dict(tmp_path))
    train_file = config.data["sentiment"].train
    train_file.write_text(train_file.read_text() + '{"text": "meh", "label": "lukewarm"}\n')

    with pytest.raises(MultitaskError, match="lukewarm") as caught:
        train_on_ray(config, num_workers=2, use_gpu=False, cpus_per_worker=0.5, progress=False)
    assert str(train_file) in str(caught.value)
    assert not config.output_dir.exists()
