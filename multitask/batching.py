"""Cutting a batch of tokenized texts into forward passes by length: short texts are never padded to long ones."""

from __future__ import annotations


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
