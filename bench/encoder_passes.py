"""The Encoder's CPU settings, measured: onnxruntime threads x texts per pass, on real sentences.

    python bench/encoder_passes.py                       # the shipped checkpoint, int8 (the local config's encoder)
    python bench/encoder_passes.py --precision float32 --seconds 3

What one Encoder replica does with a call of N texts (`OnnxEncoderRuntime.encode`: tokenize, sort by length, run
passes of at most P texts), in this process alone, for N = 1, 10 and 32 (32 clients x 1 text reach the Encoder in
calls of ~10) and every P up to N, with 1 and 2 intra-op threads. The int8 runtime is the shipped checkpoint's
static int8 (fixed activation scales: passes of any size). Each cell runs for `--seconds` and prints texts/s, the
CPU time per text (this process's user + system time: what the other replicas on the same cores lose) and both as
ratios to two baselines measured in the same run, 1 thread each: `before`, what the local config served before
int8 was made batch-invariant (dynamic int8 in passes of up to 4, whose answers moved with batch mates), and
`dynamic, alone`, what a checkpoint without activation ranges gets (dynamic int8, one text per pass). The sentences
are the shared topic and sentiment test splits (`bench/loadgen.py`), synthetic ones without ../shared/data.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from int8_alternatives import alternative_runtime
from loadgen import load_texts

from multitask.runtime.onnx_runtime import OnnxEncoderRuntime

BASELINE = ("before", 32, 4)  # dynamic int8, 1 thread, texts per call, texts per pass (several allowed)
DYNAMIC_ALONE = ("dynamic, alone", 32, 1)  # dynamic int8, 1 thread, one text per pass


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(runtime: OnnxEncoderRuntime, texts: list[str], call: int, per_pass: int, seconds: float) -> tuple:
    """(texts/s, CPU ms per text) of `encode` calls of `call` texts in passes of at most `per_pass`."""
    done = start_at = 0
    started, cpu_start = time.perf_counter(), cpu_seconds()
    while time.perf_counter() - started < seconds:
        runtime.encode(texts[start_at : start_at + call], max_batch=per_pass)
        done += call
        start_at = (start_at + call) % (len(texts) - call)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_start
    return done / wall, 1000 * cpu / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "default"))
    parser.add_argument("--precision", choices=["int8", "float32"], default="int8")
    parser.add_argument("--seconds", type=float, default=2.0, help="per cell")
    args = parser.parse_args()
    texts = load_texts()
    results = {}
    float32 = OnnxEncoderRuntime.load(args.checkpoint, threads=1)
    dynamic = alternative_runtime(float32.directory, "dynamic")  # one thread, passes unlimited
    dynamic.encode(texts[:32])  # warm-up
    for name, call, per_pass in (BASELINE, DYNAMIC_ALONE):
        results[name, call, per_pass] = measure(dynamic, texts, call, per_pass, args.seconds)
    for threads in (1, 2):
        runtime = OnnxEncoderRuntime.load(args.checkpoint, threads=threads, precision=args.precision)
        runtime.encode(texts[:32])  # warm-up
        for call in (1, 10, 32):
            for per_pass in sorted({min(p, runtime.max_pass_texts or p) for p in (1, 4, 8, 16, 32) if p <= call}):
                results[threads, call, per_pass] = measure(runtime, texts, call, per_pass, args.seconds)
    base_rate, base_cpu = results[BASELINE]
    alone_rate, alone_cpu = results[DYNAMIC_ALONE]
    print(f"{args.precision} encoder, {args.checkpoint}; baselines (1 thread, dynamic int8): before = passes of "
          f"{BASELINE[2]}, dynamic alone = one text per pass")  # fmt: skip
    print(
        "| threads | texts per call | texts per pass | texts/s | x before | x dynamic alone | CPU ms/text | x before "
        "| x dynamic alone |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (threads, call, per_pass), (rate, cpu) in results.items():
        print(
            f"| {threads} | {call} | {per_pass} | {rate:.0f} | {rate / base_rate:.2f} | {rate / alone_rate:.2f} "
            f"| {cpu:.2f} | {cpu / base_cpu:.2f} | {cpu / alone_cpu:.2f} |"
        )


if __name__ == "__main__":
    main()
