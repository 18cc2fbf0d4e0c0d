"""Load a trained checkpoint for serving: the dataset rebuilt from the plain
config stored in it (same id remapping, same per-user histories as in
training), the model built, its weights loaded, eval mode."""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.data import create_dataset, data_preparation

from recbole_attn.checkpoint import data_fingerprint, load_checkpoint, load_weights, same_data
from recbole_attn.config import AttnConfig
from recbole_attn.data.checks import check_dataset_files
from recbole_attn.data.rows import seen_items, training_sequences
from recbole_attn.errors import UsageError

#: Stored config keys that RecBole's ``Config`` derives itself (enums, devices,
#: distributed state, paths it joins): passing them back would override the
#: derived values with their plain-data names.
DERIVED_KEYS = frozenset({
    "model", "dataset", "data_path", "device", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type",
    "single_spec", "local_rank", "valid_neg_sample_args", "test_neg_sample_args", "valid_metric_bigger",
})


def config_overrides(stored: dict[str, Any], data_path: str | None = None) -> dict[str, Any]:
    """The user-level keys of a stored plain config, ready for ``AttnConfig``."""
    overrides = {key: value for key, value in stored.items() if key not in DERIVED_KEYS}
    # RecBole joins data_path and the dataset name; the stored one is joined already
    folder = data_path or os.path.dirname(os.path.normpath(stored["data_path"]))
    overrides["data_path"] = str(folder)
    negatives = overrides.get("train_neg_sample_args")
    if isinstance(negatives, dict) and negatives.get("distribution") in (None, "none"):
        overrides["train_neg_sample_args"] = None  # RecBole's normalised "no negatives"
    return overrides


@dataclass
class LoadedModel:
    """A checkpoint's model in eval mode, with its dataset's vocabulary and
    each user's history (internal item ids, time order, CSR over user ids)."""

    model: torch.nn.Module
    config: AttnConfig
    dataset: Any
    loaders: tuple[Any, Any, Any]
    checkpoint: Path
    history_indptr: torch.Tensor
    history_items: torch.Tensor
    _titles: dict[str, str] | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return self.config["device"]

    @property
    def max_length(self) -> int:
        return int(self.config["MAX_ITEM_LIST_LENGTH"])

    @property
    def n_items(self) -> int:
        return int(self.dataset.item_num)

    @property
    def item_tokens(self) -> np.ndarray:
        """Raw item token of each internal id (id 0 is ``[PAD]``)."""
        return self.dataset.field2id_token[self.dataset.iid_field]

    @property
    def user_tokens(self) -> np.ndarray:
        return self.dataset.field2id_token[self.dataset.uid_field]

    def _ids(self, field_name: str, tokens: Iterable[Any]) -> list[int | None]:
        """Internal id of each raw token; ``None`` if unknown (or ``[PAD]``)."""
        vocab = self.dataset.field2token_id[field_name]
        return [vocab.get(str(token)) if str(token) != "[PAD]" else None for token in tokens]

    def item_ids(self, tokens: Iterable[Any]) -> list[int | None]:
        return self._ids(self.dataset.iid_field, tokens)

    def user_ids(self, tokens: Iterable[Any]) -> list[int | None]:
        return self._ids(self.dataset.uid_field, tokens)

    def history(self, user: Any) -> list[str]:
        """Raw item tokens of a known user's whole history, oldest first."""
        [uid] = self.user_ids([user])
        if uid is None:
            raise UsageError(f"unknown user {str(user)!r} in dataset {self.config['dataset']}")
        start, end = self.history_indptr[uid], self.history_indptr[uid + 1]
        return self.item_tokens[self.history_items[start:end].numpy()].tolist()

    def titles(self) -> dict[str, str]:
        """Item token -> title, read from the dataset's ``.item`` file (any
        field whose name holds ``title``); empty when there is none."""
        if self._titles is None:
            self._titles = read_titles(self.config)
        return self._titles


def read_titles(config: Any) -> dict[str, str]:
    """Titles straight from ``<data_path>/<dataset>.item``: the project's
    dataset YAMLs may leave the title field out of ``load_col``."""
    path = Path(config["data_path"]) / f"{config['dataset']}.item"
    if not path.is_file():
        return {}
    separator = config["field_separator"] or "\t"
    with open(path, encoding="utf-8", errors="replace") as handle:
        names = [column.split(":")[0] for column in handle.readline().rstrip("\n").split(separator)]
        id_field = config["ITEM_ID_FIELD"]
        title_field = next((name for name in names if "title" in name.lower()), None)
        if title_field is None or id_field not in names:
            return {}
        id_col, title_col = names.index(id_field), names.index(title_field)
        titles = {}
        for line in handle:
            cells = line.rstrip("\n").split(separator)
            if len(cells) > max(id_col, title_col):
                titles[cells[id_col]] = cells[title_col]
    return titles


def load(
    checkpoint: str | os.PathLike, device: str | torch.device | None = None, data_path: str | None = None
) -> LoadedModel:
    """The model saved in ``checkpoint``, ready to serve.

    The dataset is rebuilt from the config stored in the checkpoint, so ids
    and histories are those of training. ``device``: ``cpu``, ``cuda`` or
    ``cuda:N`` (default: CUDA when available). ``data_path``: the folder that
    holds ``<dataset>/``, when the data moved since training.
    """
    from recbole_attn.registry import get_model_class

    path = Path(checkpoint)
    stored = load_checkpoint(path)
    settings = stored["config"]
    for key in ("model", "dataset", *(() if data_path else ("data_path",))):
        if not isinstance(settings.get(key), str) or not settings[key]:
            raise UsageError(f"checkpoint {str(path)!r} names no {key} in its config")
    overrides = config_overrides(settings, data_path)
    if device is not None:
        overrides["device"] = str(device)
    config = AttnConfig(get_model_class(settings["model"]), settings["dataset"], config_dict=overrides,
                        typed_config_dict=True)
    inter_file = Path(config["data_path"]) / f"{config['dataset']}.inter"
    if not inter_file.is_file():
        raise UsageError(
            f"checkpoint {str(path)!r} was trained on {inter_file}, which does not exist here; "
            f"pass data_path=DIR (--data_path DIR) where DIR/{config['dataset']}/ holds the atomic files"
        )

    check_dataset_files(config)
    dataset = create_dataset(config)
    loaders = data_preparation(config, dataset)
    if not same_data(stored, data_fingerprint(loaders[0].dataset)):
        raise UsageError(
            f"checkpoint {str(path)!r} was trained on other data than {inter_file} (other users, items or "
            f"training rows); pass data_path=DIR where DIR/{config['dataset']}/ holds the data it was trained on"
        )
    model = config.model_class(config, loaders[0].dataset)
    load_weights(model, stored, path)
    model.to(config["device"]).eval()
    # ``dataset`` now holds every prefix row (train, valid and test): rebuilt
    # into each user's whole history in RecBole's own order
    users, items, offsets = training_sequences(dataset)
    indptr, indices = seen_items(np.repeat(users, np.diff(offsets)), items, dataset.user_num)
    return LoadedModel(model, config, dataset, tuple(loaders), path, indptr, indices)
