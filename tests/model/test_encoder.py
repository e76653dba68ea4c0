"""The shared encoder: mask-aware mean pooling, projection to 1024, truncation, and the encoder fingerprint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from multitask.config import DEFAULT_TASKS, EMBEDDED_ENCODER, ModelConfig
from multitask.encoder import SentenceEncoder, mean_pool, resolve_encoder_source, weights_fingerprint
from multitask.errors import CheckpointError

SHORT = "Stocks rallied."
LONGER = [
    "The central bank kept interest rates unchanged on Thursday, citing persistent inflation in services.",
    "After a scoreless first half the visitors scored twice in the final ten minutes to win the cup final.",
]


def embed(encoder: SentenceEncoder, texts: list[str]) -> torch.Tensor:
    with torch.inference_mode():
        return encoder(**encoder.tokenize(texts))


def test_embedding_is_the_same_alone_and_batched_with_longer_sentences(minilm_encoder):
    alone = embed(minilm_encoder, [SHORT])[0]
    first = embed(minilm_encoder, [SHORT, *LONGER])[0]
    middle = embed(minilm_encoder, [LONGER[0], SHORT, LONGER[1]])[1]
    # the batch really was padded, so the test exercises the mask
    tokens = minilm_encoder.tokenize([SHORT, *LONGER])
    assert tokens["attention_mask"][0].sum() < tokens["attention_mask"].shape[1]
    torch.testing.assert_close(first, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(middle, alone, atol=1e-5, rtol=0)


def test_embeddings_have_the_shared_dimension(minilm_encoder):
    embeddings = embed(minilm_encoder, [SHORT, *LONGER])
    assert embeddings.shape == (3, 1024)
    assert minilm_encoder.native_dim == 384  # MiniLM's hidden size, projected to 1024
    assert torch.isfinite(embeddings).all()


def test_different_sentences_get_different_embeddings(minilm_encoder):
    embeddings = embed(minilm_encoder, LONGER)
    assert not torch.allclose(embeddings[0], embeddings[1], atol=1e-3)


def test_long_text_is_truncated_to_max_length(minilm_encoder):
    long_text = " ".join(["word"] * 1000)
    tokens = minilm_encoder.tokenize([long_text, SHORT])
    assert minilm_encoder.max_length == 128
    assert tokens["input_ids"].shape == (2, 128)
    assert tokens["input_ids"][0, -1].item() == minilm_encoder.tokenizer.sep_token_id  # still a well-formed input
    assert embed(minilm_encoder, [long_text]).shape == (1, 1024)


def test_mean_pool_averages_only_unmasked_tokens():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (batch=1, seq=3, hidden=2)
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(tokens, mask), torch.tensor([[2.0, 3.0]]))


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=4),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_mean_pool_ignores_whatever_is_in_padded_positions(lengths, seed):
    generator = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    tokens = torch.randn(len(lengths), seq, 5, generator=generator)
    mask = torch.tensor([[1] * n + [0] * (seq - n) for n in lengths])
    noisy = torch.where(mask.unsqueeze(-1).bool(), tokens, torch.randn(tokens.shape, generator=generator) * 1e3)
    expected = torch.stack([tokens[i, :n].mean(dim=0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(mean_pool(noisy, mask), expected, atol=1e-5, rtol=1e-5)


def test_fingerprint_is_stable_across_loads(minilm_encoder, fresh_minilm_encoder):
    assert len(minilm_encoder.base_fingerprint) == 16
    assert fresh_minilm_encoder.base_fingerprint == minilm_encoder.base_fingerprint
    assert fresh_minilm_encoder.fingerprint == minilm_encoder.base_fingerprint


def test_fingerprint_does_not_depend_on_where_the_encoder_is_installed(minilm_encoder, tmp_path):
    source = Path(resolve_encoder_source(EMBEDDED_ENCODER))
    copy = tmp_path / "somewhere" / "else" / "minilm"
    copy.mkdir(parents=True)
    for item in source.iterdir():
        if item.name == "model.safetensors":
            (copy / item.name).symlink_to(item)  # same bytes, another path; no 90 MB copy
        elif item.is_file():
            shutil.copy(item, copy / item.name)
    moved = SentenceEncoder.load(ModelConfig(encoder=str(copy), tasks=DEFAULT_TASKS))
    assert moved.base_fingerprint == minilm_encoder.base_fingerprint


def test_fingerprint_changes_when_a_weight_changes(fresh_minilm_encoder):
    before = weights_fingerprint(fresh_minilm_encoder.transformer, fresh_minilm_encoder.tokenizer)
    with torch.no_grad():
        fresh_minilm_encoder.transformer.embeddings.word_embeddings.weight[0, 0] += 1e-3
    after = weights_fingerprint(fresh_minilm_encoder.transformer, fresh_minilm_encoder.tokenizer)
    assert after != before


def test_fingerprint_changes_when_the_tokenizer_changes_token_ids(minilm_encoder):
    cased = AutoTokenizer.from_pretrained(resolve_encoder_source(EMBEDDED_ENCODER), do_lower_case=False)
    assert cased("Hello")["input_ids"] != minilm_encoder.tokenizer("Hello")["input_ids"]
    assert weights_fingerprint(minilm_encoder.transformer, cased) != minilm_encoder.base_fingerprint


def test_embedded_encoder_resolves_to_the_packaged_model_folder():
    folder = Path(resolve_encoder_source(EMBEDDED_ENCODER))
    assert (folder / "config.json").is_file()
    assert (folder / "model.safetensors").is_file()


def test_unknown_embedded_encoder_lists_the_available_one():
    with pytest.raises(ValueError, match="embedded:all-MiniLM-L6-v2"):
        resolve_encoder_source("embedded:no-such-model")


def test_local_encoder_folder_without_config_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        resolve_encoder_source(str(tmp_path))
