"""Temperature scaling (Guo et al., 2017): one scalar per task that divides the logits so confidences match accuracy."""

from __future__ import annotations

import torch


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising the validation NLL of softmax(logits / T).

    logits: (n, num_labels) float; labels: (n,) long
    """
    logits, labels = logits.detach().float(), labels.detach().long()
    log_t = torch.zeros((), requires_grad=True)  # optimise log T so T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))
