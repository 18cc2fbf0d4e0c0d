"""The one error type for bad user input: the CLI turns it into exit code 2."""
from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable
from typing import NoReturn


class UsageError(ValueError):
    """A bad model name, dataset, file or option value, said in one line."""


class RunFailed(RuntimeError):
    """A run that ended without a result (diverged, untestable), said in one
    line; the CLI exits with code 1."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser that says a bad option in one ``error:`` line and
    exits 2, like every other bad input, instead of printing its usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def choice_error(what: str, value: object, choices: Iterable[str]) -> UsageError:
    """Error naming the bad ``value``, the closest valid choice and all of them."""
    choices = sorted(set(choices), key=str.lower)
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    if not close:  # case-only differences score low in difflib
        close = [c for c in choices if c.lower() == str(value).lower()][:1]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UsageError(f"unknown {what} {value!r}.{hint} Valid choices: {', '.join(choices)}")


def check_choice(what: str, value: object, choices: Iterable[str]) -> None:
    """Raise :func:`choice_error` unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise choice_error(what, value, choices)


def check_positive(name: str, value: object, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a positive (or non-negative) integer."""
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"{name} must be an integer {bound}, got {value!r}")


def check_probability(name: str, value: object) -> None:
    """Raise unless ``value`` is a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise UsageError(f"{name} must be a number in [0, 1), got {value!r}")
