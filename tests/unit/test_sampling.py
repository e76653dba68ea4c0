"""Task sampling: proportional, temperature-scaled and round-robin give the task mix they promise."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multitask.sampling import SamplingStrategy, task_sampling_probabilities, task_schedule

SIZES = {"topic": 8000, "sentiment": 2000, "emotion": 500}
STEPS = 20_000


def frequencies(schedule: list[str]) -> dict[str, float]:
    counts = Counter(schedule)
    return {task: counts[task] / len(schedule) for task in SIZES}


def test_proportional_probabilities_follow_dataset_sizes():
    probabilities = task_sampling_probabilities(SIZES, SamplingStrategy.proportional)
    assert probabilities == pytest.approx({"topic": 8000 / 10500, "sentiment": 2000 / 10500, "emotion": 500 / 10500})


def test_temperature_one_is_proportional():
    assert task_sampling_probabilities(SIZES, SamplingStrategy.temperature, temperature=1.0) == pytest.approx(
        task_sampling_probabilities(SIZES, SamplingStrategy.proportional)
    )


def test_temperature_two_uses_square_roots_of_sizes():
    roots = {task: math.sqrt(n) for task, n in SIZES.items()}
    expected = {task: r / sum(roots.values()) for task, r in roots.items()}
    assert task_sampling_probabilities(SIZES, SamplingStrategy.temperature, temperature=2.0) == pytest.approx(expected)


def test_large_temperature_approaches_uniform():
    probabilities = task_sampling_probabilities(SIZES, SamplingStrategy.temperature, temperature=1e6)
    assert probabilities == pytest.approx({task: 1 / 3 for task in SIZES}, abs=1e-4)


def test_small_temperature_sharpens_towards_the_biggest_task_without_overflow():
    probabilities = task_sampling_probabilities({"big": 10**6, "small": 10**5}, SamplingStrategy.temperature, 0.01)
    assert probabilities["big"] == pytest.approx(1.0)


def test_higher_temperature_flattens_the_mix():
    biggest = [
        task_sampling_probabilities(SIZES, SamplingStrategy.temperature, t)["topic"] for t in (1.0, 2.0, 5.0, 50.0)
    ]
    assert biggest == sorted(biggest, reverse=True)
    assert biggest[-1] > 1 / 3


@pytest.mark.parametrize(
    "strategy, temperature",
    [(SamplingStrategy.proportional, 2.0), (SamplingStrategy.temperature, 2.0), (SamplingStrategy.temperature, 5.0)],
)
def test_schedule_matches_the_expected_mix_over_many_steps(strategy, temperature):
    expected = task_sampling_probabilities(SIZES, strategy, temperature)
    observed = frequencies(task_schedule(SIZES, STEPS, strategy, temperature, seed=7))
    for task in SIZES:
        assert abs(observed[task] - expected[task]) < 0.015, (task, observed, expected)


def test_round_robin_alternates_exactly():
    schedule = task_schedule(SIZES, 9, SamplingStrategy.round_robin)
    assert schedule == ["topic", "sentiment", "emotion"] * 3
    assert task_sampling_probabilities(SIZES, SamplingStrategy.round_robin) == pytest.approx({t: 1 / 3 for t in SIZES})
    counts = Counter(task_schedule(SIZES, STEPS, SamplingStrategy.round_robin))
    assert counts == {"topic": 6667, "sentiment": 6667, "emotion": 6666}


def test_schedule_is_reproducible_with_a_seed():
    first = task_schedule(SIZES, 500, SamplingStrategy.proportional, seed=3)
    assert first == task_schedule(SIZES, 500, SamplingStrategy.proportional, seed=3)
    assert first != task_schedule(SIZES, 500, SamplingStrategy.proportional, seed=4)
    assert len(first) == 500 and task_schedule(SIZES, 0, SamplingStrategy.proportional) == []


def test_strategy_may_be_given_by_name():
    for strategy in SamplingStrategy:
        assert task_sampling_probabilities(SIZES, strategy.value, 3.0) == task_sampling_probabilities(
            SIZES, strategy, 3.0
        )
        assert task_schedule(SIZES, 50, strategy.value, 3.0, seed=1) == task_schedule(SIZES, 50, strategy, 3.0, seed=1)


@pytest.mark.parametrize("strategy", list(SamplingStrategy))
@pytest.mark.parametrize("sizes", [{}, {"topic": 0}, {"topic": 10, "sentiment": -1}], ids=["none", "zero", "negative"])
def test_tasks_without_examples_are_refused(strategy, sizes):
    with pytest.raises(ValueError, match="at least one example"):
        task_sampling_probabilities(sizes, strategy)
    with pytest.raises(ValueError, match="at least one example"):
        task_schedule(sizes, 10, strategy)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="temperature"):
        task_sampling_probabilities(SIZES, SamplingStrategy.temperature, temperature)
    with pytest.raises(ValueError, match="temperature"):
        task_schedule(SIZES, 10, SamplingStrategy.temperature, temperature)


def test_unknown_strategy_and_negative_steps_are_refused():
    with pytest.raises(ValueError, match="uniform"):
        task_sampling_probabilities(SIZES, "uniform")
    with pytest.raises(ValueError, match="steps"):
        task_schedule(SIZES, -1, SamplingStrategy.round_robin)


@given(
    sizes=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 10**6), min_size=1),
    strategy=st.sampled_from(list(SamplingStrategy)),
    temperature=st.floats(min_value=0.1, max_value=1e6),
)
def test_probabilities_are_a_distribution_over_every_task(sizes, strategy, temperature):
    probabilities = task_sampling_probabilities(sizes, strategy, temperature)
    assert list(probabilities) == list(sizes)
    assert all(p > 0 for p in probabilities.values())
    assert math.isclose(sum(probabilities.values()), 1.0, rel_tol=1e-9)
