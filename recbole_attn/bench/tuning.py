"""An equal tuning budget: every model of a benchmark gets the same number of
trials of Optuna's TPE sampler (Bergstra et al., NeurIPS 2011; seeded) over
the search space its YAML declares, scored on validation NDCG@10 alone.
Trials run with ``test=False`` (:func:`recbole_attn.run`), which drops the
test split before training, so tuning can never read it.

A search space file (``properties/search/<Model>.yaml``, or a plugin class's
``search_space_file``) maps each key to one distribution::

    learning_rate: {log_uniform: [0.0001, 0.01]}
    hidden_dropout_prob: {choice: [0.1, 0.2, 0.3, 0.5]}
    n_layers: {int: [1, 3]}
    weight_decay: {uniform: [0.0, 0.0001]}
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recbole_attn import registry
from recbole_attn.bench.run_settings import BENCHMARK_FLAGS
from recbole_attn.config import parse_cmd_args
from recbole_attn.errors import UsageError
from recbole_attn.values import read_yaml_file

SEARCH_DIR = Path(__file__).resolve().parents[1] / "properties" / "search"
DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int")
#: What trials are scored on; never a test metric.
TUNE_METRIC = "ndcg@10"


def search_space_file(model: str) -> Path:
    """The model class's own ``search_space_file``, else ours."""
    own = getattr(registry.get_model_class(model), "search_space_file", None)
    return Path(own) if own else SEARCH_DIR / f"{model}.yaml"


def available() -> list[str]:
    """Models that ship a search space here."""
    return sorted(path.stem for path in SEARCH_DIR.glob("*.yaml"))


def _check_range(file: Path, key: str, kind: str, bounds: Any) -> None:
    numbers = isinstance(bounds, list) and len(bounds) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
    if not numbers or bounds[0] >= bounds[1] or (kind == "log_uniform" and bounds[0] <= 0) or (
            kind == "int" and not all(isinstance(b, int) for b in bounds)):
        raise UsageError(f"{file}: {key}: {kind} needs [low, high] with low < high"
                         f"{' and low > 0' if kind == 'log_uniform' else ''}"
                         f"{', integers' if kind == 'int' else ''}, got {bounds!r}")


def search_space(model: str) -> dict[str, tuple[str, Any]]:
    """``{key: (distribution, arguments)}`` of ``model``'s search space file;
    :class:`UsageError` naming the file and key when it is missing or wrong."""
    file = search_space_file(model)
    if not file.is_file():
        raise UsageError(f"--tune: no search space for {model} ({file} does not exist; a plugin model names "
                         f"its own with a search_space_file class attribute); models with one here: "
                         f"{', '.join(available())}")
    space = {}
    for key, spec in read_yaml_file(file).items():
        if key in BENCHMARK_FLAGS:  # the record states one budget and cap for every row
            raise UsageError(f"{file}: {key} is set by the benchmark's {BENCHMARK_FLAGS[key]}, not tuned")
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS):
            raise UsageError(f"{file}: {key}: expected one of {{{', '.join(DISTRIBUTIONS)}}}: ..., got {spec!r}")
        kind, arguments = next(iter(spec.items()))
        if kind == "choice":
            if not isinstance(arguments, list) or not arguments:
                raise UsageError(f"{file}: {key}: choice needs a non-empty list, got {arguments!r}")
        else:
            _check_range(file, key, kind, arguments)
        space[key] = (kind, arguments)
    if not space:
        raise UsageError(f"{file} declares no key to tune")
    return space


def row_space(spec: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """``spec``'s model's search space without the keys the row fixes itself
    (``AttnRNN[general]``'s ``attention_type``): a draw of those would never
    reach training. :class:`UsageError` when nothing is left to tune."""
    space = {key: found for key, found in search_space(spec["model"]).items() if key not in spec["fixed_keys"]}
    if not space:
        raise UsageError(f"--tune: {spec['label']} fixes every key of {search_space_file(spec['model'])}; "
                         f"nothing is left to tune")
    return space


def suggest(trial: Any, space: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """One setting drawn by ``trial`` (an ``optuna.Trial``) from ``space``."""
    settings = {}
    for key, (kind, arguments) in space.items():
        if kind == "choice":
            # Optuna stores plain scalars only: lists (NARM's dropout_probs) are chosen by index
            index = trial.suggest_categorical(key, list(range(len(arguments))))
            settings[key] = arguments[index]
        elif kind == "int":
            settings[key] = trial.suggest_int(key, *arguments)
        else:
            settings[key] = trial.suggest_float(key, *arguments, log=kind == "log_uniform")
    return settings


def apply_settings(spec: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (a planned row) with ``settings`` (a tuning trial's, or the
    best one) applied: above the command line, config files and shared
    properties, below the keys the row fixes itself (``NAME[...]``, its
    seed), the same for trials and for the seeded runs after them."""
    return {
        **spec, "settings": dict(settings),
        "config_dict": {**spec["config_dict"], **settings, **spec["fixed_keys"]},
        "cmd_args": [f"--{key}={value}" for key, value in parse_cmd_args(spec["cmd_args"]).items()
                     if key not in settings],
    }


def tune_row(spec: dict[str, Any], trials: int, run_trial: Callable[[dict[str, Any]], dict[str, Any]],
             seed: int = 0, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """``trials`` settings for ``spec``'s model, each trained by ``run_trial``
    (:func:`~recbole_attn.bench.measure.run_row` or its process) without its
    test split; returns the best setting (``None`` when every trial failed)
    and every trial. Trial 0 is the untuned row itself (``settings == {}``),
    so the winner is never below the untuned row on the tuning seed's
    validation; the other ``trials - 1`` are drawn by TPE."""
    try:
        import optuna
    except ImportError:
        raise UsageError("--tune needs Optuna: pip install 'recbole-attn[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = row_space(spec)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    history: list[dict[str, Any]] = []

    def run_setting(number: int, settings: dict[str, Any]) -> float:
        trial_spec = {**apply_settings(spec, settings), "label": f"{spec['label']} trial {number}",
                      "test": False, "ranks_file": None}
        row = run_trial(trial_spec)
        if row.get("test") is not None:
            raise RuntimeError(f"trial {number} of {spec['label']} evaluated the test split")
        value = (row.get("best_valid") or {}).get(TUNE_METRIC)
        history.append({"trial": number, "settings": settings, "status": row.get("status"),
                        f"valid_{TUNE_METRIC}": value, "epochs_run": row.get("epochs_run"),
                        "fit_seconds": row.get("fit_seconds"), "error": row.get("error")})
        echo(f"  {spec['label']} trial {number}: valid NDCG@10 {value} with {settings or 'its defaults'}")
        return float(value) if value is not None else float("nan")  # a failed trial: NaN, never chosen

    if trials > 0:
        run_setting(0, {})
    study.optimize(lambda trial: run_setting(trial.number + 1, suggest(trial, space)), n_trials=max(trials - 1, 0))
    finished = [entry for entry in history
                if entry[f"valid_{TUNE_METRIC}"] is not None and math.isfinite(entry[f"valid_{TUNE_METRIC}"])]
    found: dict[str, Any] = {"best": None, f"best_valid_{TUNE_METRIC}": None, "trials": history,
                             "sampler": "optuna TPESampler", "seed": seed,
                             "defaults_trial": trials > 0}
    if not finished:  # the model gets no seeded runs; the other models go on
        echo(f"  every tuning trial of {spec['label']} failed: no seeded runs for it (trials in the JSON)")
        return {**found, "error": "every trial failed"}
    best = max(finished, key=lambda entry: entry[f"valid_{TUNE_METRIC}"])
    return {**found, "best": best["settings"], f"best_valid_{TUNE_METRIC}": best[f"valid_{TUNE_METRIC}"]}
