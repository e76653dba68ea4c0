"""WiSE-FT: the alpha rule, the LoRA scaling, and the step at the end of training or applied to a trained checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from multitask.checkpoint.load import load_model
from multitask.checkpoint.manifest import LoraSpec, read_manifest
from multitask.cli import main
from multitask.errors import MultitaskError
from multitask.finetune import add_lora
from multitask.training.config import TrainConfig
from multitask.training.trainer import train, wise_ft_checkpoint
from multitask.training.wise_ft import LoraScale, WiseFtSettings, choose_alpha
from tests.support.tiny_tasks import TOPIC_PROBES, tiny_config_dict

SCORES = {
    1.0: {"topic": 0.84, "sentiment": 0.74},
    0.8: {"topic": 0.835, "sentiment": 0.731},
    0.6: {"topic": 0.82, "sentiment": 0.72},  # topic 0.02 below alpha 1.0
    0.4: {"topic": 0.84, "sentiment": 0.70},  # sentiment 0.04 below
}


@pytest.mark.parametrize(("tolerance", "expected"), [(0.0, 1.0), (0.01, 0.8), (0.02, 0.6), (0.05, 0.4)])
def test_the_smallest_alpha_within_tolerance_on_every_task_is_kept(tolerance, expected):
    assert choose_alpha(SCORES, tolerance) == expected


def test_an_alpha_better_than_the_fine_tuned_encoder_is_kept():
    assert choose_alpha({1.0: {"t": 0.80}, 0.5: {"t": 0.81}}, 0.0) == 0.5


@pytest.mark.parametrize("alphas", [[0.9, 0.5], [1.0, 1.5], [1.0, -0.1]])
def test_alpha_grids_without_1_or_outside_0_1_are_refused(alphas):
    with pytest.raises(ValueError, match="alpha"):
        WiseFtSettings(alphas=alphas)


def test_wise_ft_needs_lora(tmp_path):
    raw = tiny_config_dict(tmp_path, mode="frozen", wise_ft={"alphas": [1.0, 0.5]})
    with pytest.raises(ValueError, match="wise_ft needs training.mode: lora"):
        TrainConfig.model_validate(raw)


def test_lora_scale_moves_the_encoder_between_base_and_fine_tuned(fresh_minilm_encoder):
    encoder = fresh_minilm_encoder
    tokens = encoder.tokenize(["the senate passed the bill", "a lovely day at the beach"])
    with torch.no_grad():
        base = encoder.pool(**tokens)
        lora = LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=("query", "value"))
        encoder.transformer = add_lora(encoder.transformer, lora).eval()
        for name, parameter in encoder.transformer.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(std=0.05)  # stands in for trained adapters (peft starts B at zero)
        tuned = encoder.pool(**tokens)
        scale = LoraScale(encoder.transformer)
        scale.set(0.0)
        assert torch.allclose(encoder.pool(**tokens), base, atol=1e-5)
        scale.set(0.5)
        half = encoder.pool(**tokens)
        assert not torch.allclose(half, base, atol=1e-3) and not torch.allclose(half, tuned, atol=1e-3)
        scale.set(1.0)
        assert torch.allclose(encoder.pool(**tokens), tuned, atol=1e-6)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny LoRA training run without WiSE-FT: (folder, config, result)."""
    folder = tmp_path_factory.mktemp("lora")
    config = TrainConfig.model_validate(tiny_config_dict(folder, mode="lora"))
    return folder, config, train(config, progress=False)


def test_training_with_wise_ft_keeps_the_alpha_its_rule_picks(tmp_path):
    raw = tiny_config_dict(tmp_path, mode="lora", wise_ft={"alphas": [1.0, 0.5, 0.0], "tolerance": 0.05})
    config = TrainConfig.model_validate(raw)
    result = train(config, progress=False)
    record = read_manifest(config.output_dir).training["wise_ft"]
    scores = {float(alpha): by_task for alpha, by_task in record["validation_macro_f1"].items()}
    assert sorted(scores) == [0.0, 0.5, 1.0]
    assert record["alpha"] == choose_alpha(scores, 0.05)
    assert result.metrics["topic"]["validation"]["macro_f1"] >= scores[1.0]["topic"] - 0.05
    report = config.output_dir / "report"
    assert (report / "wise_ft.png").stat().st_size > 0
    assert "## WiSE-FT" in (report / "report.md").read_text()
    assert json.loads((report / "history.json").read_text())[0]["epoch"] == 1


def test_wise_ft_on_a_trained_checkpoint_scales_its_lora_delta(lora_run, tmp_path):
    _, config, _ = lora_run
    settings = config.training.model_copy(update={"wise_ft": WiseFtSettings(alphas=[1.0, 0.5], tolerance=1.0)})
    later = config.model_copy(update={"training": settings, "output_dir": tmp_path / "wise"})
    result = wise_ft_checkpoint(later, config.output_dir, progress=False)

    assert result.manifest.training["wise_ft"]["alpha"] == 0.5  # tolerance 1.0: the smallest alpha always passes
    trained = load_file(str(config.output_dir / "encoder.safetensors"))
    scaled = load_file(str(later.output_dir / "encoder.safetensors"))
    assert trained.keys() == scaled.keys()
    for name, tensor in trained.items():
        expected = tensor * 0.5 if ".lora_B." in name else tensor
        assert torch.allclose(scaled[name], expected), name
    assert result.manifest.encoder.fingerprint != read_manifest(config.output_dir).encoder.fingerprint
    model = load_model(later.output_dir)  # fingerprints and heads check out
    assert len(model.predict(list(TOPIC_PROBES.values()), tasks=["topic"])) == len(TOPIC_PROBES)
    assert (later.output_dir / "report" / "training_curves.png").is_file()  # redrawn from the run's history.json


def test_cli_wise_ft_in_place_and_its_errors(lora_run, tmp_path, capsys):
    folder, config, _ = lora_run
    raw = yaml.safe_load(json.dumps(tiny_config_dict(folder, mode="lora", wise_ft={"alphas": [1.0, 0.8]})))
    config_file = tmp_path / "wise.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    in_place = tmp_path / "ckpt"
    assert (
        main(
            [
                "wise-ft",
                "--config",
                str(config_file),
                "--checkpoint",
                str(config.output_dir),
                "--output",
                str(in_place),
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["alpha"] in (1.0, 0.8)
    assert (
        main(
            [
                "wise-ft",
                "--config",
                str(config_file),
                "--checkpoint",
                str(in_place),
                "--output",
                str(in_place),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()

    no_wise = tmp_path / "plain.yaml"
    no_wise.write_text(yaml.safe_dump(tiny_config_dict(folder, mode="lora")))
    assert main(["wise-ft", "--config", str(no_wise), "--checkpoint", str(config.output_dir), "--no-progress"]) == 2
    assert "no training.wise_ft section" in capsys.readouterr().err

    other = tiny_config_dict(folder, mode="lora", wise_ft={"alphas": [1.0, 0.8]})
    other["model"]["embedding_dim"] = 64
    with pytest.raises(MultitaskError, match="was not trained with this config's model"):
        wise_ft_checkpoint(TrainConfig.model_validate(other), config.output_dir, progress=False)
