"""Early stopping keeps the best epoch's weights and knows which epoch that was (the training log names it)."""

from __future__ import annotations

import torch
from torch import nn

from multitask.training.trainer import _BestEpoch


def test_the_best_epoch_is_kept_and_named_and_patience_stops_the_run():
    module = nn.Linear(1, 1, bias=False)
    best = _BestEpoch(patience=2)
    stopped = []
    for weight, score in [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (4.0, 0.65)]:
        with torch.no_grad():
            module.weight.fill_(weight)
        stopped.append(best.stop_after(score, module))
    assert stopped == [False, False, False, True]  # two epochs in a row without gain
    assert (best.epoch, best.score) == (2, 0.7)
    assert best.state["weight"].item() == 2.0  # a copy of epoch 2's weights, not the module's current ones
