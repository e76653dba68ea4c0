"""How long `multitask add-task` takes on a 10,000-example file, end to end, and where the time goes.

    python bench/add_task_time.py                  # 10,000 sentiment train rows, one thread, cold embedding cache
    python bench/add_task_time.py --threads 0 --rows 5000

Writes the rows (drawn at random from ../shared/data/sentiment/train.jsonl, seed 13) to a file, then runs the
command as a user would, in a fresh process with an empty embedding cache (the ONNX export of the checkpoint is
made first, as `make run` or the Encoder's first start makes it), and reads the phases the command reports: reading
the data, embedding (the onnx-int8 runtime), training (with early stopping), metrics and report, plus the process's
start (imports) as the rest of the wall time. Writes bench/results/add_task_time.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "sentiment" / "train.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1, help="add-task --threads (0: every core)")
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "default"))
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"{DATA} is missing: this benchmark needs the shared data sets.", file=sys.stderr)
        return 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    python = sys.executable
    subprocess.run(  # the ONNX export, made once per machine (not part of add-task's time)
        [
            python,
            "-c",
            f"from multitask.runtime.onnx_cache import ensure_export; ensure_export({args.checkpoint!r}, precision='int8')",
        ],
        check=True,
        cwd=REPO,
        env=env,
    )
    lines = DATA.read_text().splitlines()
    rows = random.Random(13).sample(lines, args.rows)
    with tempfile.TemporaryDirectory(prefix="add-task-time-") as scratch:
        data = Path(scratch) / f"sentiment_{args.rows}.jsonl"
        data.write_text("\n".join(rows) + "\n")
        command = [
            python, "-m", "multitask.cli", "add-task", "tweets", "--data", str(data), "--checkpoint", args.checkpoint,
            "--output", str(Path(scratch) / "head"), "--cache-dir", str(Path(scratch) / "embeddings"),
            "--threads", str(args.threads), "--no-progress",
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, check=True, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    summary = json.loads(done.stdout)
    phases = summary["seconds"]
    result = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), --threads {args.threads}",
        "rows": args.rows,
        "wall_s": round(wall, 1),
        "phases_s": {**phases, "process start (imports)": round(wall - phases["total"], 2)},
        "epochs": summary["epochs"],
        "metrics": summary["metrics"],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "add_task_time.json").write_text(json.dumps(result, indent=1) + "\n")
    table = [
        f"# add-task on {args.rows:,} sentiment rows ({result['date']}; {result['machine']})",
        "",
        (
            f"Command: `python bench/add_task_time.py --rows {args.rows} --threads {args.threads}`. Wall time of the "
            f"`multitask add-task` process: **{wall:.1f} s**; best epoch {summary['epochs']}; validation macro-F1 "
            f"{summary['metrics']['validation']['macro_f1']:.3f} (held-out 20%)."
        ),
        "",
        "| phase | seconds | share |",
        "|---|---:|---:|",
    ]
    for phase, seconds in result["phases_s"].items():
        if phase != "total":
            table.append(f"| {phase} | {seconds:.1f} | {seconds / wall:.0%} |")
    text = "\n".join(table) + "\n"
    (args.out_dir / "add_task_time.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
