"""The `multitask` command: train, evaluate, predict, and move checkpoints to storage.

    multitask train --config configs/default.yaml [--output s3://bucket/ckpt] [--num-workers 2 [--use-gpu]
                    [--storage-path s3://bucket/ray-train]]
    multitask wise-ft --config configs/default.yaml --checkpoint checkpoints/default   # WiSE-FT after the fact
    multitask evaluate --checkpoint checkpoints/default --task topic --data test.jsonl [--plots-dir DIR]
    multitask predict --checkpoint checkpoints/default "the senate passed the bill" "what a great day"
    multitask upload checkpoints/default s3://bucket/ckpt
    multitask bundle checkpoints/default s3://bucket/ckpt-bundled     # with the encoder's weights and tokenizer
    multitask add-task news_region --data regions.csv --checkpoint checkpoints/default --output heads/news_region
    multitask classify s3://bucket/tickets/ s3://bucket/labelled/ [--tasks topic] [--with-embeddings]   # Ray Data
    multitask activation-ranges checkpoints/default   # int8's fixed activation scales, for a checkpoint without them

A checkpoint is a local path or a storage URI (s3://, gs://, file://, ...) wherever one is asked for; S3 takes its
endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from multitask.errors import CheckpointError, MultitaskError
from multitask.storage import checkpoint_name, is_uri, locate_checkpoint, upload_checkpoint
from multitask.task_names import head_app_name, head_deployment_name

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multitask", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a checkpoint from a YAML config")
    train.add_argument("--config", required=True, type=Path, help="training config (YAML)")
    train.add_argument("--num-workers", type=int, default=0, help="run on Ray Train with N DDP workers")
    train.add_argument("--use-gpu", action="store_true", help="with --num-workers: one GPU per worker")
    train.add_argument(
        "--output", default=None, help="checkpoint folder or storage URI (s3://...); default: the config's output_dir"
    )
    train.add_argument(
        "--storage-path", default=None, help="with --num-workers: where Ray Train keeps the run (shared on a cluster)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint a local output folder holds already"
    )

    wise_ft = commands.add_parser(
        "wise-ft", help="apply a config's training.wise_ft to a checkpoint trained with it (no training again)"
    )
    wise_ft.add_argument("--config", required=True, type=Path, help="training config (YAML) with training.wise_ft")
    wise_ft.add_argument("--checkpoint", required=True, help="checkpoint folder or storage URI trained with it")
    wise_ft.add_argument(
        "--output", type=Path, default=None, help="checkpoint folder; default: the config's output_dir"
    )
    wise_ft.add_argument("--no-progress", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("evaluate", help="metrics of a checkpoint on a labelled file (JSON to stdout)")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint folder or storage URI")
    evaluate.add_argument("--task", required=True)
    evaluate.add_argument("--data", required=True, type=Path, help="JSON Lines or CSV with text and label")
    evaluate.add_argument("--plots-dir", type=Path, default=None, help="write a confusion-matrix PNG here")

    predict = commands.add_parser("predict", help="classify texts given on the command line (JSON to stdout)")
    predict.add_argument("texts", nargs="+")
    predict.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="checkpoint folder or storage URI")
    predict.add_argument("--task", action="append", dest="tasks", help="only this task (repeatable)")

    upload = commands.add_parser("upload", help="copy a checkpoint to a storage URI, its digest file last")
    upload.add_argument("source", help="checkpoint folder or URI")
    upload.add_argument("destination", help="storage URI (s3://bucket/path, gs://..., file://...)")

    bundle = commands.add_parser(
        "bundle", help="copy a checkpoint with its encoder's weights and tokenizer inside (no hub or cache needed)"
    )
    bundle.add_argument("source", help="checkpoint folder or URI")
    bundle.add_argument("destination", help="new checkpoint folder or storage URI")
    _add_task_parser(commands)
    example = commands.add_parser(
        "example-data", help="write a small labelled CSV to try add-task with (news: sports, technology, politics)"
    )
    example.add_argument("output", type=Path, help="the CSV to write (text, label)")
    _add_classify(commands)
    ranges = commands.add_parser(
        "activation-ranges",
        help="measure the encoder's activation ranges on the validation files its training record names, for "
        "batch-invariant int8 serving (training writes them; this is for checkpoints trained before)",
    )
    ranges.add_argument(
        "checkpoint", type=Path, help="local checkpoint folder (activation_ranges.json is written in it)"
    )
    ranges.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _add_classify(commands) -> None:
    """`multitask classify`: a whole dataset on Ray Data (multitask/batch/pipeline.py); its options are ClassifyJob's."""
    from typing import get_args

    from multitask.batch.files import FORMATS
    from multitask.runtime.select import Dtype, Runtime

    classify = commands.add_parser(
        "classify", help="classify every row of Parquet / JSON Lines / CSV files on Ray Data, into a folder of files"
    )
    classify.add_argument("input", help="a file, folder or glob (local or a storage URI)")
    classify.add_argument("output", help="the folder to write (local or a storage URI)")
    classify.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="checkpoint folder or storage URI")
    classify.add_argument("--tasks", nargs="+", default=None, help="only these tasks (default: every task)")
    classify.add_argument("--text-column", default="text")
    classify.add_argument("--with-scores", action="store_true", help="every label's probability, per task")
    classify.add_argument("--with-embeddings", action="store_true", help="the shared embedding of each row")
    classify.add_argument("--input-format", choices=FORMATS, default=None, help="default: from file extensions")
    classify.add_argument("--output-format", choices=FORMATS, default=None, help="default: OUTPUT's or the input's")
    classify.add_argument("--overwrite", action="store_true", help="replace the files OUTPUT holds")
    classify.add_argument("--runtime", choices=get_args(Runtime), default="auto", help="the Encoder's runtime choice")
    classify.add_argument("--dtype", choices=get_args(Dtype), default="auto")
    classify.add_argument("--gpus-per-encoder", type=float, default=0.0, help="> 0: encoders on GPUs (torch)")
    classify.add_argument("--cpus-per-encoder", type=float, default=1.0, help="CPUs (threads) per encoder actor")
    classify.add_argument("--encoders", type=int, default=None, help="encoder actors (default: as many as fit)")
    classify.add_argument("--batch-size", type=int, default=256, help="rows per encoder call")
    classify.add_argument("--onnx-cache-dir", default=None, help="ONNX exports (default: ~/.cache/multitask/onnx)")
    classify.add_argument("--address", default=None, help="a Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    classify.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.storage_path and args.num_workers < 1:
        parser.error("--storage-path is for Ray Train runs: give --num-workers too")
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "wise-ft":
            return _wise_ft(args)
        if args.command in ("upload", "bundle"):
            return _copy(args)
        if args.command == "example-data":
            from multitask.example_data import write_news_kind_csv

            if args.output.exists():
                raise MultitaskError(f"{args.output} exists already; name a new file.")
            written = write_news_kind_csv(args.output)
            print(json.dumps({"data": str(written), "rows": len(written.read_text().splitlines()) - 1}))
            return 0
        if args.command == "add-task":
            return _add_task(args)
        if args.command == "classify":
            return _classify(args)
        if args.command == "activation-ranges":
            from multitask.training.activation_ranges import recorded_validation_texts, write_activation_ranges

            validation = recorded_validation_texts(args.checkpoint)
            ranges = write_activation_ranges(args.checkpoint, validation, progress=not args.no_progress)
            print(json.dumps({"checkpoint": str(args.checkpoint), "texts": ranges.texts, "layers": len(ranges.ranges)}))
            return 0
        checkpoint = locate_checkpoint(args.checkpoint)
        if args.command == "evaluate":
            from multitask.evaluate import evaluate_file

            print(json.dumps(evaluate_file(checkpoint, args.task, args.data, args.plots_dir), indent=2))
            return 0
        from multitask.checkpoint.load import load_model

        results = load_model(checkpoint).predict(args.texts, tasks=args.tasks)
        print(json.dumps([{"text": t, **r} for t, r in zip(args.texts, results)], indent=2))
        return 0
    except (MultitaskError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2


def refuse_to_overwrite(output_dir: Path) -> None:
    """A local output folder that holds files already (e.g. the shipped `checkpoints/default`) is not trained over
    without `--overwrite`: hours of training, or the tracked checkpoint, are not replaced by accident."""
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise CheckpointError(
            f"{output_dir} holds files already (a checkpoint?); train into a new folder with --output, or pass "
            "--overwrite to replace it."
        )


def _train(args: argparse.Namespace) -> int:
    """Train into the config's output_dir, or `--output`: a folder, or a URI (trained into a temporary folder,
    then uploaded)."""
    from multitask.training.config import load_train_config

    config = load_train_config(args.config)
    to_storage = bool(args.output) and is_uri(args.output)
    with tempfile.TemporaryDirectory(prefix="multitask-train-") as scratch:
        if to_storage:
            config = config.model_copy(update={"output_dir": Path(scratch) / checkpoint_name(args.output)})
        elif args.output:
            config = config.model_copy(update={"output_dir": Path(args.output).expanduser().resolve()})
        if not to_storage and not args.overwrite:
            refuse_to_overwrite(config.output_dir)
        if args.num_workers > 0:
            from multitask.training.ray_train import train_on_ray

            result = train_on_ray(
                config,
                num_workers=args.num_workers,
                use_gpu=args.use_gpu,
                storage_path=args.storage_path,
                progress=not args.no_progress,
            )
        else:
            from multitask.training.trainer import train

            result = train(config, progress=not args.no_progress)
        if to_storage:
            upload_checkpoint(result.output_dir, args.output)
    checkpoint = args.output if to_storage else str(result.output_dir)
    print(json.dumps({"checkpoint": checkpoint, "metrics": _headline(result.metrics)}, indent=2))
    return 0


def _wise_ft(args: argparse.Namespace) -> int:
    """WiSE-FT on an already trained checkpoint, written to the config's output_dir or `--output` (may be the
    checkpoint's own folder: it is read whole before anything is written)."""
    from multitask.training.config import load_train_config
    from multitask.training.trainer import wise_ft_checkpoint

    config = load_train_config(args.config)
    if args.output:
        config = config.model_copy(update={"output_dir": args.output.expanduser().resolve()})
    result = wise_ft_checkpoint(config, locate_checkpoint(args.checkpoint), progress=not args.no_progress)
    alpha = result.manifest.training["wise_ft"]["alpha"]
    print(json.dumps({"checkpoint": str(result.output_dir), "alpha": alpha, "metrics": _headline(result.metrics)}))
    return 0


def _copy(args: argparse.Namespace) -> int:
    """`upload` and `bundle`: the source located (fetched if a URI), written to the destination (a URI: through a
    temporary folder, then uploaded with its digest file last)."""
    source = locate_checkpoint(args.source)
    if args.command == "upload":
        if not is_uri(args.destination):
            raise MultitaskError(f"upload needs a storage URI (s3://..., file://...), not {args.destination!r}.")
        upload_checkpoint(source, args.destination)
    else:
        from multitask.bundle import bundle_checkpoint

        with tempfile.TemporaryDirectory(prefix="multitask-bundle-") as scratch:
            local = Path(scratch) / "bundle" if is_uri(args.destination) else Path(args.destination).expanduser()
            bundle_checkpoint(source, local)
            if is_uri(args.destination):
                upload_checkpoint(local, args.destination)
    print(json.dumps({"checkpoint": args.destination, "source": args.source}))
    return 0


# --- add-task: a new task's head on the served encoder (multitask/training/add_task.py) ------------------------------


def _add_task_parser(commands: argparse._SubParsersAction) -> None:
    add = commands.add_parser(
        "add-task",
        help="train a new task's head on a checkpoint's frozen served encoder; writes a head artifact",
        description="Train one head (Linear -> ReLU -> Dropout -> Linear) on the embeddings of the checkpoint's "
        "encoder, as the Encoder deployment serves them, with early stopping and temperature calibration on "
        "validation; write the head artifact (weights, labels, encoder fingerprint, metrics, report).",
    )
    add.add_argument("name", help="the task's name: a-z, 0-9, single underscores, at most 32 characters")
    add.add_argument("--data", required=True, help="JSON Lines or CSV with text and label: a path or storage URI")
    add.add_argument("--labels", nargs="+", default=None, help="the labels, in order (default: the file's, sorted)")
    add.add_argument("--validation", default=None, help="validation file (default: 20%% of each label held out)")
    add.add_argument("--test", default=None, help="a test file to report metrics on")
    add.add_argument("--checkpoint", required=True, help="the served checkpoint: folder or storage URI")
    add.add_argument("--output", required=True, help="the head artifact's folder or storage URI")
    add.add_argument(
        "--runtime", default="onnx-int8", choices=["onnx-int8", "onnx", "torch"], help="the Encoder's runtime"
    )
    add.add_argument(
        "--threads", type=int, default=1, help="encoder and torch threads (0: every core; 1 is faster on shared cores)"
    )
    add.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (~/.cache/multitask/embeddings)")
    add.add_argument("--onnx-cache-dir", type=Path, default=None, help="ONNX exports (~/.cache/multitask/onnx)")
    add.add_argument("--seed", type=int, default=13)
    add.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_task(args: argparse.Namespace) -> int:
    """Train into `--output`, or for a URI into a temporary folder, then upload it (its digest file last)."""
    from multitask.training.add_task import AddTaskSettings, add_task

    overrides = {"runtime": args.runtime, "threads": args.threads, "seed": args.seed}
    if args.cache_dir is not None:
        overrides["cache_dir"] = args.cache_dir
    if args.onnx_cache_dir is not None:
        overrides["onnx_cache_dir"] = args.onnx_cache_dir
    settings = AddTaskSettings(**overrides)
    with tempfile.TemporaryDirectory(prefix="multitask-head-") as scratch:
        to_storage = is_uri(args.output)
        output = Path(scratch) / checkpoint_name(args.output) if to_storage else Path(args.output).expanduser()
        result = add_task(
            args.name,
            args.data,
            args.checkpoint,
            output,
            labels=args.labels,
            validation=args.validation,
            test=args.test,
            settings=settings,
            progress=not args.no_progress,
        )
        if to_storage:
            upload_checkpoint(output, args.output)
    summary = {
        "head": args.output if to_storage else str(result.output_dir.resolve()),
        "task": args.name,
        "labels": list(result.manifest.task.labels),
        "encoder_fingerprint": result.manifest.encoder.fingerprint,
        "metrics": {split: {k: round(v, 4) for k, v in m.items()} for split, m in result.manifest.metrics.items()},
        "temperature": round(result.manifest.calibration["temperature"], 4),
        "epochs": result.manifest.training["epochs"],
        "seconds": {phase: round(s, 2) for phase, s in result.seconds.items()},
    }
    print(json.dumps(summary, indent=2))
    print(_serving_hint(args.name, summary["head"]), file=sys.stderr)
    return 0


def _serving_hint(task: str, head: str) -> str:
    """What to add to the Serve config to serve the new head (README, Add a task to a running service)."""
    app = head_app_name(task)
    deployment = head_deployment_name(task)
    return (
        f"To serve it, add to your Serve config a head application (options as the other heads') and its task:\n"
        f"  - name: {app}\n    route_prefix: null\n    import_path: graph:build_head\n"
        f"    args: {{task: {task}, head: {head}, encoder_app: encoder}}\n"
        f"    deployments: [{{name: {deployment}, ...}}]\n"
        f"and `{task}: {app}` under the Ingress's user_config.tasks; then `serve deploy` the config."
    )


def _classify(args: argparse.Namespace) -> int:
    """Run the job, then print its report (rows in and out, rows with an error) as JSON."""
    from pydantic import ValidationError

    from multitask.batch.pipeline import ClassifyJob, classify_dataset

    options = vars(args).copy()
    address, progress = options.pop("address"), not options.pop("no_progress")
    options.pop("command")
    try:
        job = ClassifyJob(**options, progress=progress)
    except ValidationError as exc:
        raise MultitaskError(f"classify: {exc}") from None
    print(json.dumps(classify_dataset(job, address).as_dict(), indent=2))
    return 0


def _headline(metrics: dict) -> dict:
    return {
        task: {
            split: {k: round(m[k], 4) for k in ("accuracy", "macro_f1", "macro_recall")} for split, m in splits.items()
        }
        for task, splits in metrics.items()
    }


if __name__ == "__main__":
    sys.exit(main())
