"""Single-process training: a tiny separable task is learned, the frozen-mode cache is reused, bad configs are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from multitask.checkpoint.activation_ranges import read_activation_ranges
from multitask.checkpoint.load import load_model
from multitask.cli import main
from multitask.data import read_task_file
from multitask.encoder import SentenceEncoder
from multitask.errors import MultitaskError
from multitask.training.config import TrainConfig, load_train_config
from multitask.training.trainer import train
from tests.support.tiny_tasks import SENTIMENT_PROBES, TOPIC_PROBES, tiny_config_dict


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    """One frozen-encoder training run on the tiny tasks: (config, result)."""
    config = TrainConfig.model_validate(tiny_config_dict(tmp_path_factory.mktemp("frozen"), mode="frozen"))
    return config, train(config, progress=False)


def test_tiny_training_learns_a_separable_task(frozen_run):
    config, result = frozen_run
    for task in ("topic", "sentiment"):
        assert result.metrics[task]["validation"]["macro_f1"] >= 0.9, result.metrics[task]["validation"]
    assert result.history and result.history[0]["epoch"] == 1
    assert (config.output_dir / "report" / "metrics.json").is_file()

    model = load_model(config.output_dir)
    assert [r["topic"]["label"] for r in model.predict(list(TOPIC_PROBES.values()), tasks=["topic"])] == list(
        TOPIC_PROBES
    )
    assert [r["sentiment"]["label"] for r in model.predict(list(SENTIMENT_PROBES.values()))] == list(SENTIMENT_PROBES)


def test_training_writes_the_int8_activation_ranges_of_its_encoder(frozen_run):
    """What the int8 runtime fixes its activation scales from: every Linear of the encoder as exported, measured on
    the run's validation texts."""
    config, result = frozen_run
    ranges = read_activation_ranges(config.output_dir)
    assert ranges is not None and ranges.fingerprint == result.manifest.encoder.fingerprint
    validation = sum(len(read_task_file(config.data[task.name].validation, task)) for task in config.model.tasks)
    assert ranges.texts == min(validation, 512 * len(config.model.tasks))
    encoder = load_model(config.output_dir).encoder
    linears = {name for name, module in encoder.named_modules() if isinstance(module, torch.nn.Linear)}
    assert set(ranges.ranges) == linears
    assert all(low <= high for low, high in ranges.ranges.values())


def test_frozen_mode_writes_the_embedding_cache_and_reuses_it(frozen_run, monkeypatch):
    config, first = frozen_run
    cache_dir = config.training.frozen_cache_dir
    entries = sorted(cache_dir.glob("*.safetensors"))
    assert len(entries) == 4  # train + validation of two tasks
    assert not list(cache_dir.glob("*.tmp"))

    def no_encoding(*args, **kwargs):
        raise AssertionError("frozen mode re-encoded texts although the cache holds them")

    monkeypatch.setattr(SentenceEncoder, "pool", no_encoding)
    # measuring the int8 activation ranges runs the encoder by design (on the saved checkpoint, after training)
    monkeypatch.setattr("multitask.training.trainer.write_activation_ranges", lambda *args: None)
    again = train(config.model_copy(update={"output_dir": config.output_dir.parent / "again"}), progress=False)
    assert sorted(cache_dir.glob("*.safetensors")) == entries
    assert again.metrics["topic"]["validation"]["macro_f1"] == pytest.approx(
        first.metrics["topic"]["validation"]["macro_f1"]
    )  # same seed, same cached inputs: same result


@pytest.mark.parametrize(
    ("training", "field"),
    [
        ({"epochs": 0}, "training.epochs"),
        ({"mode": "half"}, "training.mode"),
        ({"epoch": 3}, "training.epoch"),  # a typo is refused, not silently ignored
    ],
)
def test_bad_yaml_config_names_the_field(tmp_path, capsys, training, field):
    raw = tiny_config_dict(tmp_path)
    raw["training"].update(training)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))

    with pytest.raises(MultitaskError) as caught:
        load_train_config(path)
    assert field in str(caught.value) and str(path) in str(caught.value)

    assert main(["train", "--config", str(path)]) == 2
    assert field in capsys.readouterr().err


def test_unparsable_yaml_and_missing_file_are_clear_errors(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(MultitaskError, match="not valid YAML"):
        load_train_config(path)
    with pytest.raises(MultitaskError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")


def test_train_refuses_to_write_over_a_checkpoint_unless_asked(tmp_path, capsys):
    """`checkpoints/default` is tracked and a trained checkpoint is hours of work: an output folder holding files is
    refused before anything is trained or written; `--overwrite` is how to mean it (`make train-default` passes it)."""
    raw = tiny_config_dict(tmp_path)
    existing = Path(raw["output_dir"])
    existing.mkdir(parents=True)
    (existing / "config.json").write_text('{"kept": true}')
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))

    assert main(["train", "--config", str(path), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "--overwrite" in error and str(existing) in error
    assert (existing / "config.json").read_text() == '{"kept": true}' and len(list(existing.iterdir())) == 1

    assert main(["train", "--config", str(path), "--no-progress", "--overwrite"]) == 0
    assert "kept" not in (existing / "config.json").read_text() and (existing / "model.safetensors").is_file()
    logged = capsys.readouterr().err
    # no bars with --no-progress; the kept epoch named
    assert "Loading weights" not in logged and "kept epoch" in logged


def test_a_label_without_training_examples_is_named_in_a_warning(tmp_path, capsys):
    from multitask.training.trainer import load_splits

    raw = tiny_config_dict(tmp_path)
    raw["model"]["tasks"][0]["labels"].append("weather")  # in the config, in no file
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    task = raw["model"]["tasks"][0]["name"]

    splits = load_splits(load_train_config(path))
    warning = capsys.readouterr().err
    assert f"task {task!r}: label(s) ['weather']" in warning and "no training examples" in warning
    assert len(splits[task]["train"]) > 0  # a warning, not a refusal
