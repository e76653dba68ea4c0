"""How the shared encoder is fine-tuned: not at all (frozen), with LoRA adapters (small checkpoints), or fully.

LoRA adapters are trained with `peft`, saved as plain tensors, and merged into the base weights at load time, so
serving runs an ordinary transformer with no adapter overhead.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import PreTrainedModel

from multitask.checkpoint.manifest import FinetuneMode, LoraSpec


def add_lora(transformer: PreTrainedModel, spec: LoraSpec) -> PreTrainedModel:
    """Wrap the transformer with trainable LoRA adapters; its base weights are frozen."""
    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=list(spec.target_modules)
    )
    return get_peft_model(transformer, config)


def lora_spec_of(peft_model: torch.nn.Module) -> LoraSpec:
    """The `LoraSpec` of a peft-wrapped transformer's adapters (rank, alpha, targets), read from its peft config."""
    config = peft_model.peft_config["default"]
    targets = config.target_modules
    targets = (targets,) if isinstance(targets, str) else tuple(sorted(targets))
    return LoraSpec(r=config.r, alpha=config.lora_alpha, dropout=config.lora_dropout, target_modules=targets)


def encoder_state(transformer: torch.nn.Module, mode: FinetuneMode) -> dict[str, torch.Tensor]:
    """The encoder tensors a checkpoint must store for this mode (empty when frozen)."""
    mode = FinetuneMode(mode)  # a plain string ("lora") must not fall through to "full"
    if mode is FinetuneMode.frozen:
        return {}
    if mode is FinetuneMode.lora:
        state = get_peft_model_state_dict(transformer)
    else:
        state = transformer.state_dict()
    return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}


def apply_encoder_state(
    transformer: PreTrainedModel,
    mode: FinetuneMode,
    lora: LoraSpec | None,
    state: dict[str, torch.Tensor],
    merge: bool = True,
) -> PreTrainedModel:
    """Put a checkpoint's encoder tensors into a freshly loaded base transformer; LoRA is merged away unless
    `merge` is False (the adapters stay separate, e.g. for WiSE-FT to scale them)."""
    mode = FinetuneMode(mode)
    if mode is FinetuneMode.frozen:
        return transformer
    if mode is FinetuneMode.full:
        transformer.load_state_dict(state, strict=True)
        return transformer
    peft_model = add_lora(transformer, lora or LoraSpec())
    result = set_peft_model_state_dict(peft_model, state)
    if result.unexpected_keys:
        raise ValueError(f"LoRA weights do not fit this encoder: unexpected {result.unexpected_keys[:3]}")
    return peft_model.merge_and_unload() if merge else peft_model
