"""What each added task costs the service: texts/s with 1, 2, 4 and 8 heads, on one deployment, one client.

    python bench/heads_cost.py                       # ~6 min -> bench/results/heads_cost.{json,md}
    python bench/heads_cost.py --duration 5 --rounds 1

The shipped local config (int8 encoder, serve.env's HAProxy, as `make run` serves it) plus six more head
applications, `extra_1` ... `extra_6`: copies of the checkpoint's topic head written as `multitask add-task`
artifacts (bound to the same encoder), each its own application as an added task is, at 0.05 CPU (logical) so that
eight heads fit the 2 cores' 2 CPUs. Everything is deployed once; the same closed-loop HTTP client then asks for 1,
2, 4 or 8 tasks per request (`tasks`), the four alternating within each round so that a shared machine's drifts hit
them alike, at 32 clients x 8 texts and 32 x 1. Reported: texts/s per head count (median over rounds), relative to
one head, and the cost of each added head: (1 - ratio) / (heads - 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

from loadgen import closed_loop, load_texts
from served_graph import served_graph

RESULTS = ROOT / "bench" / "results"
CHECKPOINT = ROOT / "checkpoints" / "default"
EXTRA = 6
HEAD_COUNTS = (1, 2, 4, 8)
SHAPES = ((32, 8), (32, 1))  # clients x texts per request


def write_extra_heads(directory: Path) -> dict[str, Path]:
    """extra_1 ... extra_6: the topic head's tensors as head artifacts bound to the checkpoint's encoder."""
    from multitask.checkpoint.files import read_tensors
    from multitask.checkpoint.format import MODEL_FILE, head_prefix
    from multitask.checkpoint.manifest import read_manifest
    from multitask.head_artifact import BoundEncoder, HeadManifest, save_head_artifact

    manifest = read_manifest(CHECKPOINT)
    spec = next(task for task in manifest.model.tasks if task.name == "topic")
    prefix = head_prefix("topic")
    tensors = {name.removeprefix(prefix): t for name, t in read_tensors(CHECKPOINT / MODEL_FILE, prefix).items()}
    encoder = BoundEncoder(name=manifest.encoder.name, fingerprint=manifest.encoder.fingerprint, checkpoint="bench")
    heads = {}
    for i in range(1, EXTRA + 1):
        task = f"extra_{i}"
        head = HeadManifest(
            task=spec.model_copy(update={"name": task}),
            embedding_dim=manifest.model.embedding_dim,
            dropout=manifest.model.dropout,
            encoder=encoder,
        )
        heads[task] = save_head_artifact(directory / task, head, tensors)
    return heads


def write_config(directory: Path, heads: dict[str, Path]) -> Path:
    """serve_config.local.yaml with one application per extra head, before the ingress, and their `tasks:` lines."""
    from graph import head_app_name
    from multitask.task_names import head_deployment_name
    from operations.config_overlay import deployments_by_name

    config = yaml.safe_load((ROOT / "serve_config.local.yaml").read_text())
    apps = config["applications"]
    topic = next(app for app in apps if app["name"] == head_app_name("topic"))
    for task, path in heads.items():
        app = json.loads(json.dumps(topic))
        app["name"] = head_app_name(task)
        app["args"].update(task=task, head=str(path))
        app["deployments"][0]["name"] = head_deployment_name(task)
        app["deployments"][0]["ray_actor_options"]["num_cpus"] = 0.05
        apps.insert(len(apps) - 1, app)
        deployments_by_name(config)["Ingress"]["user_config"]["tasks"][task] = head_app_name(task)
    path = directory / "serve_config.heads.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def measure(url: str, texts: list[str], args: argparse.Namespace) -> dict:
    import aiohttp

    tasks_for = {1: ["topic"], 2: ["topic", "sentiment"], 4: ["topic", "sentiment", "extra_1", "extra_2"]}
    tasks_for[8] = ["topic", "sentiment", *(f"extra_{i}" for i in range(1, EXTRA + 1))]
    runs: dict[str, dict[int, list[dict]]] = {f"{c}x{k}": {n: [] for n in HEAD_COUNTS} for c, k in SHAPES}
    for round_ in range(args.rounds):
        for clients, per_request in SHAPES:
            order = HEAD_COUNTS if round_ % 2 == 0 else tuple(reversed(HEAD_COUNTS))
            for heads in order:
                connector = aiohttp.TCPConnector(limit=clients)
                async with aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=120)
                ) as session:

                    async def call(batch: list[str], tasks=tasks_for[heads]) -> bool:
                        body = {"texts": batch, "tasks": tasks}
                        async with session.post(url + "/v1/predict", json=body) as response:
                            await response.read()
                            return response.status == 200

                    await closed_loop(call, texts, clients, per_request, args.warmup)
                    run = await closed_loop(call, texts, clients, per_request, args.duration)
                runs[f"{clients}x{per_request}"][heads].append(run)
                print(f" round {round_ + 1} {clients}x{per_request} {heads} heads: {run['texts_per_s']} texts/s "
                      f"({run['errors']} errors)", file=sys.stderr)  # fmt: skip
    return runs


def summarize(runs: dict[str, dict[int, list[dict]]]) -> dict:
    """Per shape and head count: the median texts/s, and the median over rounds of the ratio to one head in the
    same round (the cells of a round ran back to back, so the ratio leaves out the machine's drift between
    rounds); the cost of each added head is (1 - ratio) / (heads - 1)."""
    summary = {}
    for shape, by_heads in runs.items():
        one = [run["texts_per_s"] for run in by_heads[1]]
        summary[shape] = {}
        for n in HEAD_COUNTS:
            ratio = statistics.median(run["texts_per_s"] / base for run, base in zip(by_heads[n], one))
            summary[shape][str(n)] = {
                "texts_per_s": round(statistics.median(run["texts_per_s"] for run in by_heads[n]), 1),
                "vs_one_head": round(ratio, 3),
                "cost_per_added_head": None if n == 1 else round((1 - ratio) / (n - 1), 3),
                "errors": sum(run["errors"] for run in by_heads[n]),
            }
    return summary


def markdown(summary: dict, args: argparse.Namespace) -> str:
    header = (
        f"Command: `python bench/heads_cost.py --duration {args.duration:g} --rounds {args.rounds}` "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores). Texts/s, median of {args.rounds} rounds; "
        "in parentheses: the median over rounds of the ratio to one head in the same round, and the cost of each "
        "added head."
    )
    lines = [
        header,
        "",
        "| heads per request | " + " | ".join(summary) + " |",
        "|---:|" + "---:|" * len(summary),
    ]
    for n in HEAD_COUNTS:
        cells = []
        for shape in summary:
            cell = summary[shape][str(n)]
            extra = "" if n == 1 else f" ({cell['vs_one_head']:.2f}x, {cell['cost_per_added_head'] * 100:.1f}%/head)"
            cells.append(f"{cell['texts_per_s']:.0f}{extra}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each cell")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    texts = load_texts()
    work = Path(tempfile.mkdtemp(prefix="heads-cost-"))
    with served_graph(write_config(work, write_extra_heads(work / "heads"))) as url:
        runs = asyncio.run(measure(url, texts, args))
    summary = summarize(runs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "heads_cost.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")
    table = markdown(summary, args)
    (RESULTS / "heads_cost.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
