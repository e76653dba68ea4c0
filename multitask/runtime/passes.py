"""Running tokenized texts through a model in forward passes cut by length: short texts are never padded to long
ones, and no pass holds more than `max_batch` texts or `max_tokens` padded tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from multitask.runtime.text_window import Tokenized


@dataclass(frozen=True)
class ForwardResult:
    """Texts run through an encoder, in input order."""

    embeddings: np.ndarray  # (n, width) float32
    truncated: list[bool]  # the text was cut to the encoder's window
    token_counts: list[int]  # tokens the encoder read (after truncation, special tokens included)
    pass_sizes: list[int]  # texts per forward pass, in the order they ran
    pass_seconds: list[float]  # wall time of each pass


def length_batches(lengths: list[int], max_batch: int = 0, max_tokens: int = 0) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `max_batch` items and `max_tokens` padded tokens
    (batch size x its longest item; 0 = no limit). A single item longer than `max_tokens` gets a batch alone."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending: the item added is the batch's longest
        too_many = max_batch and len(current) >= max_batch
        too_long = max_tokens and (len(current) + 1) * lengths[i] > max_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def run_in_passes(
    tokenized: list[Tokenized],
    run_pass: Callable[[list[list[int]]], np.ndarray],
    width: int,
    max_batch: int = 0,
    max_tokens: int = 0,
    progress: str | None = None,
) -> ForwardResult:
    """`run_pass` (unpadded token ids of one pass -> (pass size, width) outputs) over every text, in
    `length_batches`; the outputs put back in input order. `progress`: a progress bar with this title."""
    ids = [row for row, _ in tokenized]
    lengths = [len(row) for row in ids]
    out = np.empty((len(ids), width), dtype=np.float32)
    passes = length_batches(lengths, max_batch, max_tokens)
    if progress is not None:
        from tqdm.auto import tqdm  # training and evaluation only: serving processes never import it

        passes = tqdm(passes, desc=progress)
    sizes, seconds = [], []
    for rows in passes:
        start = time.perf_counter()
        out[rows] = run_pass([ids[i] for i in rows])
        seconds.append(time.perf_counter() - start)
        sizes.append(len(rows))
    return ForwardResult(out, [overflowed for _, overflowed in tokenized], lengths, sizes, seconds)
