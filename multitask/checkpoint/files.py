"""The one safetensors reader of checkpoint files: tensors as numpy arrays (torch-free) or torch tensors (load.py),
or only their shapes from the header; a missing or corrupt file is a CheckpointError naming it, in one wording.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from safetensors import SafetensorError, safe_open

from multitask.errors import CheckpointError

T = TypeVar("T")
Shapes = dict[str, tuple[int, ...]]
"""Tensor name -> shape."""


def read_tensors(path: Path, prefix: str = "", framework: Literal["np", "pt"] = "np") -> dict[str, Any]:
    """The tensors under `prefix` (prefix stripped), as numpy arrays, or torch tensors with `framework="pt"`."""

    def read(handle) -> dict[str, Any]:
        names = [name for name in handle.keys() if name.startswith(prefix)]  # noqa: SIM118 - a handle is no dict
        return {name[len(prefix) :]: handle.get_tensor(name) for name in names}

    return _read(path, framework, read)


def tensor_shapes(path: Path) -> Shapes:
    """Every tensor's shape, from the header only (safetensors checks on open that the file is as long as the header
    says)."""

    def read(handle) -> Shapes:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118

    return _read(path, "np", read)


def require_tensors(path: Path) -> None:
    """A safetensors file that exists, opens and holds at least one tensor (its data is not read)."""
    if not tensor_shapes(path):
        raise CheckpointError(f"{path} holds no tensors; re-save or re-train the checkpoint.")


def check_shapes(path: Path, what: str, got: Shapes, expected: dict[str, tuple[int | None, ...]]) -> None:
    """`got` must hold exactly `expected`'s names, each with its shape (None: any size), as a strict load needs."""
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = [
        f"{name} {got[name]} (config: {want})"
        for name, want in expected.items()
        if name in got
        and (len(got[name]) != len(want) or any(w is not None and g != w for g, w in zip(got[name], want)))
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not match the model config: {what} has missing tensors {missing}, unexpected {unexpected}, "
            f"wrong shapes {wrong}. Re-train the checkpoint, or restore the config.json it was saved with."
        )


def _read(path: Path, framework: str, read: Callable[[Any], T]) -> T:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, re-save or re-train it.")
    try:
        with safe_open(str(path), framework=framework) as handle:
            return read(handle)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({exc}); re-save or re-train it.") from exc
