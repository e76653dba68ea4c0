"""configs/serve_autoscaling.yaml and the overlay merge (operations/config_overlay.py): the merged file is a full,
valid Serve config that differs from serve_config.local.yaml only where the overlay says, and fits 2 CPUs at its
maximum."""

from __future__ import annotations

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from operations.config_overlay import OverlayError, deployments_by_name, overlaid_config, write_overlaid
from tests.support.paths import ROOT, SHIPPED_CHECKPOINT

OVERLAY = ROOT / "configs" / "serve_autoscaling.yaml"


def test_autoscaling_overlay_changes_only_the_heads_scaling_and_keeps_every_key():
    base = yaml.safe_load((ROOT / "serve_config.local.yaml").read_text())
    merged = overlaid_config(OVERLAY)
    ServeDeploySchema.model_validate(merged)
    merged_deployments, base_deployments = deployments_by_name(merged), deployments_by_name(base)
    assert merged_deployments["Encoder"] == base_deployments["Encoder"]
    assert merged_deployments["Ingress"] == base_deployments["Ingress"]
    for name in ("TopicHead", "SentimentHead"):
        head, base_head = merged_deployments[name], base_deployments[name]
        assert set(head["autoscaling_config"]) >= set(base_head["autoscaling_config"])  # still spelled out in full
        assert set(head["ray_actor_options"]) == set(base_head["ray_actor_options"])
        assert head["user_config"] == base_head["user_config"]
        assert head["autoscaling_config"]["min_replicas"] < head["autoscaling_config"]["max_replicas"]
    assert {k: v for k, v in merged.items() if k != "applications"} == {
        k: v for k, v in base.items() if k != "applications"
    }
    # at its maximum the graph still fits the 2 CPUs the config is made for
    at_max = [
        d["ray_actor_options"]["num_cpus"] * d["autoscaling_config"]["max_replicas"]
        for d in merged_deployments.values()
    ]
    assert sum(at_max) <= 2


def test_merged_config_is_a_file_serve_and_the_graph_accept(tmp_path):
    from graph import apps_from_config

    path = write_overlaid(OVERLAY, tmp_path / "merged.yaml")
    apps_from_config(path, checkpoint=str(SHIPPED_CHECKPOINT))


def test_overlay_naming_an_unknown_deployment_is_refused_with_the_file_named(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(
        f"base: {ROOT / 'serve_config.local.yaml'}\ndeployments:\n  WeatherHead: {{max_ongoing_requests: 1}}\n"
    )
    with pytest.raises(OverlayError, match="bad.yaml.*WeatherHead"):
        overlaid_config(overlay)
    overlay.write_text("deployments: {}\n")
    with pytest.raises(OverlayError, match="base:"):
        overlaid_config(overlay)
