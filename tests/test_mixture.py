"""xstilts.tasks.mixture: sampling probabilities (exact), the seeded schedule (deterministic, and its
proportions statistically), and the checks on a mixture's definition."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from xstilts.tasks import get_task
from xstilts.tasks.mixture import ANLI_PLUS, TaskMixture, sample_schedule, sampling_probabilities

approx = pytest.approx


def test_proportional_probabilities_are_size_shares():
    mixture = TaskMixture(("a", "b", "c"), "proportional")
    # 1 + 3 + 6 = 10 examples
    assert sampling_probabilities(mixture, {"a": 1, "b": 3, "c": 6}) == approx({"a": 0.1, "b": 0.3, "c": 0.6})
    assert list(sampling_probabilities(mixture, {"c": 6, "b": 3, "a": 1})) == ["a", "b", "c"]  # the mixture's order
    assert mixture.probabilities({"a": 1, "b": 3, "c": 6}) == sampling_probabilities(mixture, {"a": 1, "b": 3, "c": 6})
    # the temperature is ignored by proportional sampling
    assert sampling_probabilities(TaskMixture(("a", "b"), "proportional", 5.0), {"a": 1, "b": 3}) == approx({"a": 0.25, "b": 0.75})


def test_temperature_probabilities():
    # T = 2: weights sqrt(1) = 1 and sqrt(4) = 2 -> 1/3, 2/3
    assert sampling_probabilities(TaskMixture(("a", "b"), "temperature", 2.0), {"a": 1, "b": 4}) == approx(
        {"a": 1 / 3, "b": 2 / 3})
    # T = 3: cube roots of 8 and 27 are 2 and 3 -> 2/5, 3/5
    assert sampling_probabilities(TaskMixture(("a", "b"), "temperature", 3), {"a": 8, "b": 27}) == approx(
        {"a": 0.4, "b": 0.6})
    # T = 1 is proportional
    assert sampling_probabilities(TaskMixture(("a", "b"), "temperature", 1.0), {"a": 1, "b": 3}) == approx(
        {"a": 0.25, "b": 0.75})
    # T = 0.5 squares: 1 and 9 -> 0.1, 0.9 (sharper than proportional)
    assert sampling_probabilities(TaskMixture(("a", "b"), "temperature", 0.5), {"a": 1, "b": 3}) == approx(
        {"a": 0.1, "b": 0.9})
    # a huge T is close to uniform
    far = sampling_probabilities(TaskMixture(("a", "b"), "temperature", 1e6), {"a": 1, "b": 1000})
    assert far["a"] == approx(0.5, abs=1e-5)
    # small T with large sizes does not overflow: 10^6 ** 100 is far beyond a float
    sharp = sampling_probabilities(TaskMixture(("a", "b"), "temperature", 0.01), {"a": 10**6, "b": 2 * 10**6})
    assert sharp == approx({"a": 1 / (1 + 2**100), "b": 1 - 1 / (1 + 2**100)}) and math.fsum(sharp.values()) == approx(1)


def test_sizes_must_match_the_mixture():
    mixture = TaskMixture(("a", "b"))
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        sampling_probabilities(mixture, {"a": 1})
    with pytest.raises(ValueError, match=r"unexpected \['c'\]"):
        sampling_probabilities(mixture, {"a": 1, "b": 2, "c": 3})
    with pytest.raises(ValueError, match="task 'b': size must be an integer >= 1, got 0"):
        sampling_probabilities(mixture, {"a": 1, "b": 0})
    with pytest.raises(ValueError, match="size must be an integer"):
        sampling_probabilities(mixture, {"a": 1, "b": 2.5})


def test_mixture_definition_is_checked():
    with pytest.raises(ValueError, match="is empty"):
        TaskMixture(())
    with pytest.raises(TypeError, match="tuple of task names"):
        TaskMixture("mnli")
    with pytest.raises(ValueError, match="names a task twice"):
        TaskMixture(("a", "a"))
    with pytest.raises(ValueError, match="sampling must be one of proportional, temperature"):
        TaskMixture(("a",), "uniform")
    for bad in (0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            TaskMixture(("a",), "temperature", bad)
    with pytest.raises(Exception):
        TaskMixture(("a",)).tasks = ("b",)  # frozen


def test_schedule_is_deterministic_per_seed():
    mixture = TaskMixture(("a", "b", "c"), "temperature", 2.0)
    sizes = {"a": 5, "b": 50, "c": 500}
    first = list(sample_schedule(mixture, sizes, 300, seed=7))
    assert first == list(sample_schedule(mixture, sizes, 300, seed=7))
    assert first != list(sample_schedule(mixture, sizes, 300, seed=8))
    assert first[:100] == list(sample_schedule(mixture, sizes, 100, seed=7))  # a prefix of the longer run
    assert list(sample_schedule(mixture, sizes, 0)) == []
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        list(sample_schedule(mixture, sizes, -1))


def test_schedule_walks_each_task_through_permutations():
    mixture = TaskMixture(("small", "large"), "proportional")
    sizes = {"small": 7, "large": 21}
    drawn: dict[str, list[int]] = {"small": [], "large": []}
    for task, index in sample_schedule(mixture, sizes, 2000, seed=3):
        assert 0 <= index < sizes[task]
        drawn[task].append(index)
    for task, indices in drawn.items():
        n = sizes[task]
        full_passes = len(indices) // n
        assert full_passes >= 3, task
        for p in range(full_passes):  # every pass sees every example exactly once
            assert sorted(indices[p * n:(p + 1) * n]) == list(range(n)), (task, p)
        assert indices[:n] != indices[n:2 * n]  # reshuffled between passes


@pytest.mark.parametrize("sampling, temperature", [("proportional", 1.0), ("temperature", 2.0), ("temperature", 0.5)])
def test_schedule_proportions_match_the_probabilities(sampling, temperature):
    mixture = TaskMixture(("a", "b", "c"), sampling, temperature)
    sizes = {"a": 100, "b": 300, "c": 600}
    probabilities = sampling_probabilities(mixture, sizes)
    steps = 20000
    counts = Counter(task for task, _ in sample_schedule(mixture, sizes, steps, seed=11))
    for task, p in probabilities.items():
        # binomial: mean steps * p, standard deviation sqrt(steps p (1 - p)); allow 4.5 of them
        sd = math.sqrt(steps * p * (1 - p))
        assert abs(counts[task] - steps * p) <= 4.5 * sd, (task, counts[task], steps * p)


def test_schedule_chi_square_over_many_seeds_is_not_extreme():
    """Across 20 seeds, the chi-square statistic (2 degrees of freedom) of 3000-step schedules
    should average near its expectation, 2: a biased sampler would push it far above."""
    mixture = TaskMixture(("a", "b", "c"), "temperature", 1.5)
    sizes = {"a": 10, "b": 200, "c": 4000}
    probabilities = sampling_probabilities(mixture, sizes)
    statistics = []
    for seed in range(20):
        counts = Counter(task for task, _ in sample_schedule(mixture, sizes, 3000, seed=seed))
        statistics.append(sum((counts[t] - 3000 * p) ** 2 / (3000 * p) for t, p in probabilities.items()))
    assert sum(statistics) / len(statistics) < 4.0  # mean of chi2(2) is 2; its sd over 20 draws is ~0.45


def test_anli_plus_mixture_names_registered_nli_tasks():
    assert ANLI_PLUS.tasks == ("anli", "mnli", "snli", "fever_nli") and ANLI_PLUS.sampling == "proportional"
    for name in ANLI_PLUS.tasks:
        assert get_task(name).labels == get_task("anli_plus").labels
