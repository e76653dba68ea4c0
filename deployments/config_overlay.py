"""A Serve config overlay: a small YAML that names a base config and only the deployment options that differ.

    python -m deployments.config_overlay configs/serve_autoscaling.yaml > /tmp/serve_autoscaling.yaml

The overlay's `deployments:` maps a deployment name to the keys to change; nested dicts (`autoscaling_config`,
`ray_actor_options`, `user_config`) merge key by key into the base's; its optional `runtime_env:` merges the same way
into the application's (e.g. one more environment variable for every replica). The merged file therefore still spells every
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


def overlaid_config(overlay_path: str | Path) -> dict:
    """The base config named by the overlay's `base:` (relative to the overlay file) with its `deployments:`
    changes applied to the one application's deployments of the same name, and its `runtime_env:` to the
    application's."""
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
    (application,) = config["applications"]
    names = [deployment["name"] for deployment in application["deployments"]]
    changes: dict[str, Any] = overlay.get("deployments") or {}
    missing = sorted(set(changes) - set(names))
    if missing:
        raise OverlayError(f"{overlay_path}: no deployment {missing} in {base_path.name}. Available: {names}")
    application["runtime_env"] = deep_merge(application.get("runtime_env") or {}, overlay.get("runtime_env") or {})
    application["deployments"] = [
        deep_merge(deployment, changes.get(deployment["name"], {})) for deployment in application["deployments"]
    ]
    return config


def write_overlaid(overlay_path: str | Path, out_path: str | Path) -> Path:
    """The merged config written as a full Serve config file (for `serve run`, `serve deploy`, `app_from_config`)."""
    out_path = Path(out_path)
    out_path.write_text(yaml.safe_dump(overlaid_config(overlay_path), sort_keys=False))
    return out_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m deployments.config_overlay OVERLAY.yaml > merged.yaml")
    sys.stdout.write(yaml.safe_dump(overlaid_config(sys.argv[1]), sort_keys=False))
