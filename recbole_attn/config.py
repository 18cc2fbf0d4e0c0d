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
  negative instead of failing later for the lack of one.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from recbole.config import Config
from recbole.utils import InputType

from recbole_attn import distributed, registry
from recbole_attn.errors import UsageError, check_choice, check_positive, check_probability
from recbole_attn.evaluation import CHUNK_SIZE_KEY, check_chunk_size

_PACKAGE_DIR = Path(__file__).resolve().parent

#: Valid values of the options this project adds to RecBole's.
PROJECT_CHOICES = {
    "train_mode": ("prefix", "all_positions"),
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
}


def project_properties_dir() -> Path:
    """``properties/`` of a source checkout, or its copy inside the wheel."""
    for candidate in (_PACKAGE_DIR / "project_properties", _PACKAGE_DIR.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"project properties not found beside {_PACKAGE_DIR}")


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


class AttnConfig(Config):
    """RecBole ``Config`` that knows plugin models and project defaults."""

    def __init__(
        self,
        model: str | type,
        dataset: str,
        config_file_list: Sequence[str] | None = None,
        config_dict: dict[str, Any] | None = None,
        cmd_args: Sequence[str] = (),
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self._cmd_args = list(cmd_args)
        self._overrides = dict(overrides or {})  # set by the runner (a process's rank): above everything
        for file in config_file_list or ():
            if not os.path.isfile(file):
                raise UsageError(f"config file {file!r} does not exist")
        model_class = registry.get_model_class(model) if isinstance(model, str) else model
        super().__init__(model_class, dataset, list(config_file_list or []), config_dict)
        self._validate_project_options()

    def _load_cmd_line(self) -> dict[str, Any]:
        return {**self._convert_config_dict(parse_cmd_args(self._cmd_args)), **self._overrides}

    def _load_internal_config_dict(self, model: str, model_class: type, dataset: str) -> None:
        super()._load_internal_config_dict(model, model_class, dataset)
        self.internal_config_dict.update(PROJECT_DEFAULTS)
        project = project_properties_dir()
        dataset_file = project / "dataset" / f"{dataset}.yaml"
        for file in (project / "overall.yaml", dataset_file, registry.model_properties_file(model_class)):
            if file is not None and file.is_file():
                loaded = self._update_internal_config_dict(str(file))
                if file == dataset_file:
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    def _get_final_config_dict(self) -> dict[str, Any]:
        final = super()._get_final_config_dict()
        if final.get("loss_type") == "BPR" and final.get("train_neg_sample_args") is None:
            final["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1}
        return final

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
                self.final_config_dict["device"] = torch.device(str(requested))
            except RuntimeError as error:
                raise UsageError(f"invalid device {requested!r}: expected cpu, cuda or cuda:N") from error

    def _validate_project_options(self) -> None:
        for key, choices in PROJECT_CHOICES.items():
            check_choice(key, self.final_config_dict.get(key), choices)
        if not isinstance(self.final_config_dict.get("filter_seen"), bool):
            raise UsageError(f"filter_seen must be True or False, got {self.final_config_dict.get('filter_seen')!r}")
        check_positive("nproc", self.final_config_dict.get("nproc"))
        check_chunk_size(self.final_config_dict.get(CHUNK_SIZE_KEY))
        check_probability("window_overlap", self.final_config_dict.get("window_overlap"))
