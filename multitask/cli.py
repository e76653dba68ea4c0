"""The `multitask` command: train, evaluate and predict.

    multitask train --config configs/default.yaml [--num-workers 2 [--use-gpu]]
    multitask evaluate --checkpoint checkpoints/default --task topic --data test.jsonl [--plots-dir DIR]
    multitask predict --checkpoint checkpoints/default "the senate passed the bill" "what a great day"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from multitask.errors import MultitaskError

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "default"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multitask", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a checkpoint from a YAML config")
    train.add_argument("--config", required=True, type=Path, help="training config (YAML)")
    train.add_argument("--num-workers", type=int, default=0, help="run on Ray Train with N DDP workers")
    train.add_argument("--use-gpu", action="store_true", help="with --num-workers: one GPU per worker")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("evaluate", help="metrics of a checkpoint on a labelled file (JSON to stdout)")
    evaluate.add_argument("--checkpoint", required=True, type=Path)
    evaluate.add_argument("--task", required=True)
    evaluate.add_argument("--data", required=True, type=Path, help="JSON Lines or CSV with text and label")
    evaluate.add_argument("--plots-dir", type=Path, default=None, help="write a confusion-matrix PNG here")

    predict = commands.add_parser("predict", help="classify texts given on the command line (JSON to stdout)")
    predict.add_argument("texts", nargs="+")
    predict.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    predict.add_argument("--task", action="append", dest="tasks", help="only this task (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            from multitask.evaluate import evaluate_file

            print(json.dumps(evaluate_file(args.checkpoint, args.task, args.data, args.plots_dir), indent=2))
            return 0
        from multitask.checkpoint import load_model

        results = load_model(args.checkpoint).predict(args.texts, tasks=args.tasks)
        print(json.dumps([{"text": t, **r} for t, r in zip(args.texts, results)], indent=2))
        return 0
    except (MultitaskError, KeyError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from multitask.training.config import load_train_config

    config = load_train_config(args.config)
    if args.num_workers > 0:
        from multitask.training.ray_train import train_on_ray

        result = train_on_ray(config, num_workers=args.num_workers, use_gpu=args.use_gpu)
    else:
        from multitask.training.trainer import train

        result = train(config, progress=not args.no_progress)
    print(json.dumps({"checkpoint": str(result.output_dir), "metrics": _headline(result.metrics)}, indent=2))
    return 0


def _headline(metrics: dict) -> dict:
    return {
        task: {split: {k: round(m[k], 4) for k in ("accuracy", "macro_f1", "macro_recall")} for split, m in splits.items()}
        for task, splits in metrics.items()
    }


if __name__ == "__main__":
    sys.exit(main())
