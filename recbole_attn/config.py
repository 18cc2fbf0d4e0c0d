"""RecBole's ``Config`` with this project's defaults layered in.

Precedence, lowest first (RecBole's documented order, with two layers added):
RecBole's internal defaults < project defaults (``properties/overall.yaml``,
``properties/dataset/<dataset>.yaml``) < the model's default YAML <
``config_files`` < ``config_dict`` < command-line ``--key=value``.

Differences from RecBole's ``Config`` that a user relies on:

* the command line is an explicit argument, never read from ``sys.argv``
  (pytest's or a notebook's flags must not leak into an experiment);
* ``data_path`` given by the user is honoured for ``ml-100k`` too (RecBole
  always redirects it to the copy in its wheel, which stays the default);
* ``device`` may be forced (``cpu``, ``cuda``, ``cuda:1``);
* a process started by :func:`recbole_attn.distributed.spawn` gets its device
  from :func:`~recbole_attn.distributed.process_device` (gloo on CPU too),
  not from RecBole's NCCL-and-CUDA-only ``_init_device``;
* ``loss_type: BPR`` without ``train_neg_sample_args`` gets one uniform
  negative instead of failing later for the lack of one;
* values are data, never code: text is read by :func:`~recbole_attn.values.parse_value`
  (RecBole ``eval``s it) and YAML by a safe loader;
* every value is checked (:mod:`recbole_attn.validation`) before any data is
  read, and keys no property file declares are named (``strict_keys: True``
  makes them an error).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import logging

import torch
from recbole.config import Config
from recbole.utils import InputType, ModelType

from recbole_attn import distributed, registry
from recbole_attn.errors import UsageError, check_choice
from recbole_attn.evaluation import CHUNK_SIZE_KEY, check_chunk_size
from recbole_attn.item_init import ITEM_INITS
from recbole_attn.validation import (
    CODE_ONLY_KEYS,
    declared_keys,
    recbole_property_files,
    unknown_keys,
    validate_settings,
)
from recbole_attn.values import SafeYamlLoader, as_list, parse_values, read_yaml_file

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent

#: Valid values of the options this project adds to RecBole's.
PROJECT_CHOICES = {
    "train_mode": ("prefix", "all_positions"),
    "item_init": ITEM_INITS,
}
PROJECT_DEFAULTS: dict[str, Any] = {
    "train_mode": "prefix",
    "filter_seen": False,
    "output_dir": "results",
    "time_budget": None,
    "resume": None,
    # multi-process training (RecBole's keys; see docs/reliability.md)
    "nproc": 1,
    "world_size": -1,
    "offset": 0,
    "ip": None,
    "port": None,
    "backend": None,
    "eval_item_chunk_size": None,
    "window_overlap": 0.0,
    "pack_windows": False,
    "strict_keys": False,
    "save_user_ranks": False,
    "item_init": "random",
    "item_init_freeze": False,
    "lr_plateau_patience": 0,
    "lr_plateau_factor": 0.5,
}


def project_properties_dir() -> Path:
    """``properties/`` of a source checkout, or its copy inside the wheel."""
    for candidate in (_PACKAGE_DIR / "project_properties", _PACKAGE_DIR.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"project properties not found beside {_PACKAGE_DIR}")


def load_user_features(final: dict[str, Any]) -> None:
    """``user_features`` also loads those columns of the ``.user`` file, so
    that naming the features is all a user has to do."""
    wanted = as_list(final.get("user_features"))  # checked by validate_settings
    if not wanted or final.get("load_col") is None or final["load_col"].get("user") == "*":
        return  # RecBole loads every column already (None: every file; "*": every user column)
    load_col = dict(final["load_col"])
    columns = list(load_col.get("user") or [final["USER_ID_FIELD"]])
    load_col["user"] = columns + [field for field in wanted if field not in columns]
    final["load_col"] = load_col


def model_option_choices(model_class: type) -> dict[str, tuple[str, ...]]:
    """Valid values of a model's text options, where its classes declare them
    (``option_choices``, each class's over its bases', so that a plugin that
    lists only its own keeps the base class's loss check; RecBole's models
    check their own, at build time)."""
    choices: dict[str, tuple[str, ...]] = {}
    for klass in reversed(model_class.__mro__):
        choices.update(vars(klass).get("option_choices") or {})
    return choices


def known_keys(model_class: type) -> set[str]:
    """Keys that RecBole's, the project's or ``model_class``'s property files declare."""
    project = project_properties_dir()
    files = [*recbole_property_files(), project / "overall.yaml", *sorted((project / "dataset").glob("*.yaml"))]
    files += registry.model_properties_files(model_class)
    return declared_keys(files) | set(PROJECT_DEFAULTS) | CODE_ONLY_KEYS


def parse_cmd_args(args: Sequence[str]) -> dict[str, str]:
    """``--key=value`` pairs, as RecBole reads them; anything else is an error
    here (RecBole only warns, which hides typos like ``-epochs=5``)."""
    parsed: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg[2:].partition("=")
        if not arg.startswith("--") or not sep or not key:
            raise UsageError(f"cannot read argument {arg!r}: expected --key=value")
        if key in parsed and parsed[key] != value:
            raise UsageError(f"--{key} given twice with different values")
        parsed[key] = value
    return parsed


def check_model_support(final: dict[str, Any], model_class: type) -> None:
    """Options only some models implement: refused before any data is read,
    rather than ignored (RecBole's models train their own rows either way)."""
    model, user_features = model_class.__name__, as_list(final.get("user_features"))
    if final.get("train_mode") == "all_positions" and not getattr(model_class, "supports_all_positions", False):
        raise UsageError(f"train_mode: all_positions is not available for {model}; use train_mode: prefix")
    if user_features and not getattr(model_class, "supports_user_features", False):
        raise UsageError(f"user_features: {model} does not take user features, got {user_features}; "
                         f"set user_features: []")


def check_packing(final: dict[str, Any], model_class: type) -> None:
    """``pack_windows`` puts several users' windows in one row: only a model
    whose every output stays inside its own window may see such rows."""
    if not final.get("pack_windows"):
        return
    model = model_class.__name__
    if not getattr(model_class, "supports_packed_windows", False) or final.get("train_mode") != "all_positions":
        raise UsageError(f"pack_windows: True needs train_mode: all_positions and a model that takes packed rows "
                         f"(AttnSeq), not {model} with train_mode: {final.get('train_mode')}; set pack_windows: False")
    if (final.get("readout") or "last") != "last" or as_list(final.get("user_features")):
        raise UsageError(f"pack_windows: True needs readout: last and no user_features, got readout: "
                         f"{final.get('readout')}, user_features: {as_list(final.get('user_features'))} (a pooled "
                         f"readout or a user token would reach across the windows of a packed row); "
                         f"set pack_windows: False")


def check_name(what: str, name: str) -> None:
    """Model and dataset names become file names: no separators, no ``..``."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or ".." in name or "\0" in name:
        raise UsageError(f"{what} name {name!r} must be a plain name (no path separators or '..')")


class AttnConfig(Config):
    """RecBole ``Config`` that knows plugin models and project defaults.

    ``typed_config_dict``: ``config_dict`` already holds typed data (a
    checkpoint's stored config) and is used as it is, strings included."""

    def __init__(
        self,
        model: str | type,
        dataset: str,
        config_file_list: Sequence[str] | None = None,
        config_dict: dict[str, Any] | None = None,
        cmd_args: Sequence[str] = (),
        overrides: dict[str, Any] | None = None,
        typed_config_dict: bool = False,
    ) -> None:
        self._cmd_args = list(cmd_args)
        self._overrides = dict(overrides or {})  # set by the runner (a process's rank): above everything
        self._typed_config_dict = typed_config_dict
        check_name("dataset", dataset)
        if isinstance(model, str):
            check_name("model", model)
        for file in config_file_list or ():
            if not os.path.isfile(file):
                raise UsageError(f"config file {file!r} does not exist")
        model_class = registry.get_model_class(model) if isinstance(model, str) else model
        try:
            super().__init__(model_class, dataset, list(config_file_list or []), dict(config_dict or {}))
        except UsageError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
            # RecBole's own derivations (eval_args, negative sampling) on values no check here knows
            raise UsageError(f"invalid configuration: {type(error).__name__}: {error}") from None

    def _build_yaml_loader(self) -> type:
        return SafeYamlLoader  # RecBole's FullLoader builds Python objects from tags

    def _convert_config_dict(self, config_dict: dict[str, Any]) -> dict[str, Any]:
        # RecBole's eval()s every string; its two callers are overridden too, any other stays safe
        return parse_values(config_dict)

    def _load_config_files(self, file_list: Sequence[str] | None) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        for file in file_list or ():
            settings.update(read_yaml_file(file))
        return settings

    def _load_variable_config_dict(self, config_dict: dict[str, Any]) -> dict[str, Any]:
        return dict(config_dict) if self._typed_config_dict else parse_values(config_dict)

    def _load_cmd_line(self) -> dict[str, Any]:
        return {**parse_values(parse_cmd_args(self._cmd_args)), **self._overrides}

    def _load_internal_config_dict(self, model: str, model_class: type, dataset: str) -> None:
        registry.recbole_internal_config(self, model, model_class, dataset)
        self.internal_config_dict.update(PROJECT_DEFAULTS)
        project = project_properties_dir()
        dataset_file = project / "dataset" / f"{dataset}.yaml"
        for file in (project / "overall.yaml", dataset_file, *registry.model_properties_files(model_class)):
            if file.is_file():
                loaded = read_yaml_file(file)  # a plugin's broken YAML is one line naming it
                self.internal_config_dict.update(loaded)
                if file == dataset_file:
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    def _get_final_config_dict(self) -> dict[str, Any]:
        final = super()._get_final_config_dict()
        given_eval_args, project_eval_args = self.external_config_dict.get("eval_args"), \
            self.internal_config_dict.get("eval_args")
        if isinstance(given_eval_args, dict) and isinstance(project_eval_args, dict):
            # a partial eval_args (e.g. only ``mode``) keeps the project's split and order
            final["eval_args"] = {**project_eval_args, **given_eval_args}
        validate_settings(final)
        self._validate_project_options(final)
        self._check_known_keys(final)
        if final.get("loss_type") == "BPR" and final.get("train_neg_sample_args") is None:
            final["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1}
        load_user_features(final)
        return final

    def known_keys(self) -> set[str]:
        """Keys some property file declares: RecBole's, ours, the model's, the user's."""
        return known_keys(self.model_class) | set(self.file_config_dict)

    def _check_known_keys(self, final: dict[str, Any]) -> None:
        """Warn (``strict_keys``: fail) on given keys no property file declares."""
        given = list(self.cmd_config_dict) if self._typed_config_dict else [*self.variable_config_dict,
                                                                           *self.cmd_config_dict]
        problems = unknown_keys([key for key in dict.fromkeys(given) if key not in self._overrides],
                                self.known_keys())
        if problems and final.get("strict_keys"):
            raise UsageError(f"{problems[0]} (strict_keys is on)")
        for problem in problems:
            logger.warning(f"{problem}; it is passed on as given")

    def _set_default_parameters(self) -> None:
        super()._set_default_parameters()
        # RecBole knows CE and BPR only; sampled softmax reads rows pointwise
        self.final_config_dict.setdefault("MODEL_INPUT_TYPE", InputType.POINTWISE)
        user_path = self.external_config_dict.get("data_path")
        if self.dataset == "ml-100k" and user_path is not None:
            self.final_config_dict["data_path"] = os.path.join(user_path, self.dataset)

    def _init_device(self) -> None:
        if "local_rank" in self._overrides:  # one process of a multi-process run
            distributed.process_device(self.final_config_dict)
            return
        if "local_rank" in self.final_config_dict:  # RecBole would start NCCL on CUDA right here
            raise UsageError("local_rank is set by the runner for each process it starts; set nproc instead")
        requested = self.external_config_dict.get("device")
        if requested is not None and str(requested).startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"device={requested!r} asked for, but CUDA is not available; use device=cpu")
        super()._init_device()
        if requested is not None:
            try:
                device = torch.device(str(requested))
            except RuntimeError:
                device = None
            if device is None or device.type not in ("cpu", "cuda"):
                raise UsageError(f"invalid device {requested!r}: expected cpu, cuda or cuda:N")
            self.final_config_dict["device"] = device

    def _validate_project_options(self, final: dict[str, Any]) -> None:
        for key, choices in {**PROJECT_CHOICES, **model_option_choices(self.model_class)}.items():
            if key in final or key in PROJECT_CHOICES:
                check_choice(key, final.get(key), choices)
        order = (final.get("eval_args") or {}).get("order")
        if self.model_class.type == ModelType.SEQUENTIAL and order not in (None, "TO"):
            raise UsageError(f"eval_args order {order!r} does not fit a sequential model, whose histories "
                             f"are time-ordered: use 'TO'")
        check_chunk_size(final.get(CHUNK_SIZE_KEY))
        check_model_support(final, self.model_class)
        check_packing(final, self.model_class)
        pretrained = final.get("item_init") not in (None, "random")
        if final.get("item_init_freeze") and not pretrained:
            raise UsageError("item_init_freeze: True keeps pretrained item vectors fixed; with item_init: random "
                             "there are none (set item_init: word2vec)")
        if pretrained and self.model_class.type != ModelType.SEQUENTIAL:
            raise UsageError(f"item_init: {final['item_init']} learns from training sequences; "
                             f"{self.model_class.__name__} is not a sequential model (use item_init: random)")
        if pretrained and final.get("item_init_freeze") and final.get("weight_decay"):
            raise UsageError(f"item_init_freeze keeps the pretrained rows fixed by zeroing their gradient; "
                             f"weight_decay {final['weight_decay']} would still move them (set weight_decay: 0)")
