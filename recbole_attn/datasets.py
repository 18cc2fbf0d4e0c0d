"""Check that a dataset's atomic files exist and are readable before RecBole
starts, so that a typo ends in one clear line and not in a download attempt
or a pandas traceback."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import recbole
import yaml

from recbole_attn.errors import UsageError


def recbole_downloadable() -> set[str]:
    """Datasets RecBole knows how to download (``properties/dataset/url.yaml``)."""
    url_file = Path(recbole.__file__).parent / "properties" / "dataset" / "url.yaml"
    return set(yaml.safe_load(url_file.read_text()) or {})


def atomic_header(path: Path) -> list[str]:
    """Field names (without ``:type``) of an atomic file's header line."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n")
    return [column.split(":")[0] for column in header.split("\t") if column]


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
    columns = atomic_header(inter_file)
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD"):
        if config[key] not in columns:
            raise UsageError(
                f"{inter_file} has no {config[key]!r} column ({key}); "
                f"its header has: {', '.join(columns) or 'nothing'}"
            )
