"""A Serve config overlay: a small YAML that names a base config and only the deployment options that differ.

    python -m operations.config_overlay configs/serve_autoscaling.yaml > /tmp/serve_autoscaling.yaml

The overlay's `deployments:` maps a deployment name (of any of the config's applications) to the keys to change; nested dicts (`autoscaling_config`,
`ray_actor_options`, `user_config`) merge key by key into the base's; its optional `runtime_env:` merges the same way
into every application's (e.g. one more environment variable for every replica). The merged file therefore still spells every
key out, which matters because Serve replaces those dicts whole rather than merging them with the code's defaults.
An overlay keeps a variant config (e.g. the autoscaling demo) from drifting from its base: everything it does not
name comes from the base as it is now.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml


class OverlayError(ValueError):
    pass


def deep_merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` applied: dicts merge recursively, anything else is replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def deployments_by_name(config: dict) -> dict[str, dict]:
    """Every deployment entry of a Serve config's applications (encoder, heads, ingress) by name; the names are
    unique across this project's applications (graph.py)."""
    found: dict[str, dict] = {}
    for application in config["applications"]:
        for deployment in application.get("deployments") or []:
            if deployment["name"] in found:
                raise OverlayError(f"deployment {deployment['name']!r} appears in two applications")
            found[deployment["name"]] = deployment
    return found


def overlaid_config(overlay_path: str | Path) -> dict:
    """The base config named by the overlay's `base:` (relative to the overlay file) with its `deployments:`
    changes applied to the deployments of the same name (whichever application has them), and its `runtime_env:`
    to every application's."""
    overlay_path = Path(overlay_path)
    overlay = yaml.safe_load(overlay_path.read_text()) or {}
    unknown_keys = set(overlay) - {"base", "deployments", "runtime_env"}
    if "base" not in overlay or unknown_keys:
        raise OverlayError(
            f"{overlay_path}: an overlay has `base:` (the config it changes), `deployments:` and `runtime_env:` "
            f"only; got {sorted(overlay)}"
        )
    base_path = (overlay_path.parent / overlay["base"]).resolve()
    if not base_path.is_file():
        raise OverlayError(f"{overlay_path}: base config {base_path} does not exist; fix `base:`")
    config = yaml.safe_load(base_path.read_text())
    names = list(deployments_by_name(config))
    changes: dict[str, Any] = overlay.get("deployments") or {}
    missing = sorted(set(changes) - set(names))
    if missing:
        raise OverlayError(f"{overlay_path}: no deployment {missing} in {base_path.name}. Available: {names}")
    for application in config["applications"]:
        application["runtime_env"] = deep_merge(application.get("runtime_env") or {}, overlay.get("runtime_env") or {})
        application["deployments"] = [
            deep_merge(deployment, changes.get(deployment["name"], {})) for deployment in application["deployments"]
        ]
    return config


def write_overlaid(overlay_path: str | Path, out_path: str | Path) -> Path:
    """The merged config written as a full Serve config file (for `serve run`, `serve deploy`, `apps_from_config`)."""
    out_path = Path(out_path)
    out_path.write_text(yaml.safe_dump(overlaid_config(overlay_path), sort_keys=False))
    return out_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m operations.config_overlay OVERLAY.yaml > merged.yaml")
    sys.stdout.write(yaml.safe_dump(overlaid_config(sys.argv[1]), sort_keys=False))
