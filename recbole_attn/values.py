"""Config values are data, never code: the one parser for every value that
comes in as text (``--key=value``, ``config_dict`` strings, the benchmark's
overrides) and the one YAML reader for property files.

RecBole's ``Config`` runs ``eval()`` on every string value, so
``--note=__import__('os').system(...)`` would run. Here a value is a Python
literal (``5``, ``1e-3``, ``[5, 10]``, ``{'mode': 'full'}``, ``None``), one
of ``true/false/null/~/inf/-inf/nan`` in any case, a list of bare words as
YAML writes it (``[age, gender]``), or else the plain string it was given.
Lower-case ``none`` stays the string ``"none"``, as in RecBole, where it is
a choice of some options (``attention_type``, ``hidden_act``).
"""
from __future__ import annotations

import ast
import math
import os
import re
from typing import Any

import yaml

from recbole_attn.errors import UsageError

_WORDS: dict[str, Any] = {
    "true": True, "false": False, "null": None, "~": None,
    "inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "nan": math.nan,
}
#: Longer text is never a literal worth parsing (and ``literal_eval`` of deep nesting can recurse far).
MAX_LITERAL_CHARS = 10_000
#: ``[age, gender]``: a list of bare words, as YAML writes it (Python would need quotes).
_WORD_LIST = re.compile(r"\[\s*([\w.+-]+(\s*,\s*[\w.+-]+)*)?\s*\]")


def parse_value(text: str) -> Any:
    """A command-line or ``config_dict`` string as typed data, never evaluated."""
    stripped = text.strip()
    if stripped.lower() in _WORDS:
        return _WORDS[stripped.lower()]
    if not stripped or len(stripped) > MAX_LITERAL_CHARS:
        return text
    try:
        return ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if _WORD_LIST.fullmatch(stripped):
        inner = stripped[1:-1].strip()
        return [parse_value(word.strip()) for word in inner.split(",")] if inner else []
    return text


def as_list(value: Any) -> list[Any]:
    """A list option given as one value or a list: ``None`` or empty -> ``[]``,
    ``"genre"`` -> ``["genre"]`` (``selected_features``, ``user_features``)."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def parse_values(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with every string value through :func:`parse_value`."""
    return {key: parse_value(value) if isinstance(value, str) else value for key, value in settings.items()}


class SafeYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python tags) that reads ``1e-8`` as a float,
    as RecBole's own loader does (plain YAML 1.1 needs ``1.0e-8``), and
    refuses aliases: a few lines of nested ``*refs`` expand to billions of
    values once the settings are copied or logged."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in property files",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


SafeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml_file(path: str | os.PathLike) -> dict[str, Any]:
    """A property file as a dict; a syntax error, a non-mapping or an
    unreadable file is one :class:`UsageError` line naming the file (and line)."""
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.load(handle, Loader=SafeYamlLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"config file {os.fspath(path)!r}{where}: {error.problem or error}") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as error:
        raise UsageError(f"config file {os.fspath(path)!r} cannot be read: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict) or not all(isinstance(key, str) for key in loaded):
        raise UsageError(f"config file {os.fspath(path)!r} must hold 'key: value' lines, got {type(loaded).__name__}")
    return loaded
