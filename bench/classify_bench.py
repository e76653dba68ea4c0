"""`multitask classify` (Ray Data) against the bare in-process runtime, and its memory at two input sizes.

    python bench/classify_bench.py                                   # 200,000 texts; memory at 100k and 1M rows
    python bench/classify_bench.py --texts 20000 --memory-rows 20000,100000 --out bench/results/classify_bench.md

Texts/s. The same N texts (the shared topic and sentiment test sentences, cycled; synthetic ones without
../shared/data) go (a) through the bare inference core in this process: the checkpoint's runtime
(`select_runtime`, all cores as intra-op threads, onnxruntime's default) on batches of `--batch-size` with the
same pass limits, then the numpy heads; the texts already in memory, nothing read or written; and (b) through
`multitask classify` on a new local Ray: a Parquet file in, Parquet out. The ratio is (b)/(a), both measured in the
same run; (b) counts the whole job (Ray Data's start, the actors' model loading, reading and writing), and also
the job's rows per second past its first output file is not separable, so that is what it is.

Memory. `multitask classify` on generated Parquet inputs of each `--memory-rows` size, with the peak of the summed
RSS and PSS of the driver and every process under it (the local Ray's raylet, GCS and workers), sampled every
0.5 s: streaming means the peak does not grow with the input.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from typing import Self

import pyarrow as pa
import pyarrow.parquet as pq
from loadgen import load_texts

from multitask.batch.pipeline import ClassifyJob, classify_dataset
from multitask.batch.rows import ResultColumns, classify_table, encode_table
from multitask.numpy_head import NumpyHead
from multitask.runtime.select import select_runtime

CHECKPOINT = ROOT / "checkpoints" / "default"


class PeakMemory:
    """Peak summed RSS and PSS (MB) of this process and all its descendants, sampled in a thread."""

    def __init__(self, every_s: float = 0.5):
        self.every_s, self.rss_mb, self.pss_mb = every_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        root = psutil.Process()
        while not self._stop.is_set():
            rss = pss = 0
            for proc in [root, *root.children(recursive=True)]:
                try:
                    info = proc.memory_full_info()
                except psutil.Error:
                    continue
                rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
            self.rss_mb, self.pss_mb = max(self.rss_mb, rss / 2**20), max(self.pss_mb, pss / 2**20)
            self._stop.wait(self.every_s)


def texts_of(n: int) -> list[str]:
    base = load_texts()
    return [base[i % len(base)] for i in range(n)]


def write_input(path: Path, n: int) -> Path:
    """`n` rows (id, text) in row groups of 10,000, written without holding them all."""
    base = load_texts()
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as writer:
        for start in range(0, n, 10_000):
            ids = list(range(start, min(n, start + 10_000)))
            writer.write_table(pa.table({"id": ids, "text": [base[i % len(base)] for i in ids]}))
    return path


def bare(texts: list[str], args: argparse.Namespace) -> dict:
    """The inference core alone, in this process: texts/s and this process's peak RSS."""
    runtime = select_runtime(CHECKPOINT, args.runtime, "cpu")
    runtime.set_threads(0)  # every core (onnxruntime's default)
    heads = {task: NumpyHead.load(CHECKPOINT, task) for task in ("topic", "sentiment")}
    columns = ResultColumns(("topic", "sentiment"))

    def forward(batch: list[str]):
        return runtime.forward(batch, max_batch=args.max_batch_texts, max_tokens=args.max_batch_tokens)

    forward(texts[:64])  # warm-up
    with PeakMemory() as memory:
        start = time.perf_counter()
        for i in range(0, len(texts), args.batch_size):
            table = pa.table({"text": texts[i : i + args.batch_size]})
            classify_table(encode_table(table, "text", forward, runtime.embedding_dim), heads, columns)
        seconds = time.perf_counter() - start
    return {"texts_per_s": len(texts) / seconds, "seconds": seconds, "peak_rss_mb": memory.rss_mb}


def classify(path: Path, out: Path, args: argparse.Namespace) -> dict:
    job = ClassifyJob(
        input=str(path),
        output=str(out),
        runtime=args.runtime,
        batch_size=args.batch_size,
        max_batch_texts=args.max_batch_texts,
        max_batch_tokens=args.max_batch_tokens,
        progress=False,
    )
    with PeakMemory() as memory:
        start = time.perf_counter()
        report = classify_dataset(job)
        seconds = time.perf_counter() - start
    assert report.rows_out == report.rows_in, report
    return {
        "rows": report.rows_out,
        "texts_per_s": report.rows_out / seconds,
        "seconds": seconds,
        "job_seconds": report.seconds,
        "encoders": report.encoders,
        "peak_rss_mb": memory.rss_mb,
        "peak_pss_mb": memory.pss_mb,
    }


def markdown(args: argparse.Namespace, bare_result: dict, ray_result: dict, memory: dict[int, dict]) -> str:
    load = os.getloadavg()
    lines = [
        "# `multitask classify` benchmark",
        "",
        (
            f"`{' '.join(sys.argv)}`; {os.cpu_count()} cores, load average {load[0]:.1f} at the end (a shared machine: "
            f"timings are noisy); runtime {args.runtime}, batches of {args.batch_size} rows, passes of at most "
            f"{args.max_batch_texts} texts / {args.max_batch_tokens} tokens."
        ),
        "",
        f"## Texts/s over {args.texts:,} texts",
        "",
        "| path | texts/s | seconds | ratio to bare |",
        "|---|---|---|---|",
        (
            f"| bare runtime in-process (all cores as threads, texts in memory) | {bare_result['texts_per_s']:.0f} | "
            f"{bare_result['seconds']:.1f} | 1.00 |"
        ),
        (
            f"| `multitask classify`, Parquet in and out, {ray_result['encoders']} encoder actors (whole job, Ray start "
            f"included) | {ray_result['texts_per_s']:.0f} | {ray_result['seconds']:.1f} | "
            f"{ray_result['texts_per_s'] / bare_result['texts_per_s']:.2f} |"
        ),
    ]
    if memory:
        lines += [
            "",
            "## Peak memory (driver + local Ray's processes, summed)",
            "",
            "| input rows | peak RSS MB | peak PSS MB | texts/s | seconds |",
            "|---|---|---|---|---|",
        ]
        for rows, result in memory.items():
            lines.append(
                f"| {rows:,} | {result['peak_rss_mb']:.0f} | {result['peak_pss_mb']:.0f} | "
                f"{result['texts_per_s']:.0f} | {result['seconds']:.0f} |"
            )
        sizes = sorted(memory)
        if len(sizes) > 1:
            small, large = memory[sizes[0]], memory[sizes[-1]]
            lines += [
                "",
                (
                    f"Peak RSS at {sizes[-1]:,} rows / at {sizes[0]:,}: "
                    f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x (PSS {large['peak_pss_mb'] / small['peak_pss_mb']:.2f}x)."
                ),
            ]
            marginal = (large["rows"] - small["rows"]) / (large["seconds"] - small["seconds"])
            lines += [
                "",
                (
                    f"Marginal rate between the two sizes (the start-up cost taken out): {marginal:.0f} texts/s, "
                    f"{marginal / bare_result['texts_per_s']:.2f}x bare."
                ),
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--memory-rows", default="100000,1000000", help="comma-separated input sizes; '' = none")
    parser.add_argument("--runtime", default="onnx-int8", help="the local config's encoder")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-batch-texts", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "classify_bench.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="classify-bench-") as scratch:
        scratch = Path(scratch)
        bare_result = bare(texts_of(args.texts), args)
        print(f"bare: {bare_result}", flush=True)
        ray_result = classify(write_input(scratch / "in.parquet", args.texts), scratch / "out", args)
        print(f"classify: {ray_result}", flush=True)
        memory = {}
        for rows in [int(r) for r in args.memory_rows.split(",") if r.strip()]:
            if rows == args.texts:  # the run above was that size
                memory[rows] = ray_result
                continue
            path = write_input(scratch / f"in-{rows}.parquet", rows)
            memory[rows] = classify(path, scratch / f"out-{rows}", args)
            print(f"memory {rows}: {memory[rows]}", flush=True)
            path.unlink()
    text = markdown(args, bare_result, ray_result, memory)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
