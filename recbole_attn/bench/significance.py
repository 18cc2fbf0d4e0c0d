"""Is a difference between two models larger than noise? Per-user paired
comparisons over the test users, from the hits each run saved
(:mod:`recbole_attn.user_ranks`), so that any comparison can be recomputed
from the files without retraining.

For a model and the reference, each user's NDCG@10 difference is averaged
over the seeds both ran (seed ``s`` against seed ``s``), and over the users:

* the mean difference, with a paired bootstrap 95% CI (users resampled with
  replacement, ``resamples`` times, seeded);
* a two-sided paired t-test p-value (one-sample t-test of the per-user
  differences against 0; with tens of thousands of users its normal
  approximation is sound even though NDCG is far from normal);
* Holm's step-down correction over the models compared (Holm, 1979), so
  that "significant" holds for the whole table at level ``alpha``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from recbole_attn.user_ranks import UserHits

ALPHA = 0.05
RESAMPLES = 10_000


def discounts(k: int) -> np.ndarray:
    """``1 / log2(rank + 1)`` for ranks 1..k, as RecBole's NDCG."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def per_user_ndcg(hits: UserHits, k: int = 10) -> np.ndarray:
    """Each user's NDCG@k, exactly as RecBole computes it before averaging."""
    if k > hits.hits.shape[1]:
        raise ValueError(f"NDCG@{k} needs the top {k}; the file holds the top {hits.hits.shape[1]}")
    weights = discounts(k)
    dcg = hits.hits[:, :k].astype(np.float64) @ weights
    ideal = np.cumsum(weights)[np.clip(hits.pos_len, 1, k) - 1]
    ndcg: np.ndarray = np.where(hits.pos_len > 0, dcg / ideal, 0.0)
    return ndcg


def per_user_hit(hits: UserHits, k: int = 10) -> np.ndarray:
    """Each user's Hit@k (1.0 or 0.0)."""
    return np.count_nonzero(hits.hits[:, :k], axis=1).clip(max=1).astype(np.float64)


def user_keys(runs: Sequence[UserHits]) -> list[np.ndarray] | None:
    """What identifies each run's users across runs: their original tokens
    when every run saved them (internal ids depend on what a run loaded and
    filtered), else RecBole's internal ids; ``None`` when a run's users are
    unknown (id -1: sampled evaluation)."""
    if all(run.user_token is not None for run in runs):
        return [np.asarray(run.user_token) for run in runs]
    if any((run.user_id < 0).any() for run in runs):
        return None
    return [run.user_id for run in runs]


def aligned(runs: Sequence[UserHits], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(users, values)``: per-user NDCG@k of each run, ``(runs, users)``,
    over the users every run evaluated, sorted by user (:func:`user_keys`).
    Runs whose users are unknown are paired row by row, which holds for runs
    on one dataset, whose loaders keep one user order."""
    keys = user_keys(runs)
    if keys is None:
        if len({len(run.user_id) for run in runs}) > 1:
            raise ValueError("runs without user ids can only be paired when they rank the same number of users")
        return np.arange(len(runs[0].user_id)), np.stack([per_user_ndcg(run, k) for run in runs])
    for run_keys in keys:
        if len(np.unique(run_keys)) < len(run_keys):
            raise ValueError("a user has more than one test row (a split other than leave-one-out): "
                             "per-user comparisons need one row per user")
    common = keys[0]
    for run_keys in keys[1:]:
        common = np.intersect1d(common, run_keys)
    common = np.unique(common)
    values = []
    for run, run_keys in zip(runs, keys):
        order = np.argsort(run_keys, kind="stable")
        where = order[np.searchsorted(run_keys[order], common)]
        values.append(per_user_ndcg(run, k)[where])
    return common, np.stack(values) if values else np.zeros((0, len(common)))


def bootstrap_ci(differences: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of ``differences`` over users resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(differences)
    means = np.empty(resamples)
    block = max(1, 2**22 // max(n, 1))  # at most ~4M indices drawn at a time
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        means[start:stop] = differences[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value of a paired t-test (differences against 0); 1.0 when
    every difference is 0."""
    if len(differences) < 2 or not np.any(differences):
        return 1.0
    if np.all(differences == differences[0]):
        return 0.0  # the same non-zero difference for every user
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: the i-th smallest times
    ``m - i`` (i from 0), made non-decreasing, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (m - position) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    """One model against the reference: per-user NDCG@k, pooled over seeds."""

    model: str
    reference: str
    k: int
    seeds: list[int]
    users: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float = math.nan
    significant: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(model: str, runs: dict[int, UserHits], reference: str, reference_runs: dict[int, UserHits],
            k: int = 10, resamples: int = RESAMPLES, seed: int = 0) -> Comparison | None:
    """``model`` against ``reference`` over the seeds both have (``None`` if
    they share no seed or no user)."""
    seeds = sorted(set(runs) & set(reference_runs))
    if not seeds:
        return None
    _, values = aligned([runs[s] for s in seeds] + [reference_runs[s] for s in seeds], k)
    if values.shape[1] == 0:
        return None  # no user in common: nothing to compare
    differences = (values[: len(seeds)] - values[len(seeds):]).mean(axis=0)  # per user, over seeds
    low, high = bootstrap_ci(differences, resamples, seed)
    return Comparison(model, reference, k, seeds, len(differences), float(differences.mean()), low, high,
                      paired_p_value(differences))


def compare_all(runs: dict[str, dict[int, UserHits]], reference: str, k: int = 10, alpha: float = ALPHA,
                resamples: int = RESAMPLES, seed: int = 0) -> list[Comparison]:
    """Every model of ``runs`` (label -> seed -> hits) against ``reference``,
    Holm-corrected over the models compared."""
    if reference not in runs:
        return []
    found = [compare(label, by_seed, reference, runs[reference], k, resamples, seed)
             for label, by_seed in runs.items() if label != reference]
    return holm_corrected([c for c in found if c is not None], alpha)


def holm_corrected(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """``comparisons`` with Holm-adjusted p-values over them, and whether
    each is significant at ``alpha`` after the correction."""
    adjusted = holm([c.p_value for c in comparisons])
    return [Comparison(**{**c.as_dict(), "p_holm": p, "significant": p < alpha})
            for c, p in zip(comparisons, adjusted)]
