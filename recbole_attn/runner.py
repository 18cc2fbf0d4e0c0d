"""One experiment: config -> RecBole dataset and loaders -> model -> trainer
-> results dict (and an atomically written JSON). The CLI, the tests and the
benchmarks all come through :func:`run`. With ``nproc > 1`` (or a
``world_size`` spanning machines) :func:`run` starts that many processes
through :mod:`recbole_attn.distributed`, each runs the same experiment on its
share of the data, rank 0 writes the files, and the parent returns rank 0's
results dict."""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from recbole.data import create_dataset, data_preparation
from recbole.utils import get_trainer, init_seed

from recbole_attn import distributed
from recbole_attn.checkpoint import (
    LastCheckpoint,
    check_resumable,
    data_fingerprint,
    find_last_checkpoint,
    last_checkpoint_path,
    load_checkpoint,
    resume_training,
    training_is_over,
)
from recbole_attn.atomic import check_writable_dir
from recbole_attn.budget import BudgetExhausted, EpochClock, validate_last_epoch
from recbole_attn.serialization import plain_data
from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import attach_seen_filters
from recbole_attn.data.checks import check_dataset_files
from recbole_attn.errors import RunFailed, UsageError
from recbole_attn.hooks import TrainerHook, build_hooked_trainer
from recbole_attn.item_init import initialize_item_table
from recbole_attn.logs import run_log, summary_logger
from recbole_attn.models.base import AttnSequentialRecommender
from recbole_attn.plateau import PlateauDecay
from recbole_attn.run_claim import CheckpointClaim, claim, lock_path
from recbole_attn.results import machine, unique_results_path, versions, write_json_atomic
from recbole_attn.trainer import AttnTrainer, NonFiniteLossError
from recbole_attn.user_ranks import RANKS_SUFFIX, UserRanks

logger = logging.getLogger(__name__)


def build_trainer(config: AttnConfig, model: Any, hooks: Sequence[TrainerHook] = (),
                  data_fingerprint: str | None = None) -> Any:
    """Our trainer for plugin models; RecBole's own choice for its models,
    so baselines train exactly as in RecBole; either runs ``hooks``
    (:mod:`recbole_attn.hooks`). The checkpoint name gets a random tag:
    RecBole's is ``<Model>-<time to the second>.pth``, which two runs started
    in the same second would share (and overwrite); every process of a
    multi-process run uses rank 0's name."""
    if isinstance(model, AttnSequentialRecommender):
        trainer_class: type = AttnTrainer
    else:
        trainer_class = get_trainer(config["MODEL_TYPE"], config["model"])
    trainer = build_hooked_trainer(trainer_class, config, model, hooks, data_fingerprint)
    trainer.saved_model_file = distributed.from_rank_zero(_free_checkpoint_name(trainer.saved_model_file))
    return trainer


def _free_checkpoint_name(recbole_name: str) -> str:
    """``<Model>-<time>-<random tag>.pth`` such that neither it nor its
    last checkpoint exists yet: a run never writes over another's files."""
    stem, suffix = os.path.splitext(recbole_name)
    while True:
        name = f"{stem}-{uuid.uuid4().hex[:6]}{suffix}"
        if not os.path.exists(name) and not os.path.exists(last_checkpoint_path(name)):
            return name


def run(
    model: str | type,
    dataset: str,
    config_files: Sequence[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    cmd_args: Sequence[str] = (),
    write_results: bool = True,
    hooks: Sequence[TrainerHook] = (),
    test: bool = True,
) -> dict[str, Any]:
    """Train, validate and test ``model`` on ``dataset`` the RecBole way.

    Returns the results dict: metrics, best epoch, per-epoch curve, times,
    final config, versions and machine; when ``write_results`` it is also
    saved as JSON under ``output_dir`` and its path is in ``results_file``.
    ``hooks``: more :class:`~recbole_attn.hooks.TrainerHook` for the trainer,
    after the run's own (one process only).
    ``test=False``: the test split is dropped as soon as the data is split and
    never evaluated (hyper-parameter search); ``test`` is then ``None``.
    ``nproc``/``world_size`` > 1: the processes are started here and this
    returns what rank 0 returned (see :mod:`recbole_attn.distributed`).
    """
    began = time.perf_counter()
    config = AttnConfig(model, dataset, config_files, config_dict, cmd_args)
    launch = distributed.plan(config)
    if launch is None:
        return _run_config(config, began, write_results, hooks, test)
    if hooks:
        raise UsageError("hooks run in the calling process only; a multi-process run (nproc > 1) takes none")
    check_dataset_files(config)  # a bad dataset fails here, before any process starts
    return distributed.spawn(launch, _run_process, model, dataset, config_files, config_dict, cmd_args,
                             write_results=write_results, test=test)


def _run_process(
    model: str | type,
    dataset: str,
    config_files: Sequence[str] | None,
    config_dict: dict[str, Any] | None,
    cmd_args: Sequence[str],
    write_results: bool,
    overrides: dict[str, Any],
    test: bool = True,
) -> dict[str, Any]:
    """One process of a multi-process run (``overrides``: its rank, the port)."""
    began = time.perf_counter()
    config = AttnConfig(model, dataset, config_files, config_dict, cmd_args, overrides=overrides)
    return _run_config(config, began, write_results, test=test)


def _run_config(
    config: AttnConfig, began: float, write_results: bool, extra_hooks: Sequence[TrainerHook] = (),
    test: bool = True,
) -> dict[str, Any]:
    """The experiment :func:`run` describes, in this process: every cheap
    check first (nothing is written when one fails), then the run, logged."""
    check_writable_dir(config["checkpoint_dir"], "checkpoint_dir")
    if write_results:
        check_writable_dir(config["output_dir"], "output_dir")
    check_dataset_files(config)
    resume = config["resume"]
    with ExitStack() as claims:  # no other run may write this run's checkpoints until it has tested
        named = None
        if resume not in (None, "", False) and str(resume).lower() != "auto":
            if os.path.isfile(str(resume)):  # claimed before it is read: the state read is the latest
                claims.enter_context(_claim_checkpoint(str(resume)))
            named = (str(resume), load_checkpoint(str(resume)))  # missing or unreadable: fails before the data
        with run_log(config) as log_file:
            summary_logger.info(config)
            return _experiment(config, began, write_results, extra_hooks, log_file, claims, test, named)


def _experiment(
    config: AttnConfig, began: float, write_results: bool, extra_hooks: Sequence[TrainerHook], log_file: Any,
    claims: ExitStack, test: bool = True, named_resume: tuple[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    init_seed(config["seed"], config["reproducibility"])
    splits = _load_splits(config, test)
    data_seconds = time.perf_counter() - began

    data_hash = data_fingerprint(splits.train.dataset)
    resume = named_resume or _auto_resume(config, data_hash, claims)
    if resume:  # a checkpoint of another run fails here, before the trainer makes folders
        check_resumable(resume[1], resume[0], config, data_hash)
    init_seed(config["seed"] + distributed.rank(), config["reproducibility"])  # RecBole: + local_rank, per machine
    training = _build_training(config, splits.train, write_results, extra_hooks, data_hash)
    trainer, clock = training.trainer, training.clock
    if resume:
        finished = _resume(training, *resume, splits.train)
    else:
        claims.enter_context(_claim_checkpoint(training.last.path))
        finished = False

    fit_began = time.perf_counter()
    stopped_by_budget = clock.budget_cut if finished else _fit(training, splits)
    fit_seconds = clock.carried_seconds + time.perf_counter() - fit_began
    distributed.barrier()  # rank 0 has finished writing the best model the test reloads
    test_began = time.perf_counter()
    test_result = _test(trainer, splits.test)
    test_seconds = time.perf_counter() - test_began

    result: dict[str, Any] = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": float(trainer.best_valid_score),
        "valid_metric": config["valid_metric"],
        "best_valid": plain_data(trainer.best_valid_result),
        "test": plain_data(test_result),
        "best_epoch": clock.best_epoch(config["valid_metric_bigger"]),
        "epochs_run": len(clock.curve),  # begun; the last one may be cut by the budget
        "epochs_trained": clock.epochs_trained(),
        "stopped_by_budget": stopped_by_budget,
        "times": {
            "data_seconds": data_seconds,
            "fit_seconds": fit_seconds,
            "train_seconds_per_epoch": clock.seconds_per_epoch(),
            "test_seconds": test_seconds,
            "total_seconds": time.perf_counter() - began,
        },
        "curve": clock.curve,
        # supervised next items per epoch: one per prefix row in RecBole's mode
        "train_targets": getattr(trainer, "train_targets", None) or len(splits.train.dataset),
        "dataset_stats": {
            "users": splits.data.user_num,
            "items": splits.data.item_num,
            "interactions": splits.interactions,
            "train_rows": len(splits.train.dataset),
            # users the test split ranks (sharding splits the rows, not this count)
            "test_users": splits.test.sample_size if splits.test is not None else 0,
        },
        "data_fingerprint": data_hash,
        "checkpoint": trainer.saved_model_file,
        "last_checkpoint": training.last.path,
        "log_file": str(log_file) if log_file else None,
        "resumed_from": resume[0] if resume else None,
        "world_size": distributed.world_size(),
        "config": plain_data(config.final_config_dict),
        "versions": versions(type(trainer.model)),
        "machine": machine(config["device"]),
    }
    if write_results and not distributed.is_rank_zero():
        result["results_file"] = None  # rank 0 writes the one file
    elif write_results:
        _write_results(result, config["output_dir"], training.ranks, splits.data)
    return result


@dataclass
class _Splits:
    """The dataset as read (counts for the results) and its three loaders;
    ``test`` is None when the run must not read the test split."""

    data: Any
    interactions: int
    train: Any
    valid: Any
    test: Any


def _load_splits(config: AttnConfig, test: bool) -> _Splits:
    """Read, filter and split the data (the test split dropped unless
    ``test``); attach the seen-item filters; in a multi-process run give
    each process its share of the users to evaluate."""
    data = _create_dataset(config)
    summary_logger.info(data)
    interactions = data.inter_num  # before data_preparation: it rewrites data into prefix rows in place
    train_data, valid_data, test_data = _prepare_splits(config, data)
    if not test:
        test_data = None  # nothing below can read the test split
    if config["filter_seen"]:
        attach_seen_filters(train_data, valid_data, test_data)
    if not config["single_spec"]:  # each user evaluated once, by one process
        distributed.shard_evaluation(valid_data)
        if test_data is not None:
            distributed.shard_evaluation(test_data)
    return _Splits(data, interactions, train_data, valid_data, test_data)


@dataclass
class _Training:
    """A trainer and the hooks the experiment reads back after fitting."""

    trainer: Any
    clock: EpochClock
    last: LastCheckpoint
    ranks: UserRanks | None


def _build_training(config: AttnConfig, train_data: Any, write_results: bool,
                    extra_hooks: Sequence[TrainerHook], data_hash: str | None) -> _Training:
    """The model (item table initialised, on its device) and a trainer with
    the run's hooks: last checkpoint, epoch clock, learning-rate decay on a
    plateau, the caller's, per-user ranks, and metric gathering across
    processes. Both checkpoint files record ``data_hash``, the training
    data's fingerprint."""
    recommender = config.model_class(config, train_data.dataset).to(config["device"])
    initialize_item_table(recommender, config, train_data.dataset)  # on the device, with its frozen-row mask
    logger.info(recommender)
    parallel = not config["single_spec"]
    clock = EpochClock(config["time_budget"])
    last = LastCheckpoint(train_data, extra=lambda: {"curve": clock.curve}, data_hash=data_hash)
    ranks = UserRanks() if config["save_user_ranks"] and write_results and not parallel else None
    if config["save_user_ranks"] and parallel:
        logger.warning("save_user_ranks: per-user ranks are not saved for multi-process runs")
    # first = outermost: the last checkpoint is written outside the epoch clock
    plateau = [PlateauDecay(config["lr_plateau_patience"], config["lr_plateau_factor"])
               ] if config["lr_plateau_patience"] else []
    hooks = [last, clock, *plateau, *extra_hooks, *([ranks] if ranks else []),
             *([distributed.GatherMetrics()] if parallel else [])]
    trainer = build_trainer(config, recommender, hooks, data_hash)
    return _Training(trainer, clock, last, ranks)


def _test(trainer: Any, test_data: Any | None) -> dict[str, Any] | None:
    """The best model's test metrics (None when the test split was dropped)."""
    if test_data is None:
        return None
    config = trainer.config
    result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    if not result:
        raise RunFailed(f"the test of {config['model']} on {config['dataset']} gave no metrics")
    return result


def _resume(training: _Training, resume_file: str, state: dict[str, Any], train_data: Any) -> bool:
    """Load the interrupted run's checked ``state`` into the trainer and its
    clock; returns whether that run had already finished training."""
    trainer = training.trainer
    resume_training(trainer, state, resume_file, train_data)
    training.clock.carry_on(state["extra"].get("curve", []))
    training.last.resumed_path = resume_file
    return training_is_over(state, trainer.epochs, trainer.stopping_step)


def _fit(training: _Training, splits: _Splits) -> bool:
    """Train to the epoch cap, early stopping or the budget (then the cut
    epoch is validated too); returns whether the budget stopped it. A
    diverged loss is a :class:`NonFiniteLossError` naming the last good
    checkpoint."""
    trainer, clock, last = training.trainer, training.clock, training.last
    train_data, valid_data = splits.train, splits.valid
    config = trainer.config
    stopped_by_budget = False
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
        last.save(finished=True)
    except BudgetExhausted:
        stopped_by_budget = True
    except (NonFiniteLossError, ValueError) as error:
        if isinstance(error, ValueError) and str(error) != "Training loss is nan":  # RecBole's trainer
            raise
        raise NonFiniteLossError(_diverged_message(error, last)) from None
    stopped_by_budget = stopped_by_budget or clock.budget_cut
    if stopped_by_budget:
        validate_last_epoch(trainer, valid_data, clock)
        logger.info(f"time_budget of {config['time_budget']}s spent after {clock.epochs_trained():.2f} epochs")
    return stopped_by_budget


def _write_results(result: dict[str, Any], output_dir: str, ranks: UserRanks | None, data: Any) -> None:
    """Write ``result`` (and the per-user ranks beside it) under a fresh
    name in ``output_dir``, all or nothing: on a write error nothing stays
    half-written and the error still gives the test metrics."""
    path = unique_results_path(output_dir, f"{result['model']}-{result['dataset']}")
    result["results_file"] = str(path)
    try:
        if ranks is not None and ranks.latest is not None:
            result["ranks_file"] = str(path)[: -len(".json")] + RANKS_SUFFIX
            ranks.save(result["ranks_file"], data)
        write_json_atomic(path, result, exclusive=True)
    except OSError as error:
        if result.get("ranks_file") and os.path.exists(result["ranks_file"]):
            os.unlink(result["ranks_file"])  # no ranks without their results
        raise OSError(
            error.errno,
            f"could not write the results file {path} ({error.strerror or error}); nothing was "
            f"left half-written. Test metrics: {result['test']}; best model: {result['checkpoint']}",
        ) from None


def _prepare_splits(config: AttnConfig, data: Any) -> tuple[Any, Any, Any]:
    """RecBole's ``data_preparation``; a split that leaves training,
    validation or test without a row is a :class:`UsageError` saying why."""
    most = int(max(data.user_counter.values(), default=0)) if data.uid_field else 0
    split = (config["eval_args"] or {}).get("split")

    def empty(part: str) -> UsageError:
        return UsageError(
            f"dataset {config['dataset']!r}: the split {split} leaves {part} empty; the users have at most "
            f"{most} interactions each, and leave-one-out needs 4 per user (training, validation and test rows "
            f"each take one, and the first item has no history)"
        )

    try:
        parts = data_preparation(config, data)
    except ValueError as error:  # torch's RandomSampler on an empty training set
        if "num_samples should be a positive integer" in str(error):
            raise empty("training") from None
        raise
    for part, loader in zip(("training", "validation", "test"), parts):
        if len(loader.dataset) == 0:
            raise empty(part)
    return parts


def _create_dataset(config: AttnConfig) -> Any:
    """RecBole's ``create_dataset``, with filtering that leaves nothing
    reported as a :class:`UsageError` naming the filter options."""
    try:
        data = create_dataset(config)
    except ValueError as error:
        if "feat is empty" not in str(error):
            raise
        data = None
    if data is None or data.inter_num == 0:
        filters = {key: config[key] for key in ("user_inter_num_interval", "item_inter_num_interval",
                                                "val_interval", "rm_dup_inter") if config[key] is not None}
        raise UsageError(f"dataset {config['dataset']!r} has no interactions left after filtering ({filters})")
    return data


def _auto_resume(config: AttnConfig, data_hash: str | None, claims: ExitStack) -> tuple[str, dict[str, Any]] | None:
    """``resume=auto``: the newest last checkpoint (path, state) of this
    model and dataset, trained on the data whose fingerprint is
    ``data_hash``, in ``checkpoint_dir``, that no other run holds; rank 0
    picks and claims it (into ``claims``) for every process (none found:
    start afresh)."""
    if str(config["resume"]).lower() != "auto":
        return None
    found = (find_last_checkpoint(config["checkpoint_dir"], config, data_hash, claims)
             if distributed.is_rank_zero() else None)
    path = distributed.from_rank_zero(found[0] if found else None)
    logger.info(f"resume=auto: {path or 'no last checkpoint found, starting afresh'}")
    if path is None:
        return None
    return found if found and found[0] == path else (path, load_checkpoint(path))


def _claim_checkpoint(path: str) -> CheckpointClaim:
    """Rank 0's claim on the last checkpoint ``path`` (the one process that
    writes it); every process raises :class:`UsageError` when another run
    holds it."""
    held = claim(path) if distributed.is_rank_zero() else CheckpointClaim(path, None)
    if not distributed.from_rank_zero(held is not None):
        raise UsageError(
            f"checkpoint {path} is in use: another run is training from it (it holds {lock_path(path)}); "
            f"wait for that run to end, or start afresh without --resume"
        )
    return held or CheckpointClaim(path, None)


def _diverged_message(error: Exception, last: LastCheckpoint) -> str:
    """One line: where training diverged and which checkpoint is still good."""
    where = str(error).split(";")[0]  # AttnTrainer's names the loss and the epoch
    if str(error) == "Training loss is nan":  # RecBole's trainer
        where = f"training loss is nan in epoch {last.current_epoch}"
    if last.saved_epoch is None:
        return f"{where}; no last checkpoint was written before it (try a lower learning_rate, check the data)"
    return f"{where}; the last good checkpoint (epoch {last.saved_epoch}) is intact: {last.path}"
