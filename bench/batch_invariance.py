"""Batch invariance of every CPU runtime, and what it costs: the shared topic and sentiment test splits, each text
encoded alone and inside random passes of 4 and 32 other test texts, on the shipped checkpoint.

    python bench/batch_invariance.py                      # every CPU runtime and the int8 alternatives -> bench/results/
    python bench/batch_invariance.py --runtimes onnx-int8 --limit 600

For each runtime: the largest change of a served confidence and the number of labels that change (alone vs in
passes), and the texts/s of one thread encoding the same texts in passes of 1, 4 and 32, as ratios to passes of 1.
`onnx-int8` is what the runtime serves for the shipped checkpoint: static int8 (activation scales fixed from its
`activation_ranges.json`), passes of any size. `int8-dynamic` is what it serves for a checkpoint without activation
ranges (dynamic int8, one text per pass: `max_pass_texts` 1), and `int8-dynamic-unlimited` the same file in shared
passes: what was served before, to show what the fixes fix. `int8-per-token` and `int8-blockwise` are the other
fixes measured (`bench/int8_alternatives.py`). Each row also gives the least cosine of a text's embedding (alone) to
the float32 onnx one, and its texts/s as a ratio to dynamic int8 one text per pass (`int8-dynamic`, passes of 1).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from int8_alternatives import alternative_runtime

from multitask.batch_invariance import measure_batch_invariance
from multitask.served_model import ServedModel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
RUNTIMES = ("onnx", "onnx-int8", "int8-dynamic", "int8-dynamic-unlimited", "int8-per-token", "int8-blockwise", "torch")
PASSES = (4, 32)


def test_texts(limit: int) -> list[str]:
    texts = []
    for task in ("topic", "sentiment"):
        path = DATA / task / "test.jsonl"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: this benchmark reads the shared test splits (../shared/data)")
        texts += [json.loads(line)["text"] for line in path.read_text().splitlines()][: limit or None]
    return texts


def load(checkpoint: str, name: str) -> ServedModel:
    if name.startswith("int8-"):  # an alternative, built from the float32 export
        float32 = ServedModel.load(checkpoint, runtime="onnx", device="cpu", dtype="float32")
        alternative = name.removeprefix("int8-").removesuffix("-unlimited")
        runtime = alternative_runtime(float32.runtime.directory, alternative)
        if name == "int8-dynamic":
            runtime.max_pass_texts = 1  # as served for a checkpoint without activation ranges
        return ServedModel(runtime, float32.heads)
    model = ServedModel.load(checkpoint, runtime=name, device="cpu", dtype="float32")
    model.runtime.set_threads(1)
    return model


def texts_per_second(model: ServedModel, texts: list[str], per_pass: int) -> float:
    """One thread, the texts in calls of 32 (the Encoder's calls under load), passes of at most `per_pass`."""
    start = time.perf_counter()
    for i in range(0, len(texts), 32):
        model.runtime.forward(texts[i : i + 32], max_batch=per_pass)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "default"))
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--limit", type=int, default=0, help="texts per split (0 = all)")
    parser.add_argument("--speed-texts", type=int, default=1500, help="texts per speed cell")
    parser.add_argument("--out", default=str(RESULTS / "batch_invariance"))
    args = parser.parse_args()
    texts = test_texts(args.limit)
    reference, _ = load(args.checkpoint, "onnx").runtime.forward(texts, max_batch=1)  # float32, each text alone
    rows = {}
    for name in args.runtimes:
        model = load(args.checkpoint, name)
        started = time.perf_counter()
        alone, _ = model.runtime.forward(texts, max_batch=1)
        report = measure_batch_invariance(model, texts, PASSES, alone=alone)
        speed = {size: texts_per_second(model, texts[: args.speed_texts], size) for size in (1, *PASSES)}
        cosine = (alone * reference).sum(1) / np.linalg.norm(alone, axis=1) / np.linalg.norm(reference, axis=1)
        rows[name] = {
            "report": report,
            "texts_per_s": speed,
            "least_cosine_to_float32": round(float(cosine.min()), 5),
            "seconds": time.perf_counter() - started,
        }
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    lines = [
        (
            f"Batch invariance on the shipped checkpoint: {len(texts)} test texts (topic and sentiment splits), each alone "
            "and in random passes; one thread. Command: `python bench/batch_invariance.py`."
        ),
        "",
        (
            "| runtime | least cosine to float32 | pass size | max confidence change (topic, sentiment) "
            "| labels that change (topic, sentiment) | texts/s in passes of this size | x passes of 1 | x int8-dynamic |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    served_int8 = rows["int8-dynamic"]["texts_per_s"][1] if "int8-dynamic" in rows else None
    for name, row in rows.items():
        label = "int8-dynamic, passes allowed (served before)" if name == "int8-dynamic-unlimited" else name
        base, cosine = row["texts_per_s"][1], row["least_cosine_to_float32"]

        def versus(rate: float) -> str:
            return f"{rate / served_int8:.2f}" if served_int8 else "-"

        lines.append(f"| {label} | {cosine:.4f} | 1 | - | - | {base:.0f} | 1.00 | {versus(base)} |")
        for size in PASSES:
            by_task = row["report"][size]
            changes = ", ".join(f"{r['max_confidence_change']:.1e}" for r in by_task.values())
            labels = ", ".join(f"{r['label_changes']} / {r['texts']}" for r in by_task.values())
            rate = row["texts_per_s"][size]
            lines.append(
                f"| {label} | {cosine:.4f} | {size} | {changes} | {labels} | {rate:.0f} | {rate / base:.2f} "
                f"| {versus(rate)} |"
            )
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
