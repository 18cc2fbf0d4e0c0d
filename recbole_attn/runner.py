"""One experiment: config -> RecBole dataset and loaders -> model -> trainer
-> results dict (and an atomically written JSON). The CLI, the tests and the
benchmarks all come through :func:`run`."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recbole.data import create_dataset, data_preparation
from recbole.utils import get_trainer, init_seed

from recbole_attn.compat import plain_data
from recbole_attn.config import AttnConfig
from recbole_attn.data import attach_seen_filters
from recbole_attn.datasets import check_dataset_files
from recbole_attn.models.base import AttnSequentialRecommender
from recbole_attn.results import machine, unique_results_path, versions, write_json_atomic
from recbole_attn.trainer import AttnTrainer

logger = logging.getLogger(__name__)


class BudgetExhausted(Exception):
    """Raised between epochs once ``time_budget`` seconds of fitting are spent."""


class EpochClock:
    """Records, per epoch, the training and validation wall times and the
    validation result, by wrapping the trainer's own epoch methods; stops
    fitting between epochs once ``budget`` seconds are spent."""

    def __init__(self, trainer: Any, budget: float | None = None) -> None:
        self.curve: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self._train_seconds = 0.0
        train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

        def timed_train_epoch(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            if budget is not None and self.curve and began - self.start >= budget:
                raise BudgetExhausted
            out = train_epoch(*args, **kwargs)
            self._train_seconds = time.perf_counter() - began
            self.curve.append({"epoch": len(self.curve), "train_seconds": self._train_seconds})
            return out

        def timed_valid_epoch(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            score, result = valid_epoch(*args, **kwargs)
            if self.curve:
                self.curve[-1].update(
                    valid_seconds=time.perf_counter() - began,
                    valid_score=float(score),
                    valid_result=plain_data(result),
                    elapsed_seconds=time.perf_counter() - self.start,
                )
            return score, result

        trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, timed_valid_epoch

    def best_epoch(self, bigger_is_better: bool) -> int | None:
        scored = [entry for entry in self.curve if "valid_score" in entry]
        if not scored:
            return None
        pick = max if bigger_is_better else min
        return pick(scored, key=lambda entry: entry["valid_score"])["epoch"]


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))


def build_trainer(config: AttnConfig, model: Any) -> Any:
    """Our trainer for plugin models; RecBole's own choice for its models,
    so baselines train exactly as in RecBole."""
    if isinstance(model, AttnSequentialRecommender):
        return AttnTrainer(config, model)
    return get_trainer(config["MODEL_TYPE"], config["model"])(config, model)


def run(
    model: str | type,
    dataset: str,
    config_files: Sequence[str] | None = None,
    config_dict: dict[str, Any] | None = None,
    cmd_args: Sequence[str] = (),
    write_results: bool = True,
) -> dict[str, Any]:
    """Train, validate and test ``model`` on ``dataset`` the RecBole way.

    Returns the results dict: metrics, best epoch, per-epoch curve, times,
    final config, versions and machine; when ``write_results`` it is also
    saved as JSON under ``output_dir`` and its path is in ``results_file``.
    """
    began = time.perf_counter()
    config = AttnConfig(model, dataset, config_files, config_dict, cmd_args)
    _configure_logging(config["state"])
    check_dataset_files(config)
    init_seed(config["seed"], config["reproducibility"])

    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    if config["filter_seen"]:
        attach_seen_filters(train_data, valid_data, test_data)
    data_seconds = time.perf_counter() - began

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_class = config.model_class
    recommender = model_class(config, train_data.dataset).to(config["device"])
    logger.info(recommender)
    trainer = build_trainer(config, recommender)
    clock = EpochClock(trainer, config["time_budget"])

    fit_began = time.perf_counter()
    stopped_by_budget = False
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
    except BudgetExhausted:
        stopped_by_budget = True
        logger.info(f"time_budget of {config['time_budget']}s spent after {len(clock.curve)} epochs")
    best_valid_score, best_valid = trainer.best_valid_score, trainer.best_valid_result
    fit_seconds = time.perf_counter() - fit_began
    test_began = time.perf_counter()
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    test_seconds = time.perf_counter() - test_began

    train_times = [entry["train_seconds"] for entry in clock.curve]
    result: dict[str, Any] = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": float(best_valid_score),
        "valid_metric": config["valid_metric"],
        "best_valid": plain_data(best_valid),
        "test": plain_data(test),
        "best_epoch": clock.best_epoch(config["valid_metric_bigger"]),
        "epochs_run": len(clock.curve),
        "stopped_by_budget": stopped_by_budget,
        "times": {
            "data_seconds": data_seconds,
            "fit_seconds": fit_seconds,
            "train_seconds_per_epoch": sum(train_times) / max(len(train_times), 1),
            "test_seconds": test_seconds,
            "total_seconds": time.perf_counter() - began,
        },
        "curve": clock.curve,
        # supervised next items per epoch: one per prefix row in RecBole's mode
        "train_targets": getattr(trainer, "train_targets", None) or len(train_data.dataset),
        "dataset_stats": {
            "users": data.user_num,
            "items": data.item_num,
            "interactions": data.inter_num,
            "train_rows": len(train_data.dataset),
        },
        "checkpoint": trainer.saved_model_file,
        "config": plain_data(config.final_config_dict),
        "versions": versions(),
        "machine": machine(config["device"]),
    }
    if write_results:
        path = unique_results_path(config["output_dir"], f"{result['model']}-{result['dataset']}")
        result["results_file"] = str(path)
        write_json_atomic(path, result)
    return result
