"""Serving baseline: texts/s and request latency with N concurrent HTTP clients on 127.0.0.1.

    python bench/serving_load.py                    # deploys serve_config.local.yaml in-process (free port), measures, stops
    python bench/serving_load.py --url http://127.0.0.1:8000   # against a service that is already running
    python bench/serving_load.py --concurrency 32 --duration 30 --texts-per-request 1 8

Each client sends `POST /v1/predict` (both tasks) in a closed loop: the next request leaves when the previous one
answered. Texts are real sentences from ../shared/data (topic and sentiment test splits). When the script deploys the graph
itself it also reads the encoder's batch counters, to show how many texts each forward pass carried. Results go to
bench/results/serving_baseline.{json,md}. The load generator runs on the same machine as the service and takes
CPU from it; the numbers are a baseline for this machine, not a capacity figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # graph.py, when run from a checkout that is not pip-installed
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


def load_texts(limit: int = 2000) -> list[str]:
    texts = []
    for path in (DATA / "topic" / "test.jsonl", DATA / "sentiment" / "test.jsonl"):
        if path.is_file():
            texts += [json.loads(line)["text"] for line in path.read_text().splitlines()[:limit]]
    if not texts:
        texts = [f"Sentence {i} about markets, films, elections and football." for i in range(limit)]
    random.Random(13).shuffle(texts)
    return texts


async def client(session, url: str, texts: list[str], per_request: int, stop_at: float, seed: int, out: dict) -> None:
    rng = random.Random(seed)
    while time.perf_counter() < stop_at:
        batch = rng.sample(texts, per_request)
        start = time.perf_counter()
        async with session.post(f"{url}/v1/predict", json={"texts": batch}) as response:
            await response.read()
            status = response.status
        elapsed = time.perf_counter() - start
        if status == 200:
            out["latencies"].append(elapsed)
            out["texts"] += per_request
        else:
            out["errors"][status] = out["errors"].get(status, 0) + 1


async def run_load(url: str, texts: list[str], concurrency: int, duration: float, per_request: int) -> dict:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        out = {"latencies": [], "texts": 0, "errors": {}}
        start = time.perf_counter()
        stop_at = start + duration
        await asyncio.gather(
            *(client(session, url, texts, per_request, stop_at, 100 + i, out) for i in range(concurrency))
        )
        wall = time.perf_counter() - start
    latencies = sorted(out["latencies"])
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None
    return {
        "concurrency": concurrency,
        "texts_per_request": per_request,
        "duration_s": round(wall, 2),
        "requests": len(latencies),
        "errors": out["errors"],
        "texts_per_s": round(out["texts"] / wall, 1),
        "requests_per_s": round(len(latencies) / wall, 1),
        "latency_ms": {
            "p50": round(pct(0.50), 1) if latencies else None,
            "p90": round(pct(0.90), 1) if latencies else None,
            "p99": round(pct(0.99), 1) if latencies else None,
            "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deploy(config_path: Path) -> str:
    """Ray on this machine's cores, Serve on a free port of 127.0.0.1, the config's application; returns the URL."""
    import ray
    from ray import serve

    from graph import app_from_config

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    port = free_port()
    app, http_options = app_from_config(config_path)
    serve.start(http_options={**http_options, "host": "127.0.0.1", "port": port})
    serve.run(app, name="multitask", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def encoder_stats() -> dict:
    from ray import serve

    return serve.get_deployment_handle("Encoder", app_name="multitask").stats.remote().result()


def write_results(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving_baseline.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Serving baseline",
        "",
        f"{results['machine']}; config `{results['config']}`; `POST /v1/predict`, both tasks, closed-loop clients.",
        "",
        "| clients | texts/request | texts/s | requests/s | p50 ms | p90 ms | p99 ms | mean encoder batch | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in results["runs"]:
        ms = run["latency_ms"]
        lines.append(
            f"| {run['concurrency']} | {run['texts_per_request']} | {run['texts_per_s']} | {run['requests_per_s']} "
            f"| {ms['p50']} | {ms['p90']} | {ms['p99']} | {run.get('encoder', {}).get('mean_batch', '-')} "
            f"| {run['errors'] or 'none'} |"
        )
    (RESULTS / "serving_baseline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service; default: start serve_config.local.yaml on a free port")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.local.yaml")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run, after a 3 s warm-up")
    parser.add_argument("--texts-per-request", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    in_process = args.url is None
    url = deploy(args.config) if in_process else args.url
    runs = []
    try:
        texts = load_texts()
        for per_request in args.texts_per_request:
            asyncio.run(run_load(url, texts, args.concurrency, 3.0, per_request))  # warm-up, not counted
            before = encoder_stats() if in_process else None
            run = asyncio.run(run_load(url, texts, args.concurrency, args.duration, per_request))
            if in_process:
                after = encoder_stats()
                batches, encoded = after["batches"] - before["batches"], after["texts"] - before["texts"]
                run["encoder"] = {"batches": batches, "mean_batch": round(encoded / max(batches, 1), 1)}
            runs.append(run)
            print(json.dumps(run))
    finally:
        if in_process:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load} at the end"
    write_results({"machine": machine, "config": args.config.name if in_process else url, "runs": runs})


if __name__ == "__main__":
    main()
