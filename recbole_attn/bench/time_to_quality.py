"""Time to quality: how long the reference model takes to reach each other
model's best validation NDCG@10, seed by seed, beside how long that model
took to reach it.

Seconds per epoch alone cannot compare speed: models differ in how many
epochs they need. Time to an equal validation score can, and the benchmark
rows keep the validation curve it is read from, so the comparison is
generated with the tables and can be recomputed from any saved record.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: The curve score the comparison reads: the benchmark's one validation metric.
CURVE_KEY = "valid_ndcg@10"


def first_seconds_reaching(curve: Sequence[dict[str, Any]], score: float, key: str = CURVE_KEY) -> float | None:
    """Wall seconds (training and validation) until ``curve`` first reaches
    ``score`` (``None``: it never does)."""
    return next((point["elapsed_seconds"] for point in curve if point.get(key, -math.inf) >= score), None)


@dataclass(frozen=True)
class TimeToScore:
    """One run of ``model`` against the reference's run of the same seed."""

    model: str
    seed: int | None
    score: float  #: the model's best validation NDCG@10
    model_seconds: float
    reference_seconds: float | None  #: ``None``: the reference never reached ``score``

    @property
    def ratio(self) -> float | None:
        """The reference's time over the model's: below 1, the reference is there sooner."""
        if self.reference_seconds is None or self.model_seconds <= 0:
            return None
        return self.reference_seconds / self.model_seconds


def times_to_best(rows: Sequence[dict[str, Any]], reference: str | None) -> list[TimeToScore]:
    """Every run of another model whose seed the reference also ran, with a
    validation curve: its best score, when it first reached it, and when the
    reference's run did; in the rows' order."""
    reference_curves = {row.get("seed"): row["curve"] for row in rows
                        if row["label"] == reference and row.get("curve")}
    found = []
    for row in rows:
        curve = row.get("curve")
        if row["label"] == reference or not curve or row.get("seed") not in reference_curves:
            continue
        scores = [point[CURVE_KEY] for point in curve if math.isfinite(point.get(CURVE_KEY, math.nan))]
        if not scores:
            continue
        best = max(scores)
        model_seconds = first_seconds_reaching(curve, best)
        assert model_seconds is not None  # the curve holds its own maximum
        found.append(TimeToScore(row["label"], row.get("seed"), best, model_seconds,
                                 first_seconds_reaching(reference_curves[row.get("seed")], best)))
    return found
