"""Patches of RecBole 1.2.1, and nothing else: what it needs to run on
numpy 2, pandas 3 and torch >= 2.6, and where it breaks this package's
promises. Each is fixed at the narrowest point that covers it and has a test
in ``tests/test_compat.py`` that fails without it:

* numpy 2 removed the aliases ``np.float``/``np.bool``/``np.int``/... that
  RecBole still uses, and ``Config.compatibility_settings`` (called by every
  ``Config``) crashes re-creating them from ``np.float_``, which numpy 2 also
  removed.  Instead of writing aliases into the global ``numpy`` module (what
  RecBole's own helper does), each affected RecBole module gets a private view
  of numpy that adds the old names; every other library keeps plain numpy.
* torch >= 2.6 loads with ``weights_only=True`` by default and RecBole pickles
  its whole ``Config`` object into every checkpoint, so the best-model reload
  in ``Trainer.evaluate`` and ``Trainer.resume_checkpoint`` fail.  We make the
  checkpoint hold plain data only (state dicts, numbers, a plain config dict),
  which loads under the safe default, rather than turning the unpickler's
  safety off.
* pandas 3 made ``Series.agg(len)`` return the Series' length instead of
  each element's, and made ``df[col].fillna(..., inplace=True)`` a silent
  no-op (Copy-on-Write). The first breaks every ``token_seq`` field (genres,
  titles) in ``Dataset._remap``; the second leaves NaNs that
  ``Dataset._fill_nan`` should have filled. Both methods are replaced by
  element-wise versions that do what RecBole intended; an empty ``*_seq``
  cell is read as the empty string, the value RecBole's no-op ``fillna``
  in ``_load_feat`` meant to give it.
* ``recbole/model/sequential_recommender/sine.py`` calls
  ``torch.autograd.set_detect_anomaly(True)`` at import time, so looking up
  any RecBole sequential model switches autograd's anomaly mode on for the
  whole process and makes every backward pass (ours and the baselines')
  several times slower. We import it once here and switch the mode back off.
* RecBole reads atomic files with pandas' ``python`` engine, which stops at
  the ``csv`` module's 128 KiB field limit (a long description, a long
  ``token_seq``): the limit is raised to the largest value ``csv`` takes.
* ``Collector.get_data_struct`` calls ``.cpu()`` on every collected value,
  but ``data.num_items`` is an int and ``data.count_items`` a Counter, so
  every beyond-accuracy metric (ItemCoverage, AveragePopularity, GiniIndex,
  ShannonEntropy, TailPercentage) crashed evaluation; tensors alone move.
* Two warnings RecBole triggers on every run: torch's "NumPy array is not
  writable" (``Dataset._dataframe_to_interaction`` wraps read-only pandas
  arrays; nothing writes to them) and the deprecation of
  ``torch.cuda.amp.GradScaler`` (its trainer builds one per epoch); both are
  filtered for RecBole's modules only.
* RecBole's trainer wraps the model in ``DistributedDataParallel(model,
  device_ids=[local_rank])`` under DDP; torch accepts ``device_ids`` only for
  a module on one GPU, so multi-process training on CPUs (gloo) failed.

``recbole.quick_start`` imports ``ray``; this package never imports it.

:func:`apply` is idempotent and runs on ``import recbole_attn``.
"""
from __future__ import annotations

import csv
import importlib
import sys
import types
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from recbole_attn.checkpoint import trainer_state
from recbole_attn.serialization import atomic_torch_save

#: numpy names removed in numpy 1.24/2.0 that RecBole 1.2.1 still spells.
LEGACY_NUMPY_ALIASES: dict[str, Any] = {
    "bool": np.bool_,
    "int": np.int_,
    "long": np.int_,
    "float": np.float64,
    "float_": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "unicode": np.str_,
}

#: RecBole modules that use a removed alias at import or run time.
MODULES_USING_LEGACY_NUMPY = (
    "recbole.config.configurator",
    "recbole.evaluator.metrics",
    "recbole.data.interaction",
    "recbole.data.dataset.dataset",
    "recbole.model.layers",
    "recbole.model.abstract_recommender",
    "recbole.model.context_aware_recommender.ffm",
)

_applied = False
#: The RecBole functions each fix replaced, for tests that show the need.
ORIGINALS: dict[str, Any] = {}


class _NumpyWithLegacyAliases(types.ModuleType):
    """numpy, plus the removed aliases, for RecBole's modules only."""

    def __init__(self) -> None:
        super().__init__("numpy")
        self.__dict__.update(LEGACY_NUMPY_ALIASES)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


class _PandasWithEmptySeqCells(types.ModuleType):
    """pandas for ``recbole.data.dataset.dataset``: ``read_csv`` gives empty
    ``token_seq``/``float_seq`` cells as ``""`` instead of NaN."""

    def __init__(self) -> None:
        super().__init__("pandas")

    def __getattr__(self, name: str) -> Any:
        import pandas

        return getattr(pandas, name)

    @staticmethod
    def read_csv(*args: Any, **kwargs: Any) -> Any:
        import pandas

        frame = pandas.read_csv(*args, **kwargs)
        seq_columns = [c for c in (kwargs.get("dtype") or {}) if str(c).endswith("seq") and c in frame]
        for column in seq_columns:
            frame[column] = frame[column].fillna("")
        return frame


def _no_global_numpy_aliases(self: Any) -> None:
    """Replacement for ``Config.compatibility_settings``: the aliases live in
    the per-module numpy views, so the global numpy stays untouched."""


def _save_plain_checkpoint(self: Any, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
    """``Trainer._save_checkpoint`` that stores only plain data, atomically."""
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:  # RecBole: one writer per machine
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    data_hash = getattr(self, "data_fingerprint", None)  # HookedTrainer's; RecBole's own have none
    atomic_torch_save(trainer_state(self, epoch, data_hash), saved_model_file)
    if verbose:
        self.logger.info(f"Saving current: {saved_model_file}")


def _get_data_struct(self: Any) -> Any:
    """``Collector.get_data_struct`` that moves tensors to the CPU and leaves
    the item count and popularity counter as they are."""
    import copy

    for key, value in self.data_struct._data_dict.items():
        if isinstance(value, torch.Tensor):
            self.data_struct._data_dict[key] = value.cpu()
    returned = copy.deepcopy(self.data_struct)
    for key in ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"):
        if key in self.data_struct:
            del self.data_struct[key]
    return returned


def _data_parallel(module: torch.nn.Module, device_ids: list[int] | None = None, **kwargs: Any) -> Any:
    """RecBole's ``DistributedDataParallel(model, device_ids=[local_rank])``,
    without ``device_ids`` for a module on the CPU."""
    from torch.nn.parallel import DistributedDataParallel

    on_cuda = any(parameter.is_cuda for parameter in module.parameters())
    return DistributedDataParallel(module, device_ids=device_ids if on_cuda else None, **kwargs)


def _concat_remapped_tokens(self: Any, remap_list: list) -> tuple[np.ndarray, np.ndarray]:
    """``Dataset._concat_remaped_tokens``, element-wise on any pandas."""
    from recbole.utils import FeatureType

    tokens = []
    for feat, field, ftype in remap_list:
        column = feat[field]
        if ftype == FeatureType.TOKEN:
            tokens.append(column.to_numpy())
        else:  # TOKEN_SEQ: one array of tokens per row
            tokens.append(np.concatenate([*column.to_numpy(), np.array([], dtype=object)]))
    split_point = np.cumsum([len(t) for t in tokens])[:-1]
    return np.concatenate(tokens), split_point


def _remap_tokens(self: Any, remap_list: list) -> None:
    """``Dataset._remap``: one ``pd.factorize`` over all fields that share an
    id space, then each field gets its ids back (per row for token_seq)."""
    import pandas as pd
    from recbole.utils import FeatureType

    if not remap_list:
        return
    tokens, split_point = self._concat_remaped_tokens(remap_list)
    new_ids, uniques = pd.factorize(tokens)
    per_field = np.split(new_ids + 1, split_point)
    id_token = np.array(["[PAD]", *uniques])
    token_id = {token: index for index, token in enumerate(id_token)}
    for (feat, field, ftype), ids in zip(remap_list, per_field):
        if field not in self.field2id_token:
            self.field2id_token[field] = id_token
            self.field2token_id[field] = token_id
        if ftype == FeatureType.TOKEN:
            feat[field] = ids
        else:
            row_lengths = np.fromiter((len(row) for row in feat[field]), dtype=np.int64, count=len(feat))
            feat[field] = np.split(ids, np.cumsum(row_lengths)[:-1])


def _fill_nan(self: Any) -> None:
    """``Dataset._fill_nan`` with assignments instead of chained in-place
    ``fillna`` (a no-op under pandas' Copy-on-Write)."""
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                empty = np.array([], dtype=dtype)
                feat[field] = [empty if isinstance(x, float) else x for x in feat[field]]


def apply() -> None:
    """Install every fix once; later calls do nothing."""
    global _applied
    if _applied:
        return
    numpy_view = _NumpyWithLegacyAliases()
    for module_name in MODULES_USING_LEGACY_NUMPY:
        setattr(importlib.import_module(module_name), "np", numpy_view)
    setattr(importlib.import_module("recbole.data.dataset.dataset"), "pd", _PandasWithEmptySeqCells())
    import pandas

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning,
                            module=r"recbole\.data\.")
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler", category=FutureWarning,
                            module=r"recbole\.trainer\.")
    chained = getattr(pandas.errors, "ChainedAssignmentError", None)
    if chained is not None:  # RecBole's no-op fillna: handled by the pandas view above
        warnings.filterwarnings("ignore", category=chained, module=r"recbole\.data\.dataset")

    import recbole.trainer.trainer as recbole_trainer
    from recbole.config.configurator import Config
    from recbole.data.dataset.dataset import Dataset
    from recbole.evaluator.collector import Collector
    from recbole.trainer.trainer import Trainer

    ORIGINALS["csv.field_size_limit"] = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the most a C long takes on every platform
    importlib.import_module("recbole.model.sequential_recommender.sine")  # its import-time side effect, once
    torch.autograd.set_detect_anomaly(False)
    for owner, name, replacement in (
        (Config, "compatibility_settings", _no_global_numpy_aliases),
        (Dataset, "_concat_remaped_tokens", _concat_remapped_tokens),
        (Dataset, "_remap", _remap_tokens),
        (Dataset, "_fill_nan", _fill_nan),
        (Trainer, "_save_checkpoint", _save_plain_checkpoint),
        (Collector, "get_data_struct", _get_data_struct),
        (recbole_trainer, "DistributedDataParallel", _data_parallel),
    ):
        ORIGINALS[f"{owner.__name__}.{name}"] = getattr(owner, name)
        setattr(owner, name, replacement)
    _applied = True
