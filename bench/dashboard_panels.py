"""The panels of deploy/grafana/multitask.json drawn with matplotlib from a real run, where Grafana cannot run.

Each panel's PromQL queries are evaluated, unchanged but for Grafana's variables (`$application`, `$__rate_interval`),
by a real Prometheus server over the run (`query_range`), and drawn in the dashboard's own layout: one figure row per
dashboard row, the panel titles, units and legends of the JSON. So the picture shows what the dashboard shows, and
a query that Prometheus rejects fails the drawing instead of leaving an empty panel. Used by
`bench/autoscaling.py --dashboard`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests

RATE_INTERVAL = "30s"  # Ray exports every 10 s (metrics_report_interval_ms): shorter windows make rates saw-tooth
STEP_S = 2
UNITS = {"reqps": "requests/s", "ms": "ms", "percentunit": "share", "short": ""}


def query_range(prometheus_url: str, expr: str, start: float, end: float) -> list[dict]:
    """Prometheus' range query: [{"metric": {label: value}, "values": [[unix_time, "value"], ...]}, ...]."""
    response = requests.get(
        f"{prometheus_url}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": STEP_S},
        timeout=30,
    )
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"Prometheus rejected {expr!r}: {body.get('error', response.text[:300])}")
    return body["data"]["result"]


def grafana_expr(expr: str, application: str) -> str:
    """A dashboard query with Grafana's variables filled in as Grafana would for this run."""
    return expr.replace("$application", application).replace("$__rate_interval", RATE_INTERVAL)


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda match: labels.get(match.group(1), ""), template)


def dashboard_rows(dashboard: dict) -> list[tuple[str, list[dict]]]:
    """(row title, its timeseries panels) in the dashboard's order."""
    rows: list[tuple[str, list[dict]]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            rows.append((panel["title"], []))
        else:
            rows[-1][1].append(panel)
    return rows


def draw_dashboard(
    prometheus_url: str,
    dashboard_path: Path,
    start: float,
    end: float,
    out_png: Path,
    t0: float,
    application: str = "multitask",
    phases: list[dict] | None = None,
) -> None:
    """Every panel of the dashboard over [start, end] (unix seconds), x axis in seconds from `t0`; `phases`
    ({"start_s", "end_s", "task"}) are marked on every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(Path(dashboard_path).read_text())
    rows = dashboard_rows(dashboard)
    columns = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(5 * columns, 3.4 * len(rows)), squeeze=False)
    for r, (row_title, panels) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            if c >= len(panels):
                ax.axis("off")
                continue
            panel = panels[c]
            for target in panel["targets"]:
                for series in query_range(prometheus_url, grafana_expr(target["expr"], application), start, end):
                    times = [float(t) - t0 for t, _ in series["values"]]
                    values = [float(v) for _, v in series["values"]]
                    ax.plot(times, values, linewidth=1.4, label=legend(target["legendFormat"], series["metric"]))
            for phase in phases or []:
                if phase["task"]:
                    ax.axvspan(phase["start_s"], phase["end_s"], color="0.9", zorder=0)
            ax.set_title(f"{row_title}: {panel['title']}", fontsize=9)
            ax.set_ylabel(UNITS.get(panel["fieldConfig"]["defaults"]["unit"], ""), fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_ylim(bottom=0)
            ax.set_xlim(start - t0, end - t0)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="upper right")
            if r == len(rows) - 1:
                ax.set_xlabel("seconds from the start of the load", fontsize=8)
    fig.suptitle(
        f"{dashboard['title']} (deploy/grafana/multitask.json), drawn from Prometheus over a bench/autoscaling.py run; "
        f"grey: topic-only then sentiment-only load",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
