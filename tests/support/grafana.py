"""deploy/grafana/multitask.json as the dashboard tests read it: the board, its PromQL queries and the metric names
they read."""

from __future__ import annotations

import json
import re

from tests.support.paths import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "multitask.json"
METRIC_NAME = re.compile(r"\bray_[a-z0-9_]+")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def queried_metrics(board: dict) -> set[str]:
    return {name for expr in queries(board) for name in METRIC_NAME.findall(expr)}
