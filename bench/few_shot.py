"""How good a head trained with `multitask add-task` is from few examples: topic and sentiment heads trained on the
served encoder's embeddings from 16, 64 and 256 examples per label and from the whole train split, against the
checkpoint's jointly trained heads and a logistic regression on the same embeddings.

    python bench/few_shot.py                       # ~25 min on one core of a 2-core CPU, cold embedding cache
    python bench/few_shot.py --seeds 1 --shots 16,all

Every head sees the same embeddings: the shared splits (../shared/data) through the checkpoint's encoder in the
runtime the CPU service serves with (`onnx-int8`), cached on disk (`multitask/training/embedding_cache.py`), so a
rerun embeds nothing. Rows:
  add-task k/label  k examples of each label drawn from train (`--seeds` draws), trained as `add-task` trains without
                    --validation: 20% of each label held out for early stopping and the temperature (`fit_head`)
  add-task all      the whole train split, the validation split as --validation
  logistic regr.    scikit-learn LogisticRegression (standardized inputs, class weights as add-task's) on the whole
                    train split, C picked on validation macro-F1
  joint             the checkpoint's own heads, trained jointly with its (LoRA) encoder on the same train splits
Test metrics: topic macro-F1 (topic/test) and accuracy on BBC titles (topic_bbc/test, 5 of the 6 labels), sentiment
macro-recall (sentiment/test, TweetEval's metric). Resumable: cells already in bench/results/few_shot.json are kept
(`--rerun` drops them). Writes bench/results/few_shot.json and few_shot.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent

from multitask.checkpoint.manifest import read_manifest
from multitask.config import TaskSpec
from multitask.data import TaskDataset, read_task_file
from multitask.numpy_head import NumpyHead
from multitask.runtime.select import select_runtime
from multitask.training.add_task import AddTaskSettings, fit_head, held_out_rows
from multitask.training.class_weights import class_weights
from multitask.training.embedding_cache import cached_runtime_embeddings
from multitask.training.metrics import classification_metrics

DATA = REPO.parent / "shared" / "data"
EVAL_SETS = {
    "topic": {"test": "topic/test.jsonl", "bbc": "topic_bbc/test.jsonl"},
    "sentiment": {"test": "sentiment/test.jsonl"},
}
HEADLINE = {"topic": [("test", "macro_f1"), ("bbc", "accuracy")], "sentiment": [("test", "macro_recall")]}
C_GRID = (0.001, 0.01, 0.1)


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "default"))
    parser.add_argument("--runtime", default="onnx-int8")
    parser.add_argument("--threads", type=int, default=1, help="encoder and torch threads")
    parser.add_argument("--shots", default="16,64,256,all", help="examples per label, or all")
    parser.add_argument("--seeds", type=int, default=3, help="draws of the k examples per label")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/multitask/embeddings"))
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--rerun", action="store_true", help="drop the cells of an earlier run")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} is missing: this benchmark needs the shared data sets.", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    out_json = args.out_dir / "few_shot.json"
    results = {} if args.rerun or not out_json.is_file() else json.loads(out_json.read_text())
    cells = results.setdefault("cells", {})
    manifest = read_manifest(args.checkpoint)
    runtime = select_runtime(args.checkpoint, args.runtime, "cpu")
    runtime.set_threads(args.threads)
    results.update(
        checkpoint=os.path.relpath(args.checkpoint, REPO),
        fingerprint=runtime.fingerprint,
        runtime=runtime.describe(),
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s)",
    )
    cache_dir = args.cache_dir.expanduser()
    settings = AddTaskSettings(threads=args.threads)

    def save() -> None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        results["date"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}"
        out_json.write_text(json.dumps(results, indent=1) + "\n")

    for task in ("topic", "sentiment"):
        embedded = Embedded.load(manifest.model.task(task), runtime, cache_dir, settings.embed_batch_size)
        wanted = {f"{task}/joint": partial(joint_cell, embedded, args.checkpoint, runtime.fingerprint)}
        for shots in args.shots.split(","):
            for seed in range(1 if shots == "all" else args.seeds):
                wanted[f"{task}/{shots}/{seed}"] = partial(
                    add_task_cell, embedded, shots, seed, settings, manifest.model.dropout
                )
        wanted[f"{task}/logreg"] = partial(logreg_cell, embedded, settings)
        for key, run in wanted.items():
            if key not in cells:
                cells[key] = run()
                log(f"{key}: {cells[key]}")
                save()
    save()
    table = render(results, args.shots.split(","))
    (args.out_dir / "few_shot.md").write_text(table)
    print(table)
    return 0


class Embedded:
    """One task's splits through the served runtime: the datasets, their (n, embedding_dim) embeddings, labels."""

    def __init__(self, spec: TaskSpec, splits: dict[str, tuple[TaskDataset, np.ndarray]]):
        self.spec = spec
        self.datasets = {split: dataset for split, (dataset, _) in splits.items()}
        self.x = {split: x for split, (_, x) in splits.items()}
        self.y = {split: np.array([e.label for e in d.examples]) for split, d in self.datasets.items()}

    @classmethod
    def load(cls, spec: TaskSpec, runtime, cache_dir: Path, batch_size: int) -> Embedded:
        files = {"train": f"{spec.name}/train.jsonl", "validation": f"{spec.name}/validation.jsonl"}
        splits = {}
        for split, name in {**files, **EVAL_SETS[spec.name]}.items():
            dataset = read_task_file(DATA / name, spec)
            started = time.perf_counter()
            splits[split] = (dataset, cached_runtime_embeddings(runtime, dataset, cache_dir, batch_size))
            log(f"{spec.name}/{split}: {len(dataset)} embeddings in {time.perf_counter() - started:.1f} s (~0: cached)")
        return cls(spec, splits)

    def evaluate(self, probabilities_of) -> dict:
        """Headline metrics on each evaluation set of `probabilities_of(embeddings)`."""
        return {
            split: _headline(classification_metrics(self.y[split], probabilities_of(self.x[split]), self.spec.labels))
            for split in EVAL_SETS[self.spec.name]
        }

    def weights(self, rows) -> torch.Tensor | None:
        """add-task's class weights for these train rows."""
        examples = tuple(self.datasets["train"].examples[i] for i in rows)
        dataset = TaskDataset(self.spec.name, examples, "train")
        return class_weights(dataset, len(self.spec.labels), AddTaskSettings().class_weighting)


def joint_cell(embedded: Embedded, checkpoint: str, fingerprint: str) -> dict:
    head = NumpyHead.load(checkpoint, embedded.spec.name, fingerprint)
    return {"metrics": embedded.evaluate(head.probabilities), "train_seconds": None}


def add_task_cell(embedded: Embedded, shots: str, seed: int, settings: AddTaskSettings, dropout: float) -> dict:
    """A head trained by `fit_head`: on all of train with the validation split, or on `shots` per label drawn from
    train with a stratified share of them held out (as add-task without --validation)."""
    num_labels = len(embedded.spec.labels)
    if shots == "all":
        train_rows = list(range(len(embedded.y["train"])))
        valid_x, valid_y = embedded.x["validation"], embedded.y["validation"]
    else:
        drawn = _draw(embedded.y["train"], int(shots), num_labels, seed)
        held = held_out_rows(embedded.y["train"][drawn], num_labels, settings.validation_share, seed)
        train_rows = [row for i, row in enumerate(drawn) if i not in held]
        valid_rows = [row for i, row in enumerate(drawn) if i in held]
        valid_x, valid_y = embedded.x["train"][valid_rows], embedded.y["train"][valid_rows]
    started = time.perf_counter()
    fitted = fit_head(
        embedded.spec,
        embedded.x["train"][train_rows],
        embedded.y["train"][train_rows],
        valid_x,
        valid_y,
        settings.model_copy(update={"seed": settings.seed + seed}),
        dropout=dropout,
        weights=embedded.weights(train_rows),
    )
    return {
        "metrics": embedded.evaluate(fitted.probabilities),
        "train_examples": len(train_rows),
        "validation_examples": len(valid_y),
        "epochs": fitted.epochs,
        "train_seconds": round(time.perf_counter() - started, 2),
    }


def logreg_cell(embedded: Embedded, settings: AddTaskSettings) -> dict:
    """LogisticRegression on standardized embeddings, class weights as add-task's, C picked on validation macro-F1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    weights = dict(enumerate(embedded.weights(range(len(embedded.y["train"]))).tolist()))
    best = None
    for c in C_GRID:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, class_weight=weights))
        model.fit(embedded.x["train"], embedded.y["train"])
        probabilities = model.predict_proba(embedded.x["validation"])
        score = classification_metrics(embedded.y["validation"], probabilities, embedded.spec.labels)["macro_f1"]
        log(f"{embedded.spec.name} logistic regression C={c}: validation macro-F1 {score:.4f}")
        if best is None or score > best[0]:
            best = (score, c, model)
    return {
        "metrics": embedded.evaluate(best[2].predict_proba),
        "C": best[1],
        "validation_macro_f1": round(best[0], 4),
        "train_seconds": round(time.perf_counter() - started, 2),
    }


def _draw(labels: np.ndarray, shots: int, num_labels: int, seed: int) -> list[int]:
    """`shots` random row indices of each label (all of a label that has fewer), in file order."""
    rng = random.Random(seed)
    rows: list[int] = []
    for label in range(num_labels):
        indices = np.flatnonzero(labels == label).tolist()
        rows += rng.sample(indices, min(shots, len(indices)))
    return sorted(rows)


def _headline(metrics: dict) -> dict:
    return {k: round(metrics[k], 4) for k in ("examples", "accuracy", "macro_f1", "macro_recall", "ece")}


def render(results: dict, shots: list[str]) -> str:
    cells = results["cells"]

    def cell(prefix: str, split: str, metric: str) -> str:
        values = [c["metrics"][split][metric] for k, c in cells.items() if k.rsplit("/", 1)[0] == prefix or k == prefix]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    def seconds(prefix: str) -> str:
        values = [c["train_seconds"] for k, c in cells.items() if k.rsplit("/", 1)[0] == prefix or k == prefix]
        values = [v for v in values if v is not None]
        return f"{np.mean(values):.1f}" if values else "-"

    rows = [(f"add-task, {s} per label" if s != "all" else "add-task, all", s) for s in shots]
    rows += [("logistic regression, all", "logreg"), ("joint (checkpoint's heads)", "joint")]
    lines = [
        f"# Few-shot heads on the served encoder ({results['date']})",
        "",
        (
            f"Checkpoint `{results['checkpoint']}` (encoder fingerprint {results['fingerprint']}), embeddings "
            f"through runtime {results['runtime'].get('runtime')} / {results['runtime'].get('dtype')}; "
            f"{results['machine']}. Command: `python bench/few_shot.py`. k per label: mean ± sd over draws."
        ),
        "",
        "| head | topic test macro-F1 | topic BBC accuracy | sentiment test macro-recall | train s (topic / sentiment) |",
        "|---|---:|---:|---:|---:|",
    ]
    for title, suffix in rows:
        topic, sentiment = f"topic/{suffix}", f"sentiment/{suffix}"
        lines.append(
            f"| {title} | {cell(topic, 'test', 'macro_f1')} | {cell(topic, 'bbc', 'accuracy')} "
            f"| {cell(sentiment, 'test', 'macro_recall')} | {seconds(topic)} / {seconds(sentiment)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
