"""Check a dataset's atomic files before RecBole reads them, so that a typo
or a bad value ends in one clear line naming the file, the column and the
first bad line, not in a download attempt or a pandas traceback."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import recbole
import yaml

from recbole_attn.errors import UsageError

logger = logging.getLogger(__name__)
#: RecBole's feature types (``recbole.utils.FeatureType``).
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


def recbole_downloadable() -> set[str]:
    """Datasets RecBole knows how to download (``properties/dataset/url.yaml``)."""
    url_file = Path(recbole.__file__).parent / "properties" / "dataset" / "url.yaml"
    return set(yaml.safe_load(url_file.read_text()) or {})


def typed_header(path: Path, separator: str = "\t", encoding: str = "utf-8") -> list[tuple[str, str]]:
    """``(name, type)`` of each column of an atomic file's header line."""
    try:
        with open(path, encoding=encoding) as handle:
            header = handle.readline().rstrip("\r\n")
    except (UnicodeDecodeError, LookupError) as error:
        raise UsageError(f"{path}: cannot be read as {encoding} ({error})") from None
    columns: list[tuple[str, str]] = []
    for column in header.split(separator):
        name, colon, kind = column.partition(":")
        if not colon or not name or kind not in FIELD_TYPES:
            raise UsageError(f"{path} line 1: column {column!r} must be NAME:TYPE with TYPE one of "
                             f"{', '.join(FIELD_TYPES)}")
        if name in [known for known, _ in columns]:
            raise UsageError(f"{path} line 1: column {name!r} appears twice")
        columns.append((name, kind))
    return columns


def _loaded_columns(config: Any, source: str, header: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The columns RecBole will load from a file (``load_col``/``unload_col``)."""
    load, unload = config["load_col"], config["unload_col"]
    if isinstance(load, dict) and source not in load:
        return []
    wanted = load[source] if isinstance(load, dict) else None
    if wanted == "*":  # RecBole's "every column"
        wanted = None
    dropped = set(unload.get(source) or ()) if isinstance(unload, dict) else set()
    return [(name, kind) for name, kind in header
            if (wanted is None or name in wanted) and name not in dropped]


def _first_line(mask: np.ndarray) -> int:
    """1-based file line of the first row where ``mask`` holds (line 1 is the header)."""
    return int(np.flatnonzero(mask)[0]) + 2


def _text_for_numbers(cells: pd.Series, separator: str | None = None) -> np.ndarray:
    """Per cell, whether it holds text where a number belongs (with
    ``separator``: in any of its pieces). An empty piece or ``nan`` is a
    missing value, which RecBole fills in."""
    pieces = cells.str.split(separator).explode() if separator is not None else cells  # index: the cell's row
    stripped = pieces.str.strip()
    text = pd.to_numeric(stripped, errors="coerce").isna() & (stripped != "") & (stripped.str.lower() != "nan")
    bad = np.zeros(len(cells), dtype=bool)
    bad[pieces.index[text.to_numpy()]] = True
    return bad


def check_atomic_file(path: Path, config: Any, source: str, required: Iterable[str] = ()) -> None:
    """Read ``path`` as RecBole will and raise one :class:`UsageError` naming
    the file, the column and the first bad line for: a malformed header or
    row, text in a ``float`` or ``float_seq`` column, a missing value in a ``required`` column.
    Fully duplicated rows are counted in a warning."""
    separator, encoding = config["field_separator"] or "\t", config["encoding"] or "utf-8"
    seq_separator = config["seq_separator"] or " "
    columns = _loaded_columns(config, source, typed_header(path, separator, encoding))
    if not columns:
        return
    try:  # every column, so that a row with too many fields fails here as it does in RecBole
        frame = pd.read_csv(path, sep=separator, header=0, dtype=str, keep_default_na=False, encoding=encoding,
                            engine="c" if len(separator) == 1 else "python")  # RecBole: a longer one is a regex
    except re.error as error:
        raise UsageError(f"field_separator {separator!r}: RecBole reads a separator longer than one character "
                         f"as a regular expression, and this one is not valid ({error})") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise UsageError(f"{path}: cannot be read ({' '.join(str(error).split())[:200]})") from None
    frame = frame[[f"{name}:{kind}" for name, kind in columns]].fillna("")
    frame.columns = [name for name, _ in columns]
    for name, kind in columns:
        cells = frame[name].to_numpy(dtype=object)
        stripped = frame[name].str.strip()
        if name in required:
            missing = ((stripped == "") | (stripped.str.lower() == "nan")).to_numpy()
            if missing.any():
                raise UsageError(
                    f"{path} column {name!r}: {int(missing.sum())} rows have no value (first at line "
                    f"{_first_line(missing)}); remove them or fill them in, RecBole would fill in the column "
                    f"mean for a float and reorder histories"
                )
        if kind in ("float", "float_seq"):
            bad = _text_for_numbers(frame[name], seq_separator if kind == "float_seq" else None)
            if bad.any():
                line = _first_line(bad)
                what = "a number" if kind == "float" else f"a list of numbers separated by {seq_separator!r}"
                raise UsageError(f"{path} column {name!r} line {line}: {cells[line - 2][:40]!r} is not {what} "
                                 f"(the header declares {name}:{kind})")
    duplicated = int(frame.duplicated().sum())
    if duplicated:
        logger.warning(f"{path}: {duplicated} rows repeat an earlier row exactly; they are kept as given")


def check_dataset_files(config: Any) -> None:
    """Raise :class:`UsageError` when ``<data_path>/<dataset>.inter`` is missing
    (and RecBole could not download it) or lacks the user/item id columns."""
    dataset, folder = config["dataset"], Path(config["data_path"])
    inter_file = folder / f"{dataset}.inter"
    if not inter_file.is_file():
        if dataset in recbole_downloadable():
            return  # RecBole's own download takes over, where a network exists
        raise UsageError(
            f"dataset {dataset!r} has no atomic files: {inter_file} does not exist. "
            f"Pass --data_path=DIR where DIR/{dataset}/{dataset}.inter exists"
        )
    separator, encoding = config["field_separator"] or "\t", config["encoding"] or "utf-8"
    header = typed_header(inter_file, separator, encoding)
    columns, loaded = [name for name, _ in header], [name for name, _ in _loaded_columns(config, "inter", header)]
    by_time = (config["eval_args"] or {}).get("order") == "TO"
    keys = ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD") if by_time else ("USER_ID_FIELD", "ITEM_ID_FIELD")
    for key in keys:
        if config[key] not in columns:
            raise UsageError(
                f"{inter_file} has no {config[key]!r} column ({key}); "
                f"its header has: {', '.join(columns) or 'nothing'}"
            )
        if config[key] not in loaded:
            raise UsageError(f"load_col leaves out {config[key]!r} ({key}) of {inter_file}: add it to "
                             f"load_col's inter list")
    required = [config[key] for key in ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD") if config[key]]
    check_atomic_file(inter_file, config, "inter", required)
    for source, key in (("user", "USER_ID_FIELD"), ("item", "ITEM_ID_FIELD")):
        path = folder / f"{dataset}.{source}"
        if path.is_file():
            check_atomic_file(path, config, source, [config[key]])
