"""Tokenize only the part of a text the encoder can read: whole documents cost about what a paragraph does.

The encoder reads at most `max_length` tokens of a text, but a tokenizer asked to truncate still normalizes,
splits and looks up the whole string first: a 100,000-character article costs ~50x a 2,000-character one for
tokens that are thrown away. So a long text is first cut to a character prefix that holds far more than the token
window (`CHARS_PER_TOKEN` characters per token, ending at a word boundary), and only that prefix is tokenized.

Exact, not approximate: a prefix that ends between words tokenizes to the same leading tokens as the whole text,
and when it overflows the window, so does the whole text. Only when the prefix does *not* fill the window
(pathological text: mostly whitespace, very long "words") is the whole text tokenized instead. Token ids and
truncation flags are therefore those of the whole text in every case (tests/model/test_text_window.py checks this).
"""

from __future__ import annotations

from collections.abc import Callable

CHARS_PER_TOKEN = 32
"""Characters kept per token of the window: English averages 4-5 per WordPiece token, so a 128-token window keeps
4096 characters, ~6x what it needs; a text that still does not fill the window is tokenized whole."""

Tokenized = tuple[list[int], bool]
"""One text's token ids (truncated to the window, special tokens included) and whether the window cut it."""


def window_prefix(text: str, max_tokens: int) -> str:
    """`text`, or its first `max_tokens * CHARS_PER_TOKEN` characters, ending before the last whitespace of that
    span (a cut inside a word could change the word's tokens), when there is one in its second half."""
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    prefix = text[:limit]
    boundary = max(prefix.rfind(space) for space in (" ", "\n", "\t", "\r"))
    return prefix[:boundary] if boundary > limit // 2 else prefix


def tokenize_in_window(
    texts: list[str], max_tokens: int, tokenize: Callable[[list[str]], list[Tokenized]]
) -> list[Tokenized]:
    """`tokenize(texts)`, with each long text replaced by its `window_prefix`: the same ids and flags, for a cost
    bounded by the window. `tokenize` truncates to `max_tokens` and flags the texts it cut."""
    if not texts:
        return []
    prefixes = [window_prefix(text, max_tokens) for text in texts]
    out = tokenize(prefixes)
    unfilled = [i for i, (prefix, text) in enumerate(zip(prefixes, texts)) if len(prefix) < len(text) and not out[i][1]]
    if unfilled:  # the prefix held fewer tokens than the window: only the whole text tells what the encoder reads
        for i, whole in zip(unfilled, tokenize([texts[i] for i in unfilled])):
            out[i] = whole
    return out
