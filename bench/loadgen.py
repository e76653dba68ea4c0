"""A bounded, closed-loop async load generator: N clients, each sending its next request when the last one answered.

    stats = await closed_loop(call, texts, concurrency=32, per_request=8, duration_s=10, max_requests=20000)

`call(batch)` is any coroutine that sends one request of `batch` texts and returns True on success (HTTP on
127.0.0.1, a Serve handle, an in-process model). A run stops at `duration_s` or after `max_requests`, whichever
comes first, so no run is unbounded. Used by `bench/serving_bench.py`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def load_texts(limit: int = 2000) -> list[str]:
    """Real sentences (topic and sentiment test splits), shuffled with a fixed seed; synthetic ones if absent."""
    texts = []
    for path in (DATA / "topic" / "test.jsonl", DATA / "sentiment" / "test.jsonl"):
        if path.is_file():
            texts += [json.loads(line)["text"] for line in path.read_text().splitlines()[:limit]]
    if not texts:
        texts = [f"Sentence {i} about markets, films, elections and football." for i in range(limit)]
    random.Random(13).shuffle(texts)
    return texts


async def closed_loop(
    call: Callable[[list[str]], Awaitable[bool]],
    texts: list[str],
    concurrency: int,
    per_request: int,
    duration_s: float,
    max_requests: int = 100_000,
) -> dict:
    """Run `concurrency` clients for `duration_s` (or `max_requests` requests in all); texts/s and latency."""
    import asyncio

    latencies: list[float] = []
    errors = 0
    sent = 0
    start = time.perf_counter()
    stop_at = start + duration_s

    async def client(seed: int) -> None:
        nonlocal errors, sent
        rng = random.Random(seed)
        while time.perf_counter() < stop_at and sent < max_requests:
            sent += 1
            batch = rng.sample(texts, per_request)
            began = time.perf_counter()
            try:
                ok = await call(batch)
            except Exception:  # noqa: BLE001 - a failed request is counted, the run goes on
                ok = False
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

    await asyncio.gather(*(client(1000 + i) for i in range(concurrency)))
    wall = time.perf_counter() - start
    return summarize(latencies, errors, wall, concurrency, per_request)


def summarize(latencies: list[float], errors: int, wall: float, concurrency: int, per_request: int) -> dict:
    if latencies:
        p50, p99 = (round(float(ms), 1) for ms in np.percentile(latencies, [50, 99]) * 1000)
        mean = round(float(np.mean(latencies)) * 1000, 1)
    else:
        p50 = p99 = mean = None
    return {
        "concurrency": concurrency,
        "texts_per_request": per_request,
        "requests": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 2),
        "texts_per_s": round(len(latencies) * per_request / wall, 1),
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": mean,
    }
