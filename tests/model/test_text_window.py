"""Whole documents are tokenized only as far as the encoder's window reaches, with the ids and truncation flags of
the whole text (multitask/runtime/text_window.py), on the real embedded tokenizer."""

from __future__ import annotations

import copy

import pytest

from multitask.runtime.text_window import CHARS_PER_TOKEN, tokenize_in_window, window_prefix

ARTICLE = "Parliament passed the budget after a long night of debate, and markets rallied at the open. " * 1100
TEXTS = [
    ARTICLE,  # ~100,000 characters of prose
    "東京の市場は上昇した。" * 3000,  # no spaces at all: CJK characters are tokens of their own
    "word" + " " * 20_000 + "tail " * 2000,  # mostly whitespace: the prefix holds one token, the whole text many
    "x" * 50_000,  # one "word" far longer than WordPiece's 100 characters: a single [UNK]
    "A short sentence.",
    "Markets rallied after the vote. " * 40,  # just past the 128-token window
]


@pytest.fixture(scope="module")
def tokenize(minilm_encoder):
    """The encoder's own fast tokenizer, truncating to the window and flagging what it cut (as the runtimes do)."""
    tokenizer = copy.deepcopy(minilm_encoder.tokenizer.backend_tokenizer)
    tokenizer.enable_truncation(minilm_encoder.max_length)
    tokenizer.no_padding()
    seen: list[int] = []

    def run(texts: list[str]) -> list[tuple[list[int], bool]]:
        seen.extend(len(text) for text in texts)
        return [(encoding.ids, bool(encoding.overflowing)) for encoding in tokenizer.encode_batch(texts)]

    run.seen = seen
    return run


def test_windowed_tokenization_equals_whole_text_tokenization(tokenize, minilm_encoder):
    window = minilm_encoder.max_length
    assert tokenize_in_window(TEXTS, window, tokenize) == tokenize(TEXTS)


def test_only_the_window_is_tokenized_for_ordinary_long_texts(tokenize, minilm_encoder):
    window = minilm_encoder.max_length
    tokenize.seen.clear()
    (ids, truncated), (_, cjk_truncated) = tokenize_in_window(TEXTS[:2], window, tokenize)
    assert truncated and cjk_truncated and len(ids) == window
    assert tokenize.seen and max(tokenize.seen) <= window * CHARS_PER_TOKEN  # never the 100,000 characters


def test_prefix_ends_between_words_and_short_texts_are_untouched():
    prefix = window_prefix(ARTICLE, 128)
    assert len(prefix) <= 128 * CHARS_PER_TOKEN and ARTICLE.startswith(prefix)
    assert ARTICLE[len(prefix)] == " "  # cut before a space, never inside a word
    assert window_prefix("A short sentence.", 128) == "A short sentence."
