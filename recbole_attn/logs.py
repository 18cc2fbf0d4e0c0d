"""A run's log, as RecBole keeps it: ``log/<Model>/<Model>-<dataset>-<time>-<hash>.log``
beside the console, at the level ``state`` names; the config and dataset
summaries go to the file only.

RecBole's ``init_logger`` can be set up once per process only (it calls
``logging.basicConfig``) and writes colour codes to any stream; a run here
installs its handlers for its own duration, so several runs in one process
(the benchmark, notebooks, tests) each get their file, and the console gets
colour only when it is a terminal. RecBole's trainer names its TensorBoard
folder after this file, so that becomes ``log_tensorboard/<Model>-<dataset>-...``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recbole.utils import get_local_time

from recbole_attn import distributed
from recbole_attn.errors import UsageError

LOG_ROOT = Path("log")
#: Records of this logger (the config and dataset summaries) go to the file only.
summary_logger = logging.getLogger("recbole_attn.summary")
_ANSI = re.compile(r"\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])")


class NotSummary(logging.Filter):
    """Keeps the long config and dataset summaries off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != summary_logger.name


class StripColour(logging.Filter):
    """Removes the ANSI colour codes RecBole writes into its messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _ANSI.sub("", str(record.msg))
        return True


def log_file_path(config: Any) -> Path:
    """``log/<Model>/<Model>-<dataset>-<time>-<hash of the config>.log``."""
    digest = hashlib.md5("".join(str(value) for value in config.final_config_dict.values()).encode()).hexdigest()
    model, dataset = config["model"], config["dataset"]
    return LOG_ROOT / model / f"{model}-{dataset}-{get_local_time()}-{digest[:6]}.log"


def _console_handler() -> logging.Handler:
    handler = logging.StreamHandler()
    if sys.stderr.isatty():
        import colorlog

        colours = {"DEBUG": "cyan", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}
        handler.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)s %(message)s", "%H:%M:%S",
                                                       log_colors=colours))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler.addFilter(StripColour())
    handler.addFilter(NotSummary())
    return handler


@contextmanager
def run_log(config: Any) -> Iterator[Path | None]:
    """Log to the console and (rank 0) to the run's file while the block runs;
    yields the file's path. The handlers that were there before come back after.
    A run refused for its input (:class:`UsageError`, e.g. a ``--resume``
    checkpoint of other data, found once the data is read) leaves no log
    file: nothing of a refused run stays behind."""
    root = logging.getLogger()
    level = getattr(logging, str(config["state"] or "info").upper(), logging.INFO)
    saved = (list(root.handlers), root.level)
    handlers = [_console_handler()]
    path = None
    made: list[Path] = []  # the folders this run makes, outermost first
    if distributed.is_rank_zero():
        path = log_file_path(config)
        made = [folder for folder in reversed(path.parents) if not folder.exists()]
        os.makedirs(path.parent, exist_ok=True)
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s",
                                                    "%a %d %b %Y %H:%M:%S"))
        file_handler.addFilter(StripColour())
        handlers.append(file_handler)
    # other handlers (a notebook's file, a test's capture) stay; a console one would print twice
    kept = [h for h in saved[0] if getattr(h, "stream", None) not in (sys.stderr, sys.stdout)]
    root.handlers = handlers + kept  # ours first: RecBole names TensorBoard folders after the first file
    root.setLevel(level)  # setLevel, not .level: loggers cache what each level lets through
    refused = False
    try:
        yield path
    except UsageError:
        refused = True
        raise
    finally:
        for handler in handlers:
            handler.close()
        root.handlers = saved[0]
        root.setLevel(saved[1])
        if refused and path is not None:
            _remove_log(path, made)


def _remove_log(path: Path, made: list[Path]) -> None:
    path.unlink(missing_ok=True)
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:  # another run's log arrived meanwhile
            break
