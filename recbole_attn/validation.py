"""Check every setting a run uses before any data is read.

RecBole checks few values and late: ``epochs=0`` tests an untrained model
with exit 0, ``valid_metric=foo@10`` fails after a whole epoch, ``topk=0``
ends in a traceback. :func:`validate_settings` turns each of these into one
:class:`~recbole_attn.errors.UsageError` line naming the key, the value and
what is valid. :func:`unknown_keys` finds keys that no property file
declares (typos such as ``learning_rat``), with the closest known key.
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import recbole

from recbole_attn.errors import UsageError, check_choice, check_positive, check_probability
from recbole_attn.values import read_yaml_file

Check = Callable[[str, Any], None]
RECBOLE_PROPERTIES = Path(recbole.__file__).resolve().parent / "properties"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Keys RecBole reads in code with no default in any of its property files.
CODE_ONLY_KEYS = frozenset({
    "model", "dataset", "config_files", "device", "encoding", "local_rank", "world_size", "save_step",
    "tail_ratio", "token_num_threshold", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "single_spec",
    "valid_neg_sample_args", "test_neg_sample_args", "valid_metric_bigger",
})


def _fail(key: str, value: Any, valid: str) -> UsageError:
    return UsageError(f"{key} must be {valid}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int | None = None) -> Check:
    def check(key: str, value: Any) -> None:
        if not _is_int(value) or (minimum is not None and value < minimum):
            raise _fail(key, value, "an integer" + (f" >= {minimum}" if minimum is not None else ""))
    return check


def number(minimum: float, strict: bool = False, optional: bool = False) -> Check:
    """A finite number above (``strict``) or at least ``minimum``; ``None`` too when ``optional``."""
    def check(key: str, value: Any) -> None:
        if optional and value is None:
            return
        if not _is_number(value) or value < minimum or (strict and value == minimum):
            bound = f"{'>' if strict else '>='} {minimum:g}"
            raise _fail(key, value, f"a finite number {bound}" + (" or None" if optional else ""))
    return check


def open_fraction(key: str, value: Any) -> None:
    if not _is_number(value) or not 0 < value < 1:
        raise _fail(key, value, "a number in (0, 1)")


def boolean(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(key, value, "True or False")


def text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise _fail(key, value, "a non-empty string")


def check_unrepeated(key: str, names: Sequence[str], value: Any) -> None:
    """Refuse a field named twice in ``value`` (its ``names``): the last
    value would win, or the field would count twice."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(f"{key} names {', '.join(map(repr, repeated))} more than once, got {value!r}")


def field_names(key: str, value: Any) -> None:
    names = [value] if isinstance(value, str) else value
    if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        raise _fail(key, value, "a list of field names")
    check_unrepeated(key, list(names or ()), value)


def topk(key: str, value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(_is_int(k) and k >= 1 for k in values):
        raise _fail(key, value, "an integer >= 1 or a list of them, e.g. [5,10]")


def choice(*choices: str, any_case: bool = False) -> Check:
    """One of ``choices``; with ``any_case``, in any letter case (RecBole
    lower-cases the value itself)."""
    def check(key: str, value: Any) -> None:
        check_choice(key, value.lower() if any_case and isinstance(value, str) else value, choices)
    return check


def metric_names() -> dict[str, bool]:
    """RecBole's metric registry: lower-case name -> whether it takes ``@k``."""
    from recbole.evaluator.base_metric import TopkMetric
    from recbole.evaluator.register import metrics_dict

    return {name: issubclass(cls, TopkMetric) for name, cls in metrics_dict.items()}


def metrics(key: str, value: Any) -> None:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise _fail(key, value, "a metric name or a list of them, e.g. ['Recall','NDCG']")
    known = metric_names()
    for name in names:
        if name.lower() not in known:
            from recbole.evaluator.register import metrics_dict

            choices = sorted(cls.__name__ for cls in metrics_dict.values())
            raise UsageError(f"unknown metric {name!r} in {key}. Valid choices: {', '.join(choices)}")


_EVAL_MODE = re.compile(r"full|labeled|(uni|pop)[1-9][0-9]*")
#: RecBole's ``valid_only`` and ``test_only`` leave the test or the validation
#: split empty; a run here validates every epoch and tests the best.
_SPLIT_LS = ("valid_and_test",)
_ONE_INTERVAL = r"\s*[\[(]\s*-?(\d+(\.\d*)?|inf)\s*,\s*-?(\d+(\.\d*)?|inf)\s*[\])]\s*"
_INTERVAL = re.compile(rf"^{_ONE_INTERVAL}(;{_ONE_INTERVAL})*$")  # RecBole joins several with ';'


def eval_args(key: str, value: Any) -> None:
    """RecBole's evaluation protocol: ``split`` (``RS`` three ratios or
    ``LS`` leave-one-out), ``order`` (RO/TO), ``group_by`` (user/none),
    ``mode`` (full, labeled, uniN, popN; or one per phase)."""
    if not isinstance(value, dict):
        raise _fail(key, value, "a dict such as {'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'full'}")
    unknown = sorted(set(value) - {"split", "order", "group_by", "mode"})
    if unknown:
        raise UsageError(f"{key} has unknown part {unknown[0]!r}. Valid parts: split, order, group_by, mode")
    split = value.get("split")
    ratios_ok = isinstance(split, dict) and list(split) == ["RS"] and isinstance(split["RS"], list) and \
        len(split["RS"]) == 3 and all(_is_number(r) and r >= 0 for r in split["RS"]) and sum(split["RS"]) > 0
    loo_ok = isinstance(split, dict) and list(split) == ["LS"] and split["LS"] in _SPLIT_LS
    if split is not None and not (ratios_ok or loo_ok):
        raise _fail(f"{key} split", split, "{'RS': [train, valid, test ratios]} or {'LS': 'valid_and_test'} "
                                           "(a run validates every epoch and tests the best one)")
    if value.get("order") is not None:
        check_choice(f"{key} order", value["order"], ("RO", "TO"))
    if value.get("group_by") is not None:
        check_choice(f"{key} group_by", value["group_by"], ("user", "none"))
    mode = value.get("mode")
    phases = mode.items() if isinstance(mode, dict) else [("mode", mode)] if mode is not None else []
    if isinstance(mode, dict) and not set(mode) <= {"valid", "test"}:
        raise _fail(f"{key} mode", mode, "one mode, or {'valid': MODE, 'test': MODE}")
    for phase, one in phases:
        if not isinstance(one, str) or not _EVAL_MODE.fullmatch(one):
            raise _fail(f"{key} mode" + (f" {phase}" if phase != "mode" else ""), one,
                        "full, labeled, uniN or popN (N sampled negatives, e.g. uni100)")


def optional_mapping(key: str, value: Any) -> None:
    if value is not None and not isinstance(value, dict):
        raise _fail(key, value, "a dict or None")


def interval(key: str, value: Any) -> None:
    """RecBole's filter intervals, e.g. ``[5,inf)`` or ``(0,1];[3,4)``."""
    if value is not None and not (isinstance(value, str) and _INTERVAL.match(value)):
        raise _fail(key, value, "an interval such as '[5,inf)' or None")


#: RecBole's True/False switches (its property files' booleans) that no
#: check below covers; a word such as ``no`` would stay a string, which
#: counts as true.
RECBOLE_SWITCHES = ("use_gpu", "save_dataset", "save_dataloaders", "log_wandb", "shuffle", "require_pow",
                    "enable_amp", "enable_scaler", "repeatable", "filter_inter_by_user_or_item", "kg_reverse_r")
#: The optimizers RecBole's trainer builds; any other name silently becomes Adam.
LEARNERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam")

#: Checks of single keys; keys absent from the settings are not checked.
KEY_CHECKS: dict[str, Check] = {
    **{key: boolean for key in RECBOLE_SWITCHES},
    "learner": choice(*LEARNERS, any_case=True),
    # RecBole's KD_DAGFM eval()s this value to find its teacher network class
    "teacher": choice("CrossNet", "CIN"),
    "epochs": integer(1),
    "stopping_step": integer(1),
    "eval_step": integer(1),
    "MAX_ITEM_LIST_LENGTH": integer(1),
    "train_batch_size": integer(1),
    "eval_batch_size": integer(1),
    "seed": integer(),
    "learning_rate": number(0, strict=True),
    "lr_plateau_patience": integer(0),
    "lr_plateau_factor": open_fraction,
    "weight_decay": number(0),
    "time_budget": number(0, optional=True),
    "topk": topk,
    "metrics": metrics,
    "reproducibility": boolean,
    "show_progress": boolean,
    "compile": boolean,
    "filter_seen": boolean,
    "strict_keys": boolean,
    "save_user_ranks": boolean,
    "pack_windows": boolean,
    "item_init_freeze": boolean,
    "user_features": field_names,
    "selected_features": field_names,
    "state": choice(*LOG_LEVELS, any_case=True),
    "checkpoint_dir": text,
    "output_dir": text,
    "eval_args": eval_args,
    "load_col": optional_mapping,
    "unload_col": optional_mapping,
    "clip_grad_norm": optional_mapping,
    "train_neg_sample_args": optional_mapping,
    "num_negatives": integer(0),
    "nproc": check_positive,
    "window_overlap": check_probability,
    "user_inter_num_interval": interval,
    "item_inter_num_interval": interval,
}
#: Checks by name pattern, for the model keys every model spells the same way.
PATTERN_CHECKS: tuple[tuple[re.Pattern[str], Check], ...] = (
    (re.compile(r".*dropout(_prob|_rate)?$"), check_probability),
    (re.compile(r"(n_layers|n_heads|hidden_size|embedding_size|inner_size|num_layers)$"), integer(1)),
)


def check_plateau_patience(settings: Mapping[str, Any]) -> None:
    """A patience beyond ``stopping_step`` would lower the rate only on the
    validation that ends the run."""
    patience, stopping = settings.get("lr_plateau_patience"), settings.get("stopping_step")
    if isinstance(patience, int) and isinstance(stopping, int) and patience > stopping:
        raise UsageError(f"lr_plateau_patience must be 0 (off) to stopping_step={stopping}, got {patience}: "
                         f"a larger one would lower the rate only as early stopping ends the run")


def check_metric_kinds(settings: Mapping[str, Any]) -> None:
    """RecBole computes either ranking metrics (NDCG, GAUC ...) or value
    metrics (AUC, LogLoss ...) in one run, and value metrics only on
    labeled evaluation, not on full ranking."""
    from recbole.evaluator.register import metric_types
    from recbole.utils import EvaluatorType

    names = [settings["metrics"]] if isinstance(settings["metrics"], str) else settings["metrics"]
    value = [name for name in names if metric_types[name.lower()] == EvaluatorType.VALUE]
    ranking = [name for name in names if name not in value]
    if ranking and value:
        raise UsageError(f"metrics mixes ranking metrics ({', '.join(ranking)}) and value metrics "
                         f"({', '.join(value)}); RecBole computes one kind per run")
    mode = (settings.get("eval_args") or {}).get("mode")
    modes = list(mode.values()) if isinstance(mode, dict) else [mode]
    if value and "full" in modes:
        raise UsageError(f"metrics {', '.join(value)} score labeled pairs, not a full ranking; set eval_args "
                         f"mode to labeled or use ranking metrics such as NDCG, Recall")


def check_valid_metric(settings: Mapping[str, Any]) -> None:
    """``valid_metric`` must be one of the metrics the run computes: a
    ``metrics`` name with ``@k`` for a k in ``topk`` (ranking metrics), or
    the bare name (value metrics such as AUC)."""
    value = settings.get("valid_metric")
    if value is None:
        return
    computed = [m.lower() for m in ([settings["metrics"]] if isinstance(settings["metrics"], str)
                                    else settings["metrics"])]
    cutoffs = settings["topk"] if isinstance(settings["topk"], list) else [settings["topk"]]
    takes_k = metric_names()
    choices = [f"{m}@{k}" for m in computed if takes_k[m] for k in cutoffs] + [m for m in computed if not takes_k[m]]
    if not isinstance(value, str) or value.lower() not in choices:
        raise UsageError(
            f"valid_metric {value!r} is not among the metrics this run computes (metrics x topk). "
            f"Valid choices: {', '.join(choices)}"
        )


def validate_settings(settings: Mapping[str, Any]) -> None:
    """Raise one :class:`UsageError` for the first bad value in ``settings``."""
    for key, value in settings.items():
        check = KEY_CHECKS.get(key) or next(
            (pattern_check for pattern, pattern_check in PATTERN_CHECKS if pattern.fullmatch(key)), None
        )
        if check is not None:
            check(key, value)
    if "metrics" in settings:
        check_metric_kinds(settings)
    if "metrics" in settings and "topk" in settings:
        check_valid_metric(settings)
    check_plateau_patience(settings)
    hidden, heads = settings.get("hidden_size"), settings.get("n_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
        raise UsageError(f"hidden_size {hidden} must be divisible by n_heads {heads}")


def declared_keys(files: Iterable[Path]) -> set[str]:
    """Every key the property ``files`` that exist declare."""
    keys: set[str] = set()
    for file in files:
        if file.is_file():
            keys.update(read_yaml_file(file))
    return keys


def recbole_property_files() -> list[Path]:
    """RecBole's general property files (not its per-model ones)."""
    return [RECBOLE_PROPERTIES / "overall.yaml", RECBOLE_PROPERTIES / "dataset" / "sample.yaml",
            *sorted((RECBOLE_PROPERTIES / "quick_start_config").glob("*.yaml"))]


def unknown_keys(given: Iterable[str], known: set[str]) -> list[str]:
    """One line per key in ``given`` that ``known`` lacks, with the closest known key."""
    lines = []
    for key in given:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        lines.append(f"unknown option {key!r}: no property file declares it{hint}")
    return lines
