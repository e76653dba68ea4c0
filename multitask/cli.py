"""The `multitask` command: train, evaluate, predict, and move checkpoints to storage.

    multitask train --config configs/default.yaml [--output s3://bucket/ckpt] [--num-workers 2 [--use-gpu]
                    [--storage-path s3://bucket/ray-train]]
    multitask wise-ft --config configs/default.yaml --checkpoint checkpoints/default   # WiSE-FT after the fact
    multitask evaluate --checkpoint checkpoints/default --task topic --data test.jsonl [--plots-dir DIR]
    multitask predict --checkpoint checkpoints/default "the senate passed the bill" "what a great day"
    multitask upload checkpoints/default s3://bucket/ckpt
    multitask bundle checkpoints/default s3://bucket/ckpt-bundled     # with the encoder's weights and tokenizer

A checkpoint is a local path or a storage URI (s3://, gs://, file://, ...) wherever one is asked for; S3 takes its
endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from multitask.errors import MultitaskError
from multitask.storage import checkpoint_name, is_uri, locate_checkpoint, upload_checkpoint

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
    return parser


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


def _headline(metrics: dict) -> dict:
    return {
        task: {
            split: {k: round(m[k], 4) for k in ("accuracy", "macro_f1", "macro_recall")} for split, m in splits.items()
        }
        for task, splits in metrics.items()
    }


if __name__ == "__main__":
    sys.exit(main())
