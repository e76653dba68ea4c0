"""Where the tests find the repository's files, wherever a test module sits."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_CONFIG = ROOT / "serve_config.local.yaml"
SHIPPED_CHECKPOINT = ROOT / "checkpoints" / "default"
SHARED_DATA = ROOT.parent / "shared" / "data"
"""The topic and sentiment data sets beside the repository (absent on a fresh clone: tests that need them skip)."""
