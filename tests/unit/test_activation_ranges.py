"""The pure parts of int8's fixed activation scales: which validation texts are measured, which checkpoint module
an exported MatMul belongs to, and reading a checkpoint's ranges file. The measurement and the quantization
themselves run on the real encoder in tests/model (test_batch_invariance.py, test_training.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from multitask.checkpoint.activation_ranges import (
    ActivationRanges,
    activation_ranges_digest,
    read_activation_ranges,
)
from multitask.checkpoint.format import ACTIVATION_RANGES_FILE
from multitask.errors import CheckpointError
from multitask.runtime.onnx_export import linear_module
from multitask.training.activation_ranges import calibration_texts
from tests.support.paths import SHIPPED_CHECKPOINT


def test_calibration_texts_are_spread_evenly_through_each_split_up_to_the_cap():
    validation = {"a": [f"a{i}" for i in range(10)], "b": ["b0", "b1"]}
    assert calibration_texts(validation, per_task=4) == ["a0", "a2", "a5", "a7", "b0", "b1"]
    assert calibration_texts({"a": []}, per_task=4) == []


@pytest.mark.parametrize(
    "node, module",
    [
        (
            "/transformer/encoder/layer.0/attention/self/query/MatMul",
            "transformer.encoder.layer.0.attention.self.query",
        ),
        ("/transformer/encoder/layer.5/output/dense/MatMul", "transformer.encoder.layer.5.output.dense"),
        ("/projection/Gemm", "projection"),
    ],
)
def test_an_exported_node_is_named_by_its_module_path(node, module):
    assert linear_module(SimpleNamespace(name=node)) == module


def test_the_shipped_checkpoint_has_ranges_for_every_linear_of_its_encoder():
    ranges = read_activation_ranges(SHIPPED_CHECKPOINT)
    assert ranges is not None and ranges.fingerprint == "623b1b2b2099a7e9" and ranges.texts == 1024
    layers = [name for name in ranges.ranges if name.startswith("transformer.encoder.layer.")]
    assert len(layers) == 6 * 6  # six layers: query, key, value, attention output, intermediate, output
    assert all(low < 0 < high for low, high in ranges.ranges.values())


def test_a_checkpoint_without_ranges_has_none_and_a_bad_file_is_named(tmp_path):
    assert read_activation_ranges(tmp_path) is None and activation_ranges_digest(tmp_path) is None
    (tmp_path / ACTIVATION_RANGES_FILE).write_text('{"format_version": 1, "ranges": {}}')
    with pytest.raises(CheckpointError, match=f"{ACTIVATION_RANGES_FILE} is not a valid activation ranges file"):
        read_activation_ranges(tmp_path)
    good = ActivationRanges(fingerprint="f", texts=1, source="s", ranges={"projection": (-1.0, 2.0)})
    (tmp_path / ACTIVATION_RANGES_FILE).write_text(good.model_dump_json())
    assert read_activation_ranges(tmp_path) == good and len(activation_ranges_digest(tmp_path)) == 64
