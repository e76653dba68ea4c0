"""The int8 encoders not served for a checkpoint with activation ranges, built from the same float32 export so that
`bench/batch_invariance.py` measures them beside what the runtime serves (static int8, fixed activation scales:
`onnx_export.quantize_static_file`):

- `dynamic`: onnxruntime's dynamic int8 (`onnx_export.quantize_file`), one activation scale per tensor per pass:
  what the runtime serves, one text per pass, for a checkpoint without `activation_ranges.json`.
- `per-token`: that file with each per-pass activation scale (`DynamicQuantizeLinear`) replaced by one scale per
  token vector, symmetric around a zero point of 128, written as plain ONNX ops. A row's quantization is then its
  own; what still varies with batch mates is the float32 part (attention over padded keys, ~1e-7), and that can
  flip a rounding step. onnxruntime's `MatMulIntegerToFloatFusion` assumes one scale per tensor and gives wrong
  results with per-token scales, so it is disabled for these files.
- `blockwise`: onnxruntime's `MatMulNBits` at 8 bits, blocks of 32 weights, int8 compute (`accuracy_level` 4),
  which quantizes each row of activations per block inside the kernel.

docs/performance.md (Batch invariance) has the figures and why static int8 is served.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from multitask.runtime.onnx_cache import EXPORT_FILE, INT8_ONNX_FILE, ONNX_FILE, TOKENIZER_FILE
from multitask.runtime.onnx_export import quantize_file
from multitask.runtime.onnx_runtime import OnnxEncoderRuntime

ALTERNATIVES = ("dynamic", "per-token", "blockwise")


def per_token_file(dynamic_int8: Path, target: Path) -> None:
    """`dynamic_int8` (`quantize_file`'s output) with every per-tensor activation quantization made per token."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(dynamic_int8))
    constants = {"pt_127": 127.0, "pt_eps": 1e-12, "pt_128": 128.0, "pt_0": 0.0, "pt_255": 255.0}
    model.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), k) for k, v in constants.items())
    model.graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), "pt_zero_point"))
    nodes = []
    for node in model.graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x, (quantized, scale, zero_point), p = node.input[0], node.output, node.name + "_per_token"
        nodes += [
            helper.make_node("Abs", [x], [p + "_abs"]),
            helper.make_node("ReduceMax", [p + "_abs"], [p + "_absmax"], axes=[-1], keepdims=1),  # (..., 1)
            helper.make_node("Div", [p + "_absmax", "pt_127"], [p + "_raw_scale"]),
            helper.make_node("Max", [p + "_raw_scale", "pt_eps"], [scale]),
            helper.make_node("Div", [x, scale], [p + "_scaled"]),
            helper.make_node("Round", [p + "_scaled"], [p + "_rounded"]),
            helper.make_node("Add", [p + "_rounded", "pt_128"], [p + "_shifted"]),
            helper.make_node("Clip", [p + "_shifted", "pt_0", "pt_255"], [p + "_clipped"]),
            helper.make_node("Cast", [p + "_clipped"], [quantized], to=TensorProto.UINT8),
            helper.make_node("Identity", ["pt_zero_point"], [zero_point]),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(target))


def blockwise_file(float32: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # needs onnx_ir

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(float32)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def alternative_runtime(export_dir: Path, name: str, work_dir: Path | None = None) -> OnnxEncoderRuntime:
    """One thread of the `name` alternative, built from the float32 export in `export_dir`, passes unlimited."""
    directory = Path(tempfile.mkdtemp(prefix=f"int8-{name}-", dir=work_dir))
    for file in (EXPORT_FILE, TOKENIZER_FILE):
        shutil.copyfile(export_dir / file, directory / file)
    target = directory / INT8_ONNX_FILE
    if name == "dynamic":
        quantize_file(export_dir / ONNX_FILE, target)
    elif name == "per-token":
        quantize_file(export_dir / ONNX_FILE, directory / "dynamic.onnx")
        per_token_file(directory / "dynamic.onnx", target)
    elif name == "blockwise":
        blockwise_file(export_dir / ONNX_FILE, target)
    else:
        raise ValueError(f"no int8 alternative {name!r}: {ALTERNATIVES}")
    # onnxruntime's fusion of MatMulInteger + Cast + Mul assumes one activation scale per tensor (not per token)
    disabled = ("MatMulIntegerToFloatFusion",) if name == "per-token" else ()
    runtime = OnnxEncoderRuntime(directory, threads=1, precision="int8", disabled_optimizers=disabled)
    runtime.max_pass_texts = 0  # what is measured: whether passes of several texts are invariant
    return runtime
