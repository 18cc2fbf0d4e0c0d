"""Named hooks around a trainer's epochs and evaluations, composed in a
visible order instead of wrapping a live trainer's methods.

:func:`build_hooked_trainer` makes one trainer of any RecBole trainer class
(our :class:`~recbole_attn.trainer.AttnTrainer` or RecBole's own) with a
list of :class:`TrainerHook`. Around each training epoch the hooks' ``before``
methods run in list order and their ``after`` methods in reverse order, so
the first hook in the list is the outermost: the runner puts the last
checkpoint first (its save stays outside the epoch clock), then the epoch
clock and budget, then what the caller adds (the benchmark's capture), then
the distributed gathering of metrics.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


class TrainerHook:
    """One concern of a training run; every method does nothing by default."""

    def on_build(self, trainer: Any) -> None:
        """The trainer was built (its model, optimizer and evaluator exist)."""

    def before_train_epoch(self, trainer: Any, epoch_idx: int) -> None:
        """An epoch is about to be trained (raise to stop fitting)."""

    def wrap_train_data(self, trainer: Any, train_data: Any) -> Any:
        """The loader this epoch trains on (default: unchanged)."""
        return train_data

    def after_train_epoch(self, trainer: Any, epoch_idx: int, train_data: Any, loss: Any) -> None:
        """An epoch was trained on ``train_data`` (as wrapped) with ``loss``."""

    def before_valid_epoch(self, trainer: Any) -> None:
        """A validation pass is about to run."""

    def after_valid_epoch(self, trainer: Any, score: float, result: dict[str, Any]) -> None:
        """A validation pass ended with ``score`` and ``result``."""

    def before_evaluate(self, trainer: Any, eval_data: Any) -> None:
        """``trainer.evaluate`` is about to run on ``eval_data``."""

    def wrap_evaluator(self, evaluator: Any) -> Any:
        """The evaluator the trainer computes metrics with (default: unchanged)."""
        return evaluator

    def wrap_collector(self, collector: Any) -> Any:
        """The collector the trainer gathers each evaluation's data with (default: unchanged)."""
        return collector

    #: Whether metrics already cover every process's users, so RecBole's
    #: per-process averaging (``Trainer._map_reduce``) must not run.
    gathers_metrics = False


class HookedTrainer:
    """Mixin in front of a RecBole trainer class: runs ``self.hooks``."""

    hooks: list[TrainerHook]
    evaluator: Any
    eval_collector: Any
    #: The training data's fingerprint, stored in the best-model checkpoint
    #: (compat's ``_save_plain_checkpoint``) as the last checkpoint stores it.
    data_fingerprint: str | None

    def __init__(self, config: Any, model: Any, hooks: Sequence[TrainerHook] = (),
                 data_fingerprint: str | None = None) -> None:
        super().__init__(config, model)  # type: ignore[call-arg]
        self.data_fingerprint = data_fingerprint
        self.hooks = list(hooks)
        for hook in self.hooks:
            self.evaluator = hook.wrap_evaluator(self.evaluator)
            self.eval_collector = hook.wrap_collector(self.eval_collector)
        for hook in self.hooks:
            hook.on_build(self)

    def _train_epoch(self, train_data: Any, epoch_idx: int, *args: Any, **kwargs: Any) -> Any:
        for hook in self.hooks:
            hook.before_train_epoch(self, epoch_idx)
        for hook in self.hooks:
            train_data = hook.wrap_train_data(self, train_data)
        loss = super()._train_epoch(train_data, epoch_idx, *args, **kwargs)  # type: ignore[misc]
        for hook in reversed(self.hooks):
            hook.after_train_epoch(self, epoch_idx, train_data, loss)
        return loss

    def _valid_epoch(self, *args: Any, **kwargs: Any) -> Any:
        for hook in self.hooks:
            hook.before_valid_epoch(self)
        score, result = super()._valid_epoch(*args, **kwargs)  # type: ignore[misc]
        for hook in reversed(self.hooks):
            hook.after_valid_epoch(self, score, result)
        return score, result

    def evaluate(self, eval_data: Any, *args: Any, **kwargs: Any) -> Any:
        for hook in self.hooks:
            hook.before_evaluate(self, eval_data)
        return super().evaluate(eval_data, *args, **kwargs)  # type: ignore[misc]

    def _map_reduce(self, result: Any, num_sample: int) -> Any:
        if any(hook.gathers_metrics for hook in self.hooks):
            return result
        return super()._map_reduce(result, num_sample)  # type: ignore[misc]


@functools.cache
def hooked_class(trainer_class: type) -> type:
    """``trainer_class`` with :class:`HookedTrainer` in front (one class per base)."""
    return type(f"Hooked{trainer_class.__name__}", (HookedTrainer, trainer_class), {})


def build_hooked_trainer(trainer_class: type, config: Any, model: Any, hooks: Sequence[TrainerHook],
                         data_fingerprint: str | None = None) -> Any:
    """A ``trainer_class`` trainer that runs ``hooks`` (first = outermost)."""
    return hooked_class(trainer_class)(config, model, hooks, data_fingerprint)


class Capture(TrainerHook):
    """Remembers the trainer and the data of its latest ``evaluate`` call
    (after a run: the test loader), so that a caller can time or inspect the
    trained model without rebuilding the dataset."""

    def __init__(self) -> None:
        self.trainer: Any = None
        self.eval_data: Any = None

    def on_build(self, trainer: Any) -> None:
        self.trainer = trainer

    def before_evaluate(self, trainer: Any, eval_data: Any) -> None:
        self.eval_data = eval_data
