"""Plain data: what checkpoints and results files hold.

Checkpoints hold tensors, numbers, strings, lists and dicts only, so that
``torch.load(path, weights_only=True)`` (torch's safe default) reads them;
results files are JSON of the same values.
"""
from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from recbole_attn.atomic import atomic_path


def plain_data(value: Any) -> Any:
    """Turn a config value into data that ``torch.load(weights_only=True)``
    accepts: enums become their names, unknown objects their ``str``."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain_data(item) for item in value]
    return str(value)


def atomic_npz_save(path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray) -> None:
    """``numpy.savez`` (``compressed``: ``savez_compressed``) through a temp
    file and a rename; no object arrays, so loading needs no pickle (checked
    here: numpy's own ``allow_pickle`` for saving is recent)."""
    pickled = [name for name, array in arrays.items() if np.asarray(array).dtype.hasobject]
    if pickled:
        raise ValueError(f"object arrays would need pickle to load: {', '.join(pickled)}")
    save: Callable[..., None] = np.savez_compressed if compressed else np.savez  # arrays by keyword only
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        save(out, **arrays)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temp file and a rename: a crash never leaves
    a truncated checkpoint where a good one was."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
