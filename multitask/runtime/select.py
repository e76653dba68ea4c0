"""The one place that chooses an encoder's runtime, device and dtype (the Encoder deployment, training, benchmarks).

    runtime = select_runtime("checkpoints/default")   # auto: onnxruntime on CPU in float32, torch on a GPU
    runtime = select_runtime(checkpoint, runtime="torch", device="cuda", dtype="bfloat16")

torch is imported only when the answer needs it: a CPU process serving ONNX never loads it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from multitask.checkpoint.manifest import CheckpointManifest
from multitask.runtime.base import EncoderRuntime
from multitask.runtime.onnx_runtime import OnnxEncoderRuntime

logger = logging.getLogger(__name__)

Runtime = Literal["auto", "onnx", "onnx-int8", "torch"]
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
CPU_DTYPES = ("auto", "float32")
"""What an ONNX runtime accepts as dtype (its precision is float32, or int8 with runtime onnx-int8)."""


def pick_device(device: str = "auto", gpu_assigned: bool | None = None) -> str:
    """`auto` = cuda when torch sees a GPU, else cpu. `gpu_assigned` False (a Ray replica given no GPU) answers cpu
    without importing torch; True when one was assigned: a node that declares GPUs without a working CUDA device (a
    missing driver, `--num-gpus` on a CPU node, as the cluster tests do) runs on CPU with a warning instead of
    failing."""
    if device == "auto":
        if gpu_assigned is False:
            return "cpu"
        if _cuda_available():
            return "cuda"
        if gpu_assigned:
            logger.warning("A GPU was assigned to this process, but torch sees no CUDA device: running on CPU.")
        return "cpu"
    if device == "cuda" and not _cuda_available():
        raise RuntimeError("device='cuda' but no GPU is visible to this replica; set num_gpus: 1 in its config.")
    return device


def pick_dtype(dtype: str, device: str) -> str:
    """`auto` = bfloat16 on GPUs that support it, else float16 on GPU, float32 on CPU."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def select_runtime(
    checkpoint: str | Path,
    runtime: Runtime = "auto",
    device: Device = "auto",
    dtype: Dtype = "auto",
    onnx_cache_dir: str | Path | None = None,
    gpu_assigned: bool | None = None,
    manifest: CheckpointManifest | None = None,
) -> EncoderRuntime:
    """The checkpoint's encoder, loaded. `runtime` auto = onnx on CPU in float32, torch otherwise; `onnx-int8` = the
    same export quantized to int8 (CPU only; opt-in where a checkpoint's quality has not been measured with it:
    `bench/quality.py --rows int8`). ONNX exports are made on first use, into `onnx_cache_dir`. `manifest`:
    the checkpoint's, if the caller has read it (a replica reads it once)."""
    device = pick_device(device, gpu_assigned)
    if runtime == "auto":
        runtime = "onnx" if device == "cpu" and dtype in CPU_DTYPES else "torch"
    if runtime in ("onnx", "onnx-int8"):
        if device != "cpu" or dtype not in CPU_DTYPES:
            raise ValueError(
                f"runtime {runtime} runs on CPU (dtype auto or float32), not {device}/{dtype}; use runtime: torch there."
            )
        precision = "int8" if runtime == "onnx-int8" else "float32"
        return OnnxEncoderRuntime.load(checkpoint, onnx_cache_dir, precision=precision, manifest=manifest)
    if runtime != "torch":
        raise ValueError(f"runtime must be one of auto, onnx, onnx-int8, torch; not {runtime!r}")
    import torch

    from multitask.checkpoint.load import load_encoder
    from multitask.runtime.torch_runtime import TorchEncoderRuntime

    encoder = load_encoder(checkpoint, device, manifest=manifest).to(dtype=getattr(torch, pick_dtype(dtype, device)))
    return TorchEncoderRuntime(encoder.eval())


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
