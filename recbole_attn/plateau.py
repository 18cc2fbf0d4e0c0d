"""Learning-rate decay on a validation plateau (``lr_plateau_patience``).

A constant rate trades speed for a lower final score: on the sparse Amazon
sets a high rate climbs fastest and then stalls, a low one ends higher but
needs many more epochs. Lowering the rate when validation stalls gets both,
and needs no epoch count fixed in advance, so it fits early stopping (as
``ReduceLROnPlateau`` does; see ``docs/benchmarks.md`` for measurements).

The hook keeps no state of its own: the count of validations without a new
best is the trainer's early-stopping count (``cur_step``) and the rate lives
in the optimizer, and a last checkpoint stores both, so a resumed run decays
exactly where the uninterrupted run would have.
"""
from __future__ import annotations

from typing import Any

from recbole_attn.budget import at_least_as_good
from recbole_attn.hooks import TrainerHook


def validations_without_best(trainer: Any, score: float) -> int:
    """How many validations in a row, counting the one that gave ``score``,
    found no new best model (0: it is a new best). Read before RecBole's
    ``fit`` updates its early-stopping state with ``score``."""
    if at_least_as_good(score, trainer.best_valid_score, trainer.valid_metric_bigger):
        return 0
    return int(trainer.cur_step) + 1


class PlateauDecay(TrainerHook):
    """Multiplies every parameter group's learning rate by ``factor`` after
    each ``patience`` validations in a row without a new best model."""

    def __init__(self, patience: int, factor: float) -> None:
        self.patience, self.factor = patience, factor

    def after_valid_epoch(self, trainer: Any, score: float, result: dict[str, Any]) -> None:
        stalled = validations_without_best(trainer, score)
        if stalled == 0 or stalled % self.patience:
            return
        for group in trainer.optimizer.param_groups:
            group["lr"] *= self.factor
        trainer.logger.info(f"learning rate lowered to {trainer.optimizer.param_groups[0]['lr']:.3g} "
                            f"after {stalled} validations without a new best")
