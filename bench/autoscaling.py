"""Separate autoscaling of the task heads on busy time, shown: TopicHead saturated, then SentimentHead, then nothing.

    python bench/autoscaling.py                     # ~3 min on 2 cores -> bench/results/autoscaling.{json,png}
    python bench/autoscaling.py --dashboard         # also scrape with Prometheus (apt-get install prometheus) and
                                                    # draw deploy/grafana/multitask.json's panels from this run
                                                    # -> bench/results/dashboard.png

Deploys the graph of `configs/serve_autoscaling.yaml` (serve_config.local.yaml with heads that scale 1-3 on busy
time, the shipped policy, with short windows and delays) on a local Ray with serve.env's settings, on the shipped
checkpoint. For `--phase-s` seconds the topic head is saturated: `--callers` threads call it through its handle
with 256 embeddings a call, as another application would (over HTTP on 2 cores the encoder is the bottleneck and no
head gets busy), while closed-loop clients on 127.0.0.1 post `/v1/predict/topic` (the HTTP traffic the dashboard
shows); then the same for the sentiment head; then nothing. Serve's status API (`serve.status()`) is sampled every 0.5 s for the
running replicas of each deployment. Writes every sample, the load per second, the scaling timeline (when each
deployment changed its replica count, in seconds from the load's start) and the plot: replicas per deployment over
time, the load on a second axis. Every phase is bounded in time; the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]

from loadgen import load_texts
from served_graph import served_graph

from operations.ports import free_port

OVERLAY = ROOT / "configs" / "serve_autoscaling.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "multitask.json"
RESULTS = ROOT / "bench" / "results"
DEPLOYMENTS = ["TopicHead", "SentimentHead", "Encoder", "Ingress"]
SAMPLE_EVERY_S = 0.5


def running_replicas() -> dict[str, int]:
    """RUNNING replicas per deployment of the service's applications, from Serve's status API."""
    from ray import serve

    return {
        name: status.replica_states.get("RUNNING", 0)
        for application in serve.status().applications.values()
        for name, status in application.deployments.items()
    }


class Sampler(threading.Thread):
    """Samples `running_replicas()` every SAMPLE_EVERY_S seconds until stopped; times relative to `t0`."""

    def __init__(self, t0: float):
        super().__init__(daemon=True)
        self.t0 = t0
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append({"t": round(time.monotonic() - self.t0, 2), "replicas": running_replicas()})
            self.stop.wait(SAMPLE_EVERY_S)


def record_http_load(url: str, task: str, clients: int, per_request: int, duration_s: float, texts: list[str]) -> list:
    """`clients` threads posting `/v1/predict/{task}` back to back for `duration_s`: (end time, task, status)."""
    outcomes: list[tuple[float, str, int]] = []
    stop_at = time.monotonic() + duration_s

    def client(seed: int) -> None:
        rng, session = random.Random(seed), requests.Session()
        while time.monotonic() < stop_at:
            try:
                status = session.post(
                    f"{url}/v1/predict/{task}", json={"texts": rng.sample(texts, per_request)}, timeout=30
                ).status_code
            except requests.RequestException:
                status = 0
            outcomes.append((time.monotonic(), task, status))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def saturate_head(task: str, callers: int, duration_s: float, rows: int = 256) -> int:
    """`callers` threads calling the task's head directly for `duration_s`, `rows` embeddings a call; calls made."""
    import numpy as np
    from ray import serve

    from deployments.encoded_texts import EncodedTexts
    from graph import ENCODER_APP, head_app_name
    from multitask.task_names import head_deployment_name

    encoder = serve.get_deployment_handle("Encoder", ENCODER_APP)
    fingerprint = encoder.info.remote().result()["fingerprint"]
    encoder.shutdown()
    embeddings = np.random.default_rng(0).normal(size=(rows, 1024)).astype(np.float32)
    batch = EncodedTexts(embeddings, [False] * rows, fingerprint)
    head = serve.get_deployment_handle(head_deployment_name(task), head_app_name(task))
    stop_at, calls = time.monotonic() + duration_s, []

    def caller() -> None:
        while time.monotonic() < stop_at:
            head.classify.remote(batch).result(timeout_s=60)
            calls.append(1)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    head.shutdown()  # its router would live on in this process
    return len(calls)


def scaling_timeline(samples: list[dict]) -> list[dict]:
    """Each change of a deployment's running replicas: when (s from the load's start), from, to."""
    events, last = [], samples[0]["replicas"]
    for sample in samples[1:]:
        for name, count in sample["replicas"].items():
            if count != last.get(name):
                events.append({"t": sample["t"], "deployment": name, "from": last.get(name), "to": count})
        last = sample["replicas"]
    return events


def load_per_second(outcomes: list[tuple[float, str, int]], t0: float) -> dict[str, dict[int, int]]:
    """Answered (200) requests per task per whole second since `t0`."""
    per_task: dict[str, Counter] = {}
    for end, task, status in outcomes:
        if status == 200:
            per_task.setdefault(task, Counter())[int(end - t0)] += 1
    return {task: dict(sorted(counts.items())) for task, counts in per_task.items()}


class Prometheus:
    """A Prometheus server (Debian's `prometheus` package) scraping the Ray node's metrics export port every
    second into a temporary directory, on 127.0.0.1; stopped with the run."""

    def __init__(self, binary: str, metrics_port: int):
        self.dir = Path(tempfile.mkdtemp(prefix="prom"))
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def run(args: argparse.Namespace) -> dict:
    from operations.config_overlay import deployments_by_name, overlaid_config, write_overlaid

    texts = load_texts()
    config_path = write_overlaid(OVERLAY, Path(tempfile.mkdtemp()) / "serve_autoscaling.yaml")
    prometheus = None
    # 2 logical CPUs as on the laptop: the config's maximum (Encoder 1 + Ingress 0.25 + 2 x 3 heads x 0.1) fits
    with served_graph(config_path, num_cpus=2, checkpoint=str(ROOT / "checkpoints" / "default")) as url:
        import ray

        try:
            if args.dashboard:
                binary = shutil.which("prometheus") or sys.exit(
                    "--dashboard needs Prometheus: apt-get install prometheus"
                )
                prometheus = Prometheus(binary, ray.nodes()[0]["MetricsExportPort"])
            t0 = time.monotonic() + args.baseline_s  # the load starts after a short baseline
            sampler = Sampler(t0)
            sampler.start()
            wall_t0 = time.time() + args.baseline_s
            time.sleep(args.baseline_s)
            outcomes, head_calls = [], {}
            for task in ("topic", "sentiment"):
                saturating = threading.Thread(
                    target=lambda task=task: head_calls.update({task: saturate_head(task, args.callers, args.phase_s)})
                )
                saturating.start()
                outcomes += record_http_load(url, task, args.clients, args.texts, args.phase_s, texts)
                saturating.join()
            time.sleep(args.idle_s)
            sampler.stop.set()
            sampler.join()
            results = {
                "command": "python bench/autoscaling.py " + " ".join(sys.argv[1:]),
                "overlay": yaml.safe_load(OVERLAY.read_text()),
                "deployments": {
                    d["name"]: {
                        "autoscaling_config": d["autoscaling_config"],
                        "ray_actor_options": d["ray_actor_options"],
                    }
                    for d in deployments_by_name(overlaid_config(OVERLAY)).values()
                },
                "load": {
                    "clients": args.clients,
                    "texts_per_request": args.texts,
                    "phases": [
                        {"task": "topic", "start_s": 0, "end_s": args.phase_s},
                        {"task": "sentiment", "start_s": args.phase_s, "end_s": 2 * args.phase_s},
                        {"task": None, "start_s": 2 * args.phase_s, "end_s": 2 * args.phase_s + args.idle_s},
                    ],
                    "statuses": dict(Counter(str(status) for _, _, status in outcomes)),
                    "direct_head_calls": head_calls,
                    "callers": args.callers,
                    "answered_per_second": load_per_second(outcomes, t0),
                },
                "samples": sampler.samples,
                "timeline": scaling_timeline(sampler.samples),
            }
            if prometheus is not None:
                from dashboard_panels import draw_dashboard

                time.sleep(5)  # Ray exports every few seconds: let the last values of the run reach Prometheus
                draw_dashboard(
                    prometheus.url,
                    DASHBOARD,
                    wall_t0 - args.baseline_s,
                    time.time(),
                    RESULTS / "dashboard.png",
                    wall_t0,
                    phases=results["load"]["phases"],
                )
                results["dashboard_png"] = "bench/results/dashboard.png"
            return results
        finally:
            if prometheus is not None:
                prometheus.close()


def draw(results: dict, path: Path) -> None:
    """Replicas per deployment (steps) and the answered load per task (second axis) against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.4))
    times = [sample["t"] for sample in results["samples"]]
    colors = {"TopicHead": "tab:blue", "SentimentHead": "tab:orange", "Encoder": "tab:gray", "Ingress": "tab:green"}
    for offset, name in zip((0.06, -0.06, 0.0, 0.03), DEPLOYMENTS):  # offsets keep equal counts visible
        counts = [sample["replicas"].get(name, 0) + offset for sample in results["samples"]]
        ax.step(times, counts, where="post", color=colors[name], linewidth=2.2, label=f"{name} replicas")
    ax.set_ylabel("running replicas")
    ax.set_xlabel("seconds from the start of the load")
    ax.set_ylim(0, max(d["autoscaling_config"]["max_replicas"] for d in results["deployments"].values()) + 0.6)
    ax.set_yticks(range(5))
    load_ax = ax.twinx()
    for task, color in (("topic", "tab:blue"), ("sentiment", "tab:orange")):
        per_second = {int(s): n for s, n in results["load"]["answered_per_second"].get(task, {}).items()}
        seconds = sorted(per_second)
        load_ax.fill_between(
            [s + 0.5 for s in seconds],
            [per_second[s] for s in seconds],
            step="mid",
            color=color,
            alpha=0.15,
            label=f"/v1/predict/{task} answered requests/s",
        )
    load_ax.set_ylabel("answered requests/s")
    load_ax.set_ylim(bottom=0)
    for phase in results["load"]["phases"]:
        ax.axvline(phase["start_s"], color="black", linewidth=0.6, linestyle=":")
        label = f"{phase['task']}-only load" if phase["task"] else "no load"
        ax.text(phase["start_s"] + 1, ax.get_ylim()[1] - 0.35, label, fontsize=9)
    lines, labels = ax.get_legend_handles_labels()
    more_lines, more_labels = load_ax.get_legend_handles_labels()
    ax.legend(
        lines + more_lines, labels + more_labels, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8
    )
    load = results["load"]
    ax.set_title(
        f"Heads autoscale separately: configs/serve_autoscaling.yaml, {load['clients']} clients x "
        f"{load['texts_per_request']} texts, 2 CPUs",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase-s", type=float, default=45, help="seconds of topic-only, then sentiment-only load")
    parser.add_argument("--idle-s", type=float, default=45, help="seconds without load at the end")
    parser.add_argument("--baseline-s", type=float, default=5, help="seconds sampled before the load starts")
    parser.add_argument("--clients", type=int, default=8, help="concurrent closed-loop HTTP clients")
    parser.add_argument("--callers", type=int, default=8, help="threads calling the phase's head directly")
    parser.add_argument("--texts", type=int, default=4, help="texts per request")
    parser.add_argument("--dashboard", action="store_true", help="scrape with Prometheus, draw the dashboard")
    parser.add_argument("--out", type=Path, default=RESULTS / "autoscaling", help="writes OUT.json and OUT.png")
    args = parser.parse_args()
    results = run(args)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    draw(results, args.out.with_suffix(".png"))
    print(f"load statuses: {results['load']['statuses']}")
    for event in results["timeline"]:
        print(f"{event['t']:7.1f} s  {event['deployment']:<14} {event['from']} -> {event['to']}")
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
