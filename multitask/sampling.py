"""Task sampling: which task each training step draws its batch from.

- proportional:  P(task) ~ n_task                (big tasks dominate)
- temperature:   P(task) ~ n_task ** (1 / T)     (T=1 is proportional, T->inf is uniform)
- round_robin:   tasks in turn                   (uniform, deterministic)
"""

from __future__ import annotations

import math
import random
from enum import Enum


class SamplingStrategy(str, Enum):
    proportional = "proportional"
    temperature = "temperature"
    round_robin = "round_robin"


def task_sampling_probabilities(
    sizes: dict[str, int], strategy: SamplingStrategy, temperature: float = 2.0
) -> dict[str, float]:
    """The probability of drawing each task under a strategy (round-robin is uniform)."""
    strategy = SamplingStrategy(strategy)  # a plain string ("proportional") must not fall through to temperature
    if not sizes or any(n <= 0 for n in sizes.values()):
        raise ValueError(f"every task needs at least one example, got sizes {sizes}")
    if strategy is SamplingStrategy.round_robin:
        weights = {task: 1.0 for task in sizes}
    elif strategy is SamplingStrategy.proportional:
        weights = {task: float(n) for task, n in sizes.items()}
    else:
        if not temperature > 0:  # also refuses NaN
            raise ValueError(f"temperature must be > 0, got {temperature}")
        # n ** (1/T) in log space, scaled by the largest task, so a small T cannot overflow a float
        largest = math.log(max(sizes.values()))
        weights = {task: math.exp((math.log(n) - largest) / temperature) for task, n in sizes.items()}
    total = sum(weights.values())
    return {task: w / total for task, w in weights.items()}


def task_schedule(
    sizes: dict[str, int], steps: int, strategy: SamplingStrategy, temperature: float = 2.0, seed: int = 0
) -> list[str]:
    """The task of each of `steps` training steps."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    probabilities = task_sampling_probabilities(
        sizes, strategy, temperature
    )  # validates sizes and strategy for every strategy
    tasks = list(sizes)
    if SamplingStrategy(strategy) is SamplingStrategy.round_robin:
        return [tasks[i % len(tasks)] for i in range(steps)]
    return random.Random(seed).choices(tasks, weights=[probabilities[t] for t in tasks], k=steps)
