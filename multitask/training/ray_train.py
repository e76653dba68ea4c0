"""Run the same training config on Ray Train: N data-parallel workers (TorchTrainer, PyTorch DDP).

    multitask train --config configs/default.yaml --num-workers 2 [--use-gpu] [--storage-path s3://bucket/ray-runs]

Every worker runs `trainer.train` on its rank's shard of each task's training split, with the same seeded task
schedule, so each DDP all-reduce sums gradients of the same head. Only one head runs per step, hence
`find_unused_parameters=True`. Validation, calibration and metrics run on every worker over the full splits
(the weights are identical after each step, so the numbers are too); rank 0 writes the checkpoint into a local
temporary folder and reports it with `ray.train.report`, Ray Train persists it under `storage_path`, and the
driver copies it to `config.output_dir`.

On one machine the storage is a temporary folder. On a multi-node cluster, pass `storage_path` (`--storage-path`)
pointing at storage every node can reach (NFS, `s3://...`: pyarrow.fs, with the AWS variables of
`multitask/storage.py`), and make the data paths in the config readable on every node. `multitask train --output URI`
then uploads the checkpoint the driver received.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from multitask.checkpoint.format import CONFIG_FILE, ENCODER_FILE
from multitask.checkpoint.manifest import read_manifest
from multitask.errors import MultitaskError
from multitask.training.config import TrainConfig
from multitask.training.trainer import TrainResult, WorkerContext, train


def _train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: build its context, train, and (rank 0) report the checkpoint."""
    import ray.train
    import ray.train.torch

    config = TrainConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    worker = WorkerContext(
        rank=rank,
        world_size=world_size,
        # Each step runs one task's head; the other heads get no gradient, which DDP must be told about.
        wrap_model=lambda module: ray.train.torch.prepare_model(
            module, parallel_strategy_kwargs={"find_unused_parameters": True}
        ),
        device=ray.train.torch.get_device(),
    )
    with tempfile.TemporaryDirectory(prefix="multitask-ckpt-") as tmp:
        result = train(config.model_copy(update={"output_dir": Path(tmp)}), worker, progress=loop_config["progress"])
        report = {"metrics": result.metrics, "history": result.history}
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if worker.is_main else None
        ray.train.report(report, checkpoint=checkpoint)  # a barrier: every worker must call it once


def train_on_ray(
    config: TrainConfig,
    num_workers: int,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    storage_path: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `config` with `num_workers` DDP workers on Ray Train; write the checkpoint to `config.output_dir`.

    Connects to the running Ray (`ray.init()` / `RAY_ADDRESS`) or starts a local one, shut down again afterwards.
    `storage_path` is where Ray Train persists the run (default: a temporary folder removed afterwards); on a
    multi-node cluster it must be shared storage.
    """
    import ray
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if num_workers < 1:
        raise MultitaskError(f"num_workers must be at least 1, got {num_workers}")
    config = config.resolve_paths(Path.cwd())  # workers may run elsewhere: ship absolute paths
    started_ray = not ray.is_initialized()
    if started_ray:
        # With the dashboard: Ray Train's placement-group cleaner asks the state API (which the dashboard serves)
        # whether the run's controller is alive. Without one it asks 127.0.0.1:8265, where another Ray on the same
        # machine may answer "no such actor", and the cleaner then removes this run's workers mid-training.
        ray.init(include_dashboard=True)
    scratch = None if storage_path else tempfile.mkdtemp(prefix="multitask-ray-train-")
    # A fresh name per run: Ray Train would otherwise treat a rerun in the same storage as a resumed run.
    run_name = f"multitask-{config.output_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        trainer = TorchTrainer(
            _train_loop_per_worker,
            train_loop_config={"config": config.model_dump(mode="json"), "progress": progress},
            scaling_config=ScalingConfig(
                num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
            ),
            run_config=RunConfig(name=run_name, storage_path=storage_path or scratch),
        )
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:  # a worker raised: its traceback is in the message
            raise MultitaskError(f"Ray Train run {run_name} failed: {exc}") from exc
        if result.checkpoint is None:
            raise MultitaskError("Ray Train finished without a checkpoint from rank 0; see the worker logs above.")
        with result.checkpoint.as_directory() as directory:
            _copy_checkpoint(Path(directory), config.output_dir)
        reported = result.metrics or {}
        return TrainResult(
            output_dir=config.output_dir,
            manifest=read_manifest(config.output_dir),
            metrics=reported.get("metrics", {}),
            history=reported.get("history", []),
        )
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        if started_ray:
            ray.shutdown()


def _copy_checkpoint(source: Path, destination: Path) -> None:
    """Copy a reported checkpoint over `destination`, as `save_checkpoint` would have written it there."""
    if not (source / CONFIG_FILE).is_file():
        raise MultitaskError(f"The checkpoint Ray Train reported ({source}) has no {CONFIG_FILE}.")
    destination.mkdir(parents=True, exist_ok=True)
    if not (source / ENCODER_FILE).exists():
        (destination / ENCODER_FILE).unlink(missing_ok=True)  # a stale fine-tuned encoder must not outlive a frozen run
    shutil.copytree(source, destination, dirs_exist_ok=True)
