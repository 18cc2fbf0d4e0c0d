"""What a benchmark row trained with beyond the models' defaults: the
config files and training ``--key=value`` settings of its benchmark.

Merging pools a model's seeds only when these agree, and the tables print
them, so that a row run with a property file never reads as "defaults"."""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from recbole_attn.checkpoint import UNFINGERPRINTED_KEYS
from recbole_attn.config import parse_cmd_args
from recbole_attn.values import parse_values

#: ``--key=value`` settings that say how a run was carried out (``--resume=auto``
#: after an interruption, paths, logging), not what it trains; a row's run
#: length is fixed by the record's ``budget_seconds`` and ``epochs``.
PROCEDURAL_KEYS = UNFINGERPRINTED_KEYS - {"epochs", "time_budget"}
#: Run settings the benchmark sets from its own options (and records as the rows' budget and cap).
BENCHMARK_FLAGS = {"time_budget": "--budget=SECONDS|none", "epochs": "--epochs=N"}
#: Settings every row records itself: runs of other seeds are what merging pools.
ROW_KEYS = frozenset({"seed"})
#: A record's settings when it ran the defaults (kept as written in older records).
NO_SETTINGS = "no settings"
_CONFIG_FILES = "--config_files="


def training_overrides(overrides: Sequence[str]) -> list[str]:
    """The ``--key=value`` settings of ``overrides`` that change what is trained,
    but for the seed."""
    return [f"--{key}={value}" for key, value in parse_cmd_args(overrides).items()
            if key not in PROCEDURAL_KEYS | ROW_KEYS]


def record_settings(record: dict[str, Any]) -> str:
    """A benchmark's config files and training ``--key=value`` settings, in one line."""
    return " ".join([*(f"{_CONFIG_FILES}{name}" for name in record.get("config_files") or []),
                     *training_overrides(record.get("overrides") or [])]) or NO_SETTINGS


def comparable(settings: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """:func:`record_settings`' line in a form where the same settings compare
    equal however they were written: the config files in their order (later
    files override earlier ones), the ``--key=value`` settings by key, each
    value as typed data (``True`` and ``true`` alike)."""
    words = _words(settings)
    files = tuple(word.removeprefix(_CONFIG_FILES) for word in words if word.startswith(_CONFIG_FILES))
    values = parse_values(parse_cmd_args([word for word in words if not word.startswith(_CONFIG_FILES)]))
    return files, tuple(sorted((key, json.dumps(value, sort_keys=True, default=str)) for key, value in values.items()))


def row_settings(record: dict[str, Any], row: dict[str, Any]) -> str:
    """The settings ``row`` ran with: noted on the row by a merge, else its record's."""
    return row.get("run_settings") or record_settings(record)


def settings_words(settings: str) -> list[str]:
    """:func:`record_settings`' line as table words: ``properties/sparse.yaml``,
    ``n_layers=3``; none for the defaults."""
    return [word.removeprefix(_CONFIG_FILES).removeprefix("--") for word in _words(settings)]


def _words(settings: str) -> list[str]:
    """:func:`record_settings`' line split into its ``--config_files=``/``--key=value`` words."""
    return [] if settings == NO_SETTINGS else re.split(r" (?=--)", settings)
