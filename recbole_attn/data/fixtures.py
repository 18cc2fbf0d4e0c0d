"""Small datasets in RecBole's atomic format, for tests and quick checks.

* :func:`write_sequential_pattern` makes users walk the item catalog in fixed
  strides, so the next item is predictable from the last few: a model that
  learns anything scores far above random.
* :func:`write_ml100k_subset` cuts RecBole's embedded ml-100k down to its first
  users, for end-to-end runs in seconds.
* :func:`synthetic_model` builds a plugin model over a made-up catalog of any
  size, no dataset at all (scale benchmarks, memory tests).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import recbole
import torch

from recbole_attn.values import read_yaml_file

ML100K_DIR = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"


def write_sequential_pattern(
    root: str | Path,
    name: str = "pattern",
    n_users: int = 300,
    n_items: int = 60,
    seq_len: int = 20,
    strides: tuple[int, ...] = (1, 2, 3),
    noise: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write ``root/name/name.inter`` where user ``u`` visits items
    ``start, start+s, start+2s, ...`` (mod ``n_items``) with stride ``s`` drawn
    from ``strides``; ``noise`` replaces that share of steps by random items.
    Item tokens start at 1; timestamps are each user's step index."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    with open(path, "w", newline="") as out:
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(["user_id:token", "item_id:token", "rating:float", "timestamp:float"])
        for user in range(1, n_users + 1):
            start, stride = rng.integers(n_items), rng.choice(strides)
            items = (start + stride * np.arange(seq_len)) % n_items
            noisy = rng.random(seq_len) < noise
            items[noisy] = rng.integers(n_items, size=int(noisy.sum()))
            for step, item in enumerate(items):
                writer.writerow([user, int(item) + 1, 1, step])
    return folder


def write_ml100k_subset(root: str | Path, n_users: int = 60, with_items: bool = True) -> Path:
    """Write the interactions and features of ml-100k's ``n_users`` lowest
    user ids (and, optionally, the item file) to ``root/ml-100k``; pass
    ``data_path=root``."""
    folder = Path(root) / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    with open(ML100K_DIR / "ml-100k.inter") as source, open(folder / "ml-100k.inter", "w") as out:
        out.write(source.readline())
        for line in source:
            if int(line.split("\t", 1)[0]) <= n_users:
                out.write(line)
    with open(ML100K_DIR / "ml-100k.user") as source, open(folder / "ml-100k.user", "w") as out:
        out.write(source.readline())
        out.writelines(line for line in source if int(line.split("\t", 1)[0]) <= n_users)
    if with_items:
        (folder / "ml-100k.item").write_bytes((ML100K_DIR / "ml-100k.item").read_bytes())
    return folder


class PlainConfig(dict):
    """A dict read like RecBole's ``Config``: a missing key reads ``None``."""

    def __getitem__(self, key: str) -> Any:
        return self.get(key)


class SyntheticCatalog:
    """The little of a RecBole dataset a sequential model reads at build time:
    the size of the item vocabulary (id 0 is padding)."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.item_counter: dict[int, int] = {}

    def num(self, field: str) -> int:
        return self.n_items


def synthetic_model(model: str | type, n_items: int, **settings: object) -> torch.nn.Module:
    """A plugin model over a catalog of ``n_items`` ids (0 = padding) built
    without any dataset: its YAML defaults, RecBole's field names, then
    ``settings``. For scale benchmarks and memory tests on made-up catalogs."""
    from recbole_attn.registry import get_model_class, model_properties_files

    model_class = get_model_class(model) if isinstance(model, str) else model
    config = PlainConfig(
        USER_ID_FIELD="user_id", ITEM_ID_FIELD="item_id", LIST_SUFFIX="_list",
        ITEM_LIST_LENGTH_FIELD="item_length", NEG_PREFIX="neg_", MAX_ITEM_LIST_LENGTH=50, device="cpu",
    )
    for properties in model_properties_files(model_class):
        config.update(read_yaml_file(properties))
    config.update(settings)
    return model_class(config, SyntheticCatalog(n_items))
