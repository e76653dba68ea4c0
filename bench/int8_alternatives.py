"""The other ways the int8 encoder could have been made batch-invariant, built from the same float32 export so that
`bench/batch_invariance.py` measures them beside what the runtime does (one text per pass, `max_pass_texts` 1):

- `per-token`: the runtime's dynamic int8 file with each per-pass activation scale (`DynamicQuantizeLinear`)
  replaced by one scale per token vector, symmetric around a zero point of 128, written as plain ONNX ops. A row's
  quantization is then its own; what still varies with batch mates is the float32 part (attention over padded
  keys, ~1e-7), and that can flip a rounding step. onnxruntime's `MatMulIntegerToFloatFusion` assumes one scale
  per tensor and gives wrong results with per-token scales, so it is disabled for these files.
- `blockwise`: onnxruntime's `MatMulNBits` at 8 bits, blocks of 32 weights, int8 compute (`accuracy_level` 4),
  which quantizes each row of activations per block inside the kernel.
- `static`: onnxruntime's static quantization (QDQ, the same MatMuls and per-channel weights as the served recipe),
  each activation scale fixed in advance from its min-max range over 512 texts of each validation split (never the
  test splits), the MatMuls' outputs float32 and the residual stream left unquantized. No scale depends on the pass;
  what varies with batch mates is again the float32 part, which could flip a rounding step (over the full test
  splits none did: `bench/batch_invariance.py`).

None is served: docs/performance.md (Batch invariance) has the figures and why.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from multitask.runtime.onnx_cache import EXPORT_FILE, INT8_ONNX_FILE, ONNX_FILE, TOKENIZER_FILE
from multitask.runtime.onnx_export import kept_float32, quantize_file
from multitask.runtime.onnx_runtime import OnnxEncoderRuntime

ALTERNATIVES = ("per-token", "blockwise", "static")
VALIDATION = Path(__file__).resolve().parents[2] / "shared" / "data"
CALIBRATION_TEXTS = 512  # per validation split


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


def static_file(float32: Path, tokenizer_file: Path, max_length: int, target: Path) -> None:
    """`float32` statically quantized, activation ranges (min-max) from the topic and sentiment validation splits."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from tokenizers import Tokenizer

    texts = []
    for task in ("topic", "sentiment"):
        lines = (VALIDATION / task / "validation.jsonl").read_text().splitlines()[:CALIBRATION_TEXTS]
        texts += [json.loads(line)["text"] for line in lines]
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()

    class Reader(CalibrationDataReader):  # one text per pass
        def __init__(self):
            self.rows = iter([encoding.ids for encoding in tokenizer.encode_batch(texts)])

        def get_next(self):
            row = next(self.rows, None)
            if row is None:
                return None
            return {"input_ids": np.array([row], np.int64), "attention_mask": np.ones((1, len(row)), np.int64)}

    graph = onnx.load(str(float32), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    quantized = [  # the served recipe's matrices: MatMuls by a weight, less the one it keeps float32
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and node.input[1] in weights and not kept_float32(node)
    ]
    quantize_static(
        str(float32),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=quantized,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        # float32 out of each MatMul, as the dynamic recipe's MatMulIntegerToFloat: no second rounding of the output
        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"]},
    )
    _float_residuals(target)


def _float_residuals(path: Path) -> None:
    """The QDQ quantizer feeds every reader of a quantized activation its quantize-dequantize round trip, the
    residual Adds and LayerNorms too: give those the float32 tensor again, so that only the MatMuls read int8 (as in
    the dynamic recipe)."""
    import onnx

    model = onnx.load(str(path))
    producers = {output: node for node in model.graph.node for output in node.output}
    float_of = {}  # a DequantizeLinear's output -> the float tensor its QuantizeLinear read
    for node in model.graph.node:
        source = producers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear":
            float_of[node.output[0]] = source.input[0]
    for node in model.graph.node:
        if node.op_type != "MatMul":
            for i, name in enumerate(node.input):
                node.input[i] = float_of.get(name, name)
    onnx.save(model, str(path))


def alternative_runtime(export_dir: Path, name: str, work_dir: Path | None = None) -> OnnxEncoderRuntime:
    """One thread of the `name` alternative, built from the float32 export in `export_dir`, passes unlimited."""
    directory = Path(tempfile.mkdtemp(prefix=f"int8-{name}-", dir=work_dir))
    for file in (EXPORT_FILE, TOKENIZER_FILE):
        shutil.copyfile(export_dir / file, directory / file)
    target = directory / INT8_ONNX_FILE
    if name == "per-token":
        quantize_file(export_dir / ONNX_FILE, directory / "dynamic.onnx")
        per_token_file(directory / "dynamic.onnx", target)
    elif name == "blockwise":
        blockwise_file(export_dir / ONNX_FILE, target)
    elif name == "static":
        max_length = json.loads((export_dir / EXPORT_FILE).read_text())["max_length"]
        static_file(export_dir / ONNX_FILE, export_dir / TOKENIZER_FILE, max_length, target)
    else:
        raise ValueError(f"no int8 alternative {name!r}: {ALTERNATIVES}")
    # onnxruntime's fusion of MatMulInteger + Cast + Mul assumes one activation scale per tensor (not per token)
    disabled = ("MatMulIntegerToFloatFusion",) if name == "per-token" else ()
    runtime = OnnxEncoderRuntime(directory, threads=1, precision="int8", disabled_optimizers=disabled)
    runtime.max_pass_texts = 0  # what is measured: whether passes of several texts are invariant
    return runtime
