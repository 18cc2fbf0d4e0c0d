"""The epoch clock and the time budget of a run.

:class:`EpochClock` records, per epoch, the training and validation wall
times and the validation result (the run's curve), and enforces
``time_budget`` seconds of fitting. The budget ends training inside the
running epoch, at the first batch past it (:class:`DeadlineLoader`): one
epoch of a prefix-row model on ml-1m takes longer on a CPU than any sensible
budget, so a budget checked only between epochs would not bound the run.
That partial epoch is validated like a whole one (so it can be the best
model), also when ``eval_step`` > 1 would have skipped it
(:func:`validate_last_epoch`: otherwise a run stopped before its first
evaluation step has no model to test), and no further epoch starts.
Several processes (DDP) must stop at the same step, so there the budget is
checked between epochs only, by rank 0.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from recbole_attn import distributed
from recbole_attn.serialization import plain_data
from recbole_attn.hooks import TrainerHook


def fitted_seconds(curve: list[dict[str, Any]]) -> float:
    """Wall seconds of fitting (training and validation) behind a run's ``curve``."""
    spent = 0.0
    for entry in curve:  # an epoch without validation has no elapsed_seconds
        spent = entry.get("elapsed_seconds", spent + entry["train_seconds"] + entry.get("valid_seconds", 0.0))
    return spent


class BudgetExhausted(Exception):
    """Raised before an epoch once ``time_budget`` seconds of fitting are spent."""


class DeadlineLoader:
    """A training loader that stops serving batches once ``deadline``
    (``time.perf_counter`` seconds) has passed, after at least one batch.
    Everything but iteration is the wrapped loader's own."""

    def __init__(self, loader: Any, deadline: float) -> None:
        self.loader, self.deadline = loader, deadline
        self.served, self.cut = 0, False

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        self.served, self.cut = 0, False
        for batch in self.loader:
            if self.served and time.perf_counter() >= self.deadline:
                self.cut = True
                return
            yield batch
            self.served += 1


class EpochClock(TrainerHook):
    """The run's per-epoch curve and its ``budget`` in seconds of fitting
    (``None``: no budget), counted from the clock's creation."""

    def __init__(self, budget: float | None = None) -> None:
        self.budget = budget
        self.curve: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self.carried_seconds = 0.0  # fitting done by the processes a resumed run goes on from
        self._epoch_began = self._valid_began = 0.0

    def carry_on(self, curve: list[dict[str, Any]]) -> None:
        """Go on from a resumed run's ``curve``: the seconds its epochs took
        stay on the clock, so elapsed times (and so the time to the best
        epoch) and the budget count the whole run, as if never interrupted."""
        spent = fitted_seconds(curve)
        self.curve = list(curve)
        self.carried_seconds = spent
        self.start = time.perf_counter() - spent

    def before_train_epoch(self, trainer: Any, epoch_idx: int) -> None:
        self._epoch_began = time.perf_counter()
        spent = bool(self.curve) and self._epoch_began - self.start >= (self.budget or 0)
        if self.budget is not None and distributed.from_rank_zero(spent):
            raise BudgetExhausted

    def wrap_train_data(self, trainer: Any, train_data: Any) -> Any:
        if self.budget is None or distributed.world_size() > 1:
            return train_data
        return DeadlineLoader(train_data, self.start + self.budget)

    def after_train_epoch(self, trainer: Any, epoch_idx: int, train_data: Any, loss: Any) -> None:
        seconds = time.perf_counter() - self._epoch_began
        total = sum(loss) if isinstance(loss, tuple) else loss  # RecBole: a tuple for multi-part losses
        entry = {"epoch": len(self.curve), "train_seconds": seconds,
                 "train_loss": float(total) if total is not None else None, "epoch_fraction": 1.0}
        optimizer = getattr(trainer, "optimizer", None)
        if optimizer is not None and optimizer.param_groups:  # the rate this epoch trained with
            entry["learning_rate"] = float(optimizer.param_groups[0]["lr"])
        if isinstance(train_data, DeadlineLoader) and train_data.cut:
            entry.update(epoch_fraction=train_data.served / max(len(train_data), 1), batches=train_data.served)
        self.curve.append(entry)

    def before_valid_epoch(self, trainer: Any) -> None:
        self._valid_began = time.perf_counter()

    def after_valid_epoch(self, trainer: Any, score: float, result: dict[str, Any]) -> None:
        if self.curve:
            now = time.perf_counter()
            self.curve[-1].update(
                valid_seconds=now - self._valid_began,
                valid_score=float(score),
                valid_result=plain_data(result),
                elapsed_seconds=now - self.start,
            )

    @property
    def budget_cut(self) -> bool:
        """Whether the budget ended the last epoch early."""
        return bool(self.curve) and self.curve[-1].get("epoch_fraction", 1.0) < 1.0

    def epochs_trained(self) -> float:
        """Whole epochs' worth of training done (a cut epoch counts its fraction)."""
        return sum(entry.get("epoch_fraction", 1.0) for entry in self.curve)

    def seconds_per_epoch(self) -> float:
        """Training seconds per whole epoch (a cut epoch scaled by its fraction)."""
        trained = self.epochs_trained()
        return sum(entry["train_seconds"] for entry in self.curve) / trained if trained > 0 else 0.0

    def best_epoch(self, bigger_is_better: bool) -> int | None:
        """The epoch of the model RecBole keeps and tests: on a tie (scores
        are rounded to 4 decimals) the later one, as it saves on ``>=``."""
        best: dict[str, Any] | None = None
        for entry in (entry for entry in self.curve if "valid_score" in entry):
            if best is None or at_least_as_good(entry["valid_score"], best["valid_score"], bigger_is_better):
                best = entry
        return None if best is None else best["epoch"]


def at_least_as_good(score: float, best: float, bigger_is_better: bool) -> bool:
    """RecBole's early-stopping test for a new best model (ties count)."""
    return score >= best if bigger_is_better else score <= best


def validate_last_epoch(trainer: Any, valid_data: Any, clock: EpochClock) -> None:
    """Validate the last epoch if ``eval_step`` > 1 skipped it, keeping it
    as the best model when it is at least as good as the best so far, as
    RecBole's ``fit`` does at an evaluation step."""
    if trainer.eval_step <= 0 or not valid_data or not clock.curve or "valid_score" in clock.curve[-1]:
        return  # eval_step <= 0: RecBole saved every epoch; no validation to run
    score, result = trainer._valid_epoch(valid_data, show_progress=False)
    if at_least_as_good(score, trainer.best_valid_score, trainer.valid_metric_bigger):
        trainer.best_valid_score, trainer.best_valid_result = score, result
        trainer._save_checkpoint(clock.curve[-1]["epoch"])
