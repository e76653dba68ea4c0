"""Fixtures of the model tier: the shared untrained model (root conftest.py) saved as a checkpoint, for the tests
that load one the way serving does."""

from __future__ import annotations

from pathlib import Path

import pytest

from multitask.checkpoint.load import save_checkpoint
from multitask.model import MultiTaskModel


@pytest.fixture(scope="session")
def minilm_checkpoint(minilm_model: MultiTaskModel, tmp_path_factory) -> Path:
    """`minilm_model` saved (frozen encoder, seeded heads). Shared: copy it before changing anything."""
    directory = tmp_path_factory.mktemp("minilm") / "ckpt"
    save_checkpoint(minilm_model, directory)
    return directory
