"""`multitask classify` on the three-node cluster, as a user runs it against a cluster: the CLI with `--address`
and Ray's token in the environment, beside the deployed service. Its encoder actors go to the nodes with free CPUs
(Ray Data spreads them), each encodes a share of the batches, and every row comes back.

The cluster tier runs after tests/batch, which check the answers themselves; here it is where the work runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.batch.helpers import report_of
from tests.cluster.conftest import ServedCluster
from tests.graph.helpers import sample_texts

MULTITASK = str(Path(sys.executable).with_name("multitask"))
ROWS, BATCH = 768, 32  # 24 encoder calls, enough for every actor to take some


def test_classify_spreads_its_encoders_over_the_nodes_with_free_cpus(
    served_cluster: ServedCluster, tmp_path, shipped_onnx_cache
):
    texts = sample_texts(ROWS)
    pq.write_table(pa.table({"id": list(range(ROWS)), "text": texts}), tmp_path / "in.parquet")
    # The GPU node's 4 CPUs hold the Encoder; the head and CPU nodes have 3 of 6 free beside the heads and the
    # Ingress: two encoders of half a CPU and Ray Data's file listing (one) fit there. The ONNX cache is the one the
    # test session exported into: every node of this one-host cluster reads it, instead of exporting once per node
    # (what a real cluster's nodes do, into their own caches). It holds the int8 export, so the runtime is
    # onnx-int8 (the local config's), not the CLI's default float32 one.
    argv = [MULTITASK, "classify", str(tmp_path / "in.parquet"), str(tmp_path / "out"), "--address"]
    argv += [served_cluster.cluster.address, "--runtime", "onnx-int8", "--onnx-cache-dir", str(shipped_onnx_cache)]
    argv += ["--encoders", "2", "--cpus-per-encoder", "0.5", "--batch-size", str(BATCH), "--no-progress"]
    env = os.environ.copy()  # Ray's token, as the fixture set it
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = report_of(done.stdout)
    assert (report["rows_in"], report["rows_out"], report["rows_with_errors"]) == (ROWS, ROWS, 0)
    assert sorted(pq.read_table(tmp_path / "out", columns=["id"]).column("id").to_pylist()) == list(range(ROWS))

    nodes, calls = encoder_calls(served_cluster)
    print(f"\n[cluster] classify {ROWS} rows: encoder actors on {sorted(nodes.values())}, calls per node {dict(calls)}")
    assert len(nodes) == 2, nodes
    assert sorted(nodes.values()) == ["cpu", "head"], nodes  # not the GPU node: the Encoder holds its CPUs
    assert set(calls) == {"cpu", "head"}, calls  # and both encoded


def encoder_calls(served_cluster: ServedCluster, within_s: float = 15) -> tuple[dict[str, str], Counter]:
    """The encoder actors (id -> kind of node) and their batch calls per kind of node, from Ray's state API. Task
    events reach it about a second after they happen: asked again until both nodes show calls, up to `within_s`."""
    from ray.util.state import list_actors, list_tasks

    deadline = time.monotonic() + within_s
    while True:
        actors = list_actors(address=served_cluster.dashboard, detail=True, limit=10_000)
        nodes = {a.actor_id: served_cluster.node_of(a.node_id) for a in actors if is_encoder_actor(a)}
        calls = Counter(
            nodes[actor_id]
            for actor_id in nodes
            for task in list_tasks(
                address=served_cluster.dashboard, filters=[("actor_id", "=", actor_id)], limit=10_000
            )
            if task.name.endswith(".submit")  # a batch (Ray Data's `_MapWorker.submit`), not the actor's start
        )
        if len(calls) >= 2 or time.monotonic() > deadline:
            return nodes, calls
        time.sleep(1)


def is_encoder_actor(actor) -> bool:
    """Ray Data's actor-pool workers (`_MapWorker`, shown as `MapWorker(MapBatches(EncoderStage))`): on this cluster
    only the encoder stage runs on actors (reads and heads are tasks)."""
    return "MapWorker" in actor.class_name or "EncoderStage" in f"{actor.class_name} {actor.repr_name or ''}"
