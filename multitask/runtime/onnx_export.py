"""Export a checkpoint's encoder (transformer + mean pooling + projection) to ONNX, for CPU serving without torch.

    python -m multitask.runtime.onnx_export checkpoints/default /tmp/encoder-onnx

writes into the output directory:
- `encoder.onnx`: (batch, seq) int64 `input_ids` and `attention_mask` -> (batch, embedding_dim) float32
  `embeddings`, the same function as `SentenceEncoder.forward` (fine-tuned weights merged, fp32);
- `tokenizer.json`: the checkpoint encoder's fast tokenizer (truncation and padding left to the caller);
- `export.json`: `encoder_digest` (which checkpoint encoder it came from), the encoder fingerprint, max length,
  embedding dimension, pad token id.

The export is checked before it is kept: onnxruntime's embeddings of probe texts (short, long, truncated,
padded together) must match torch's within `ATOL`. The directory appears whole (written aside, then renamed),
so concurrent exports of the same checkpoint (two replicas starting) never see half a directory.
The Encoder deployment runs this in a subprocess on first start (`onnx_cache.ensure_export`), so that the serving
process never imports torch.

    python -m multitask.runtime.onnx_export checkpoints/default /tmp/encoder-onnx --precision int8

also writes `encoder.int8.onnx` (and `int8.json`, its recipe and parity figures) beside the float32 file, exporting
that first if needed: onnxruntime's static quantization with the activation scales fixed from the checkpoint's
`activation_ranges.json` (`quantize_static_file`), or, for a checkpoint without one, its dynamic quantization
(`quantize_file`, activation scales per pass). `quantize_export` says which settings and why. It is checked against
the float32 file on the probe texts (`INT8_MIN_COSINE`, identical truncation flags) before it is renamed into place.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from multitask.checkpoint.activation_ranges import ActivationRanges, activation_ranges_digest, read_activation_ranges
from multitask.checkpoint.digest import encoder_digest
from multitask.checkpoint.load import load_encoder
from multitask.errors import CheckpointError, MultitaskError
from multitask.runtime.onnx_cache import (
    ERROR_PREFIX,
    EXPORT_FILE,
    EXPORT_FORMAT,
    INT8_FILE,
    INT8_FORMAT,
    INT8_ONNX_FILE,
    ONNX_FILE,
    PRECISIONS,
    TOKENIZER_FILE,
    export_digest,
)
from multitask.runtime.onnx_runtime import OnnxEncoderRuntime

OPSET = 17
ATOL = 1e-4
INT8_MIN_COSINE = 0.95
"""Least cosine similarity between an int8 embedding and its float32 one, on every probe text. Measured with the
shipped checkpoint: min 0.967 over the 2,719 topic and sentiment validation texts (0.1th percentile 0.979, mean
0.9966) and 0.988 on the probes, while the task metrics moved by at most 0.005 (README, Performance). onnxruntime's
default recipe (one weight scale per matrix, every layer) gave 0.742 on validation texts and 0.921 on the probes and
cost 0.008-0.015 of topic macro-F1 / sentiment macro-recall: 0.95 refuses that, or a saturating int8 kernel, and
leaves a sound quantization room (its probe minimum is kept in `int8.json`)."""
_PROBE_TEXTS = [
    "Stocks fell sharply after the announcement.",
    "ok",
    "The new phone ships with a faster chip, a brighter screen and a battery that lasts two days. " * 40,
    "Über-fast trains 🚄 connect the cities; 東京 is two hours away.",
]


def export_encoder(checkpoint: str | Path, out_dir: str | Path) -> dict:
    """Export `checkpoint`'s encoder into `out_dir` (replaced if present); returns the `export.json` contents."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    encoder = load_encoder(checkpoint, "cpu").float().eval()
    backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(
            f"{encoder.config.encoder} has no fast (Rust) tokenizer, which the ONNX runtime needs; serve this "
            "checkpoint with runtime: torch."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        probe = encoder.tokenize(_PROBE_TEXTS)
        with torch.inference_mode(), warnings.catch_warnings():
            # the TorchScript exporter (measured 1.2-1.4x faster in onnxruntime here than the torch.export one)
            # warns about its deprecation and about Python conditions it traces as constants: both harmless
            # for this graph, which the parity check below proves on padded and truncated batches
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder,
                (probe["input_ids"], probe["attention_mask"]),
                str(staging / ONNX_FILE),
                input_names=["input_ids", "attention_mask"],
                output_names=["embeddings"],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                              "embeddings": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )  # fmt: skip
            expected = encoder(**encoder.tokenize(_PROBE_TEXTS[::-1])).numpy()
        tokenizer = type(backend).from_str(backend.to_str())  # a copy: the model's own tokenizer keeps its settings
        tokenizer.no_truncation()
        tokenizer.no_padding()
        tokenizer.save(str(staging / TOKENIZER_FILE))
        info = {
            "format": EXPORT_FORMAT,
            "encoder_digest": encoder_digest(checkpoint),
            "encoder": encoder.config.encoder,
            "fingerprint": encoder.fingerprint,
            "max_length": int(encoder.max_length),
            "dimension": int(encoder.config.embedding_dim),
            "pad_token_id": int(encoder.tokenizer.pad_token_id or 0),
            "opset": OPSET,
            "torch": torch.__version__,
        }
        (staging / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
        _check_parity(staging, _PROBE_TEXTS[::-1], expected)
        if export_digest(out_dir) == info["encoder_digest"]:
            return info  # another process (a second replica starting) finished the same export first: keep it
        if out_dir.exists():
            shutil.rmtree(out_dir)  # an incomplete or older-format export
        try:
            staging.rename(out_dir)
        except OSError:  # another process renamed its export there in the meantime
            if export_digest(out_dir) != info["encoder_digest"]:
                raise
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def kept_float32(node) -> bool:
    """Whether the int8 recipe keeps this ONNX node's matrix float32: the first transformer layer's feed-forward
    output projection (`quantize_file` says why)."""
    return node.op_type == "MatMul" and node.name.endswith("/layer.0/output/dense/MatMul")


def quantize_file(source: str | Path, target: str | Path) -> list[str]:
    """Quantize the ONNX transformer `source` into `target` with this project's int8 recipe; returns the names of
    the weight matrices kept in float32. Used for the served encoder (`quantize_export`) and for the peer's int8
    file in `bench/serving_bench.py`, so both run the same quantization.

    onnxruntime's dynamic quantization: int8 weights, activations quantized per pass from their observed range, so
    no calibration set is needed. Two settings, chosen on the validation splits by closeness to float32 (cosine),
    not on any test set: weights per output channel (`per_channel`: one scale per row instead of one per matrix,
    mean cosine 0.975 -> 0.995), and the first transformer layer's feed-forward output projection kept in float32.
    Quantized alone, with every other layer float32, that one matrix drops the minimum cosine to 0.77 (the other
    layers' matrices: >= 0.977): its input, the first layer's GELU output, has the outlier-heavy range that a single
    per-pass activation scale flattens. Kept float32 it costs little of the speed-up (one of 36 weight matrices).
    Other architectures (no `layer.0/output/dense` node) are quantized whole; the parity check decides."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_float = [
        node.name for node in onnx.load(str(source), load_external_data=False).graph.node if kept_float32(node)
    ]
    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep_float
    )
    return keep_float


def linear_module(node) -> str:
    """The encoder module an exported node belongs to: the TorchScript exporter names nodes by module path, so
    `/transformer/encoder/layer.0/attention/self/query/MatMul` is `transformer.encoder.layer.0.attention.self.query`
    (the key of its input's range in `activation_ranges.json`)."""
    return node.name.removeprefix("/").rpartition("/")[0].replace("/", ".")


def quantize_static_file(
    source: str | Path, target: str | Path, ranges: ActivationRanges, probe: list[int]
) -> list[str]:
    """Quantize the ONNX transformer `source` into `target` with every activation scale fixed from `ranges`; returns
    the names of the weight matrices kept in float32. CheckpointError if `ranges` lacks a quantized MatMul's input.

    onnxruntime's static quantization (QDQ): the same matrices and per-channel int8 weights as `quantize_file`, each
    MatMul's input quantized (uint8) with a scale and zero point from its Linear's [min, max] over validation texts
    (`TensorQuantOverrides`, so the calibration pass over `probe`, one tokenized text, sets none of them), its output
    float32 with the bias added in the same kernel (`_fuse_int8_matmuls`), the residual stream unquantized
    (`_float_residuals`). No scale depends on the pass, so a text's answer is its own in passes of any size: over
    the full shared test splits it moves by 2.4e-7 at most (float32's own batch-shape noise) and no label changes
    (bench/batch_invariance.py)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    quantized, keep_float, overrides, missing = [], [], {}, []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue  # attention's activation-by-activation MatMuls stay float32, as in the dynamic recipe
        if kept_float32(node):
            keep_float.append(node.name)
        elif linear_module(node) not in ranges.ranges:
            missing.append(linear_module(node))
        else:
            quantized.append(node.name)
            low, high = ranges.ranges[linear_module(node)]
            overrides[node.input[0]] = [{"rmin": np.float32(min(low, 0.0)), "rmax": np.float32(max(high, 0.0))}]
    if missing or not quantized:
        raise CheckpointError(
            f"activation_ranges.json has no range for {len(missing) or 'any'} of the exported encoder's MatMul "
            f"inputs ({', '.join(missing[:3]) or 'none quantizable'}...): it was measured on another architecture."
        )

    class OnePass(CalibrationDataReader):  # required by quantize_static; every range it would set is overridden
        def __init__(self):
            self.passes = iter(
                [{"input_ids": np.array([probe], np.int64), "attention_mask": np.ones((1, len(probe)), np.int64)}]
            )

        def get_next(self):
            return next(self.passes, None)

    quantize_static(
        str(source),
        str(target),
        OnePass(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=quantized,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        # float32 out of each MatMul, as the dynamic recipe's MatMulIntegerToFloat: no second rounding of the output
        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul"], "TensorQuantOverrides": overrides},
    )
    model = onnx.load(str(target))
    _float_residuals(model)
    _fuse_int8_matmuls(model)
    onnx.save(model, str(target))
    activations = {node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    if not activations <= set(overrides):
        raise CheckpointError(
            f"quantize_static quantized tensors without a measured range: {activations - set(overrides)}"
        )
    return keep_float


def _float_residuals(model) -> None:
    """The QDQ quantizer feeds every reader of a quantized activation its quantize-dequantize round trip, the
    residual Adds and LayerNorms too: give those the float32 tensor again, so that only the MatMuls read int8 (as in
    the dynamic recipe). Rewrites the ModelProto `model` in place."""
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


def _fuse_int8_matmuls(model) -> None:
    """Each quantized Linear (int8 activation and weight dequantized into a MatMul, then its bias Add) as one
    `MatMulIntegerToFloat` (onnxruntime's contrib op, bias included): the QDQ file left onnxruntime's own fusion
    without the bias, one extra Add per Linear, which cost ~8% of texts/s in passes of 1-4 texts. Same results.
    Rewrites the ModelProto `model` in place."""
    from onnx import helper

    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    initializers = {initializer.name for initializer in graph.initializer}
    fused, dropped = {}, set()
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        a, b = producers.get(node.input[0]), producers.get(node.input[1])
        adds = readers.get(node.output[0], [])
        if not (
            a and b and a.op_type == b.op_type == "DequantizeLinear" and len(adds) == 1 and adds[0].op_type == "Add"
        ):
            continue
        bias = [name for name in adds[0].input if name != node.output[0]]
        if len(bias) != 1 or bias[0] not in initializers or not set(b.input) <= initializers:
            continue
        fused[id(adds[0])] = helper.make_node(
            "MatMulIntegerToFloat",  # A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias
            [a.input[0], b.input[0], a.input[1], b.input[1], a.input[2], b.input[2], bias[0]],
            [adds[0].output[0]],
            name=f"{node.name}Integer",
            domain="com.microsoft",
        )
        dropped |= {id(node), id(b)}
    nodes = [fused.get(id(node), node) for node in graph.node if id(node) not in dropped]
    read = {name for node in nodes for name in node.input} | {output.name for output in graph.output}
    nodes = [n for n in nodes if n.op_type != "DequantizeLinear" or any(o in read for o in n.output)]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def quantize_export(
    directory: str | Path, ranges: ActivationRanges | None = None, ranges_digest: str | None = None
) -> dict:
    """Quantize the float32 export in `directory` to `encoder.int8.onnx` beside it, checked against float32 on the
    probe texts first; returns the `int8.json` contents. With the checkpoint's activation `ranges` (and the
    `ranges_digest` of their file) the activation scales are fixed (`quantize_static_file`: batch-invariant, so
    passes of any size); without them, or if they do not fit this encoder, they are per pass (`quantize_file`:
    `int8.json` says why, and the runtime then runs one text per pass)."""
    directory = Path(directory)
    source = directory / ONNX_FILE
    float32 = OnnxEncoderRuntime(directory, threads=1)  # the reference, and the tokenizer of the calibration pass
    staging = Path(tempfile.mkdtemp(prefix=".int8.", dir=directory))  # the int8 file, run the way serving runs it
    try:
        for name in (EXPORT_FILE, TOKENIZER_FILE):
            shutil.copyfile(directory / name, staging / name)
        why_dynamic = None
        if ranges is None:
            why_dynamic = "the checkpoint has no activation_ranges.json (`multitask activation-ranges` writes it)"
        elif ranges.fingerprint != float32.fingerprint:
            why_dynamic = f"activation_ranges.json was measured on encoder {ranges.fingerprint}, not this one"
        else:
            probe = float32.tokenize(_PROBE_TEXTS[:1])[0][0]
            try:
                keep_float = quantize_static_file(source, staging / INT8_ONNX_FILE, ranges, probe)
            except CheckpointError as exc:
                why_dynamic = str(exc)
        if why_dynamic is not None:
            print(f"int8: activation scales per pass (one text per pass): {why_dynamic}", file=sys.stderr)
            keep_float = quantize_file(source, staging / INT8_ONNX_FILE)
        expected, expected_truncated = float32.forward(_PROBE_TEXTS)
        got, truncated = OnnxEncoderRuntime(staging, threads=1, precision="int8").forward(_PROBE_TEXTS)
        cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        if truncated != expected_truncated or float(cosine.min()) < INT8_MIN_COSINE:
            raise CheckpointError(
                f"The int8 quantization of {source} is too far from float32 (least cosine {cosine.min():.4f} < "
                f"{INT8_MIN_COSINE}, truncation flags {truncated} vs {expected_truncated}); serve it with runtime: "
                "onnx (float32). A CPU without VNNI may saturate onnxruntime's u8s8 kernels."
            )
        import onnxruntime

        info = {
            "format": INT8_FORMAT,
            "activations": "dynamic" if why_dynamic else "static",
            "why_dynamic": why_dynamic,
            "activation_ranges_sha256": ranges_digest,
            "quantization": f"onnxruntime.quantization.quantize_{'dynamic' if why_dynamic else 'static'}",
            "weight_type": "QInt8",
            "per_channel": True,
            "kept_float32": keep_float,
            "probe_min_cosine": round(float(cosine.min()), 5),
            "onnxruntime": onnxruntime.__version__,
        }
        (directory / INT8_FILE).write_text(json.dumps(info, indent=2) + "\n")
        # same filesystem: an atomic rename, so a concurrent reader sees no file or a whole, checked one
        (staging / INT8_ONNX_FILE).replace(directory / INT8_ONNX_FILE)
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_parity(directory: Path, texts: list[str], expected: np.ndarray) -> None:
    """The exported files, run the way serving runs them, must give torch's embeddings."""
    got, _ = OnnxEncoderRuntime(directory, threads=1).forward(texts)
    error = float(np.abs(got - expected).max())
    if error > ATOL:
        raise CheckpointError(
            f"The ONNX export of {directory} differs from torch by {error:.2e} (> {ATOL}); serve with runtime: torch."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint directory")
    parser.add_argument("out_dir", help="output directory (replaced if present)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="float32",
        help="int8: also quantize (the float32 export is kept, and made first unless present and current)",
    )  # fmt: skip
    args = parser.parse_args()
    try:
        out_dir = Path(args.out_dir)
        if export_digest(out_dir) == encoder_digest(args.checkpoint):  # current: only the int8 file is missing
            info = json.loads((out_dir / EXPORT_FILE).read_text())
        else:
            info = export_encoder(args.checkpoint, out_dir)
        if args.precision == "int8":
            ranges = read_activation_ranges(args.checkpoint)
            info = {**info, "int8": quantize_export(args.out_dir, ranges, activation_ranges_digest(args.checkpoint))}
    except MultitaskError as exc:  # the parent process re-raises it as the same class (`ensure_export`)
        print(ERROR_PREFIX + json.dumps({"type": type(exc).__name__, "message": str(exc)}), file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(info))


if __name__ == "__main__":
    main()
