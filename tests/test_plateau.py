"""Learning-rate decay on a validation plateau (``lr_plateau_patience``)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from recbole.utils import early_stopping

import recbole_attn
from recbole_attn.checkpoint import settings_fingerprint, training_settings
from recbole_attn.plateau import PlateauDecay
from tests.conftest import FAST
from tests.test_reliability import Killed, _killed_then_resumed, _same_outcome


def _rates_after(scores: list[float], patience: int, bigger: bool = True) -> list[float]:
    """The learning rate after each validation score, with RecBole's
    early-stopping state updated after the hook as ``Trainer.fit`` does."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))], lr=1.0)
    trainer = SimpleNamespace(optimizer=optimizer, best_valid_score=float("-inf") if bigger else float("inf"),
                              cur_step=0, valid_metric_bigger=bigger, logger=logging.getLogger("test"))
    hook, rates = PlateauDecay(patience, factor=0.5), []
    for score in scores:
        hook.after_valid_epoch(trainer, score, {})
        trainer.best_valid_score, trainer.cur_step, _, _ = early_stopping(
            score, trainer.best_valid_score, trainer.cur_step, max_step=10, bigger=bigger)
        assert len({group["lr"] for group in optimizer.param_groups}) == 1  # every group alike
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_the_rate_halves_after_each_patience_validations_without_a_new_best():
    #  stalled:     0    0    1     2     3     4     0    1    2
    scores = [0.1, 0.2, 0.19, 0.18, 0.17, 0.16, 0.25, 0.2, 0.2]
    assert _rates_after(scores, patience=2) == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


def test_a_tie_with_the_best_counts_as_a_new_best_as_in_recbole():
    assert _rates_after([0.2, 0.2, 0.2, 0.1], patience=1) == [1, 1, 1, 0.5]


def test_smaller_is_better_metrics_decay_on_rising_scores():
    assert _rates_after([1.0, 0.8, 0.9, 0.95, 0.7], patience=2, bigger=False) == [1, 1, 1, 0.5, 0.5]


def _stalled_before(curve: list[dict]) -> list[int]:
    """Per epoch, the validations in a row without a new best before it."""
    best, stalled, counts = float("-inf"), 0, []
    for entry in curve:
        counts.append(stalled)
        if entry["valid_score"] >= best:
            best, stalled = entry["valid_score"], 0
        else:
            stalled += 1
    return counts


#: A rate high enough that validation stalls within a few epochs of the pattern data.
PLATEAU = {**FAST, "epochs": 8, "stopping_step": 10, "train_batch_size": 64, "learning_rate": 0.05}


@pytest.mark.parametrize("model", ["AttnSeq", "GRU4Rec"])  # our trainer and RecBole's
def test_each_epoch_trains_at_the_rate_its_stalled_validations_give(model, pattern_root):
    settings = {**PLATEAU, "data_path": str(pattern_root), "lr_plateau_patience": 1, "lr_plateau_factor": 0.25}
    result = recbole_attn.run(model, "pattern", config_dict=settings, write_results=False)
    curve = result["curve"]
    rate, expected = settings["learning_rate"], []
    for entry, stalled in zip(curve, _stalled_before(curve)):
        rate *= 0.25 if stalled else 1.0  # patience 1: one lowering per stalled validation
        expected.append(rate)
    assert [entry["learning_rate"] for entry in curve] == pytest.approx(expected)
    assert min(expected) < settings["learning_rate"]  # the data did stall: the test saw a decay


def test_off_by_default_the_rate_stays_constant(pattern_root):
    result = recbole_attn.run("AttnSeq", "pattern", config_dict={**PLATEAU, "data_path": str(pattern_root)},
                              write_results=False)
    assert max(_stalled_before(result["curve"])) > 0  # it stalled, and still
    assert {entry["learning_rate"] for entry in result["curve"]} == {PLATEAU["learning_rate"]}


def test_a_resumed_run_lowers_the_rate_where_the_uninterrupted_one_did(pattern_root, tmp_path, monkeypatch):
    settings = {**PLATEAU, "data_path": str(pattern_root), "lr_plateau_patience": 1,
                "checkpoint_dir": str(tmp_path / "s")}
    uninterrupted = recbole_attn.run("GRU4Rec", "pattern", config_dict=settings, write_results=False)
    rates = [entry["learning_rate"] for entry in uninterrupted["curve"]]
    killed_at = next(epoch for epoch, rate in enumerate(rates) if rate < rates[0]) + 1  # after a decay
    assert killed_at < len(rates)

    def dies(original, self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == killed_at:
            raise Killed
        return original(self, train_data, epoch_idx, *args, **kwargs)

    resumed = _killed_then_resumed(settings, monkeypatch, dies)
    assert resumed["resumed_from"]
    _same_outcome(resumed, uninterrupted)
    assert [entry["learning_rate"] for entry in resumed["curve"]] == rates


def test_the_decay_left_off_keeps_checkpoints_of_older_versions_resumable():
    older = {"model": "AttnSeq", "learning_rate": 0.001, "stopping_step": 10}  # written before the option
    off = {**older, "lr_plateau_patience": 0, "lr_plateau_factor": 0.5}
    on = {**older, "lr_plateau_patience": 3, "lr_plateau_factor": 0.5}
    assert settings_fingerprint(training_settings(off)) == settings_fingerprint(training_settings(older))
    assert settings_fingerprint(training_settings(on)) != settings_fingerprint(training_settings(older))
    other_factor = {**on, "lr_plateau_factor": 0.25}
    assert settings_fingerprint(training_settings(other_factor)) != settings_fingerprint(training_settings(on))
