"""Find a model class by name: installed plugins first, then RecBole's own.

A plugin is any installed distribution that declares an entry point in the
group :data:`ENTRY_POINT_GROUP`, e.g. in its ``pyproject.toml``::

    [project.entry-points."recbole_attn.models"]
    MyModel = "my_package.my_model:MyModel"

The entry point's name must be the class's name (RecBole names a model by
its class, and checkpoints are served by that name), and may be neither a
RecBole model's nor another plugin's: a name means one model. The class may
set ``properties_file`` (a path to its default YAML); the
:class:`~recbole_attn.config.AttnConfig` layers the files of its class tree
(a subclass of AttnSeq gets AttnSeq's defaults under its own) under the
user's.
"""
from __future__ import annotations

import functools
import importlib
import os
import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from recbole_attn.errors import UsageError, choice_error

ENTRY_POINT_GROUP = "recbole_attn.models"

_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


@functools.cache
def plugin_entry_points() -> dict[str, list[EntryPoint]]:
    """Entry points of every installed plugin model, by model name: the
    distinct targets declared under it (a target declared twice counts
    once; several targets are refused by :func:`get_model_class`)."""
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        declared = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in declared):
            declared.append(ep)
    return found


@functools.cache
def recbole_models() -> dict[str, str]:
    """RecBole's built-in models, ``{ClassName: module}``, read from the
    source files' ``class`` lines so that listing them imports nothing."""
    import recbole.model

    root = Path(recbole.model.__file__).parent
    found = {}
    for package in _RECBOLE_MODEL_PACKAGES:
        for file in sorted((root / package).glob("*.py")):
            for name in re.findall(r"^class (\w+)\(", file.read_text(), re.M):
                if name.lower() == file.stem:
                    found[name] = f"recbole.model.{package}.{file.stem}"
    return found


def available_models() -> list[str]:
    """Every model name :func:`get_model_class` accepts."""
    return sorted({*plugin_entry_points(), *recbole_models()}, key=str.lower)


def get_model_class(name: str) -> type:
    """The model class called ``name``: a plugin's, else RecBole's. A
    plugin that cannot be loaded, is not a model class or shares its name
    is one :class:`UsageError` line."""
    if name in plugin_entry_points():
        return _load_plugin(name)
    if name in recbole_models():
        return getattr(importlib.import_module(recbole_models()[name]), name)
    raise choice_error("model", name, available_models())


def _load_plugin(name: str) -> type:
    from recbole.model.abstract_recommender import AbstractRecommender

    found = plugin_entry_points()[name]
    if len(found) > 1:
        raise UsageError(f"model {name!r} is declared by {len(found)} plugins "
                         f"({', '.join(ep.value for ep in found)}): uninstall all but one")
    entry = found[0]
    if name in recbole_models():
        raise UsageError(f"plugin model {name!r} ({entry.value}) has the name of RecBole's own {name}: "
                         f"rename the plugin's entry point and class")
    try:
        loaded = entry.load()
    except Exception as error:  # any import-time failure of third-party code
        raise UsageError(f"model {name!r}: its plugin {entry.value} cannot be loaded "
                         f"({type(error).__name__}: {' '.join(str(error).split())})") from None
    if not (isinstance(loaded, type) and issubclass(loaded, AbstractRecommender)):
        raise UsageError(f"model {name!r}: its plugin {entry.value} is not a RecBole model class")
    if loaded.__name__ != name:
        raise UsageError(f"model {name!r}: its plugin {entry.value} is class {loaded.__name__}; RecBole names "
                         f"a model by its class, so the entry point must be named {loaded.__name__}")
    return loaded


def model_properties_files(model_class: type) -> list[Path]:
    """The default YAMLs of a model, most general first: along its class
    tree, each class's own ``properties_file``, or for RecBole's models the
    file RecBole ships. A declared file that is missing is a
    :class:`UsageError` naming it."""
    import recbole

    shipped = Path(recbole.__file__).parent / "properties" / "model"
    files = []
    for klass in reversed(model_class.__mro__):
        declared = vars(klass).get("properties_file")
        if declared is not None:
            if not Path(declared).is_file():
                raise UsageError(f"{klass.__name__}.properties_file {os.fspath(declared)} does not exist")
            files.append(Path(declared))
        elif klass.__module__.startswith("recbole.model.") and (shipped / f"{klass.__name__}.yaml").is_file():
            files.append(shipped / f"{klass.__name__}.yaml")
    return files


def recbole_internal_config(config: Any, model: str, model_class: type, dataset: str) -> None:
    """RecBole's own ``Config._load_internal_config_dict``, without the
    bridge's layers: :class:`~recbole_attn.config.AttnConfig` layers the
    project's files itself, once."""
    from recbole.config import Config

    loader = Config._load_internal_config_dict
    getattr(loader, "recbole_original", loader)(config, model, model_class, dataset)


def install_recbole_bridge() -> None:
    """Let RecBole's own API see the plugin models: ``recbole.utils.get_model``
    returns them, ``get_trainer`` returns this package's trainer for them (so
    they train on all positions as configured), and RecBole's ``Config``
    layers their default YAML and this package's option defaults (it reads
    only its own properties folder). RecBole's models are looked up as before."""
    import recbole.config.configurator as configurator
    import recbole.utils
    import recbole.utils.utils as recbole_utils
    from recbole.config import Config

    if getattr(recbole_utils.get_model, "bridged", False):
        return
    recbole_get_model, recbole_get_trainer = recbole_utils.get_model, recbole_utils.get_trainer
    recbole_loader = Config._load_internal_config_dict

    def get_model(model_name: str) -> type:
        return get_model_class(model_name) if model_name in plugin_entry_points() else recbole_get_model(model_name)

    def get_trainer(model_type: object, model_name: str) -> type:
        if model_name in plugin_entry_points():
            from recbole_attn.trainer import AttnTrainer

            return AttnTrainer
        return recbole_get_trainer(model_type, model_name)

    def load_internal_config_dict(self: Config, model: str, model_class: type, dataset: str) -> None:
        recbole_loader(self, model, model_class, dataset)
        if model in plugin_entry_points():
            from recbole_attn.config import PROJECT_DEFAULTS
            from recbole_attn.values import read_yaml_file

            for key, value in PROJECT_DEFAULTS.items():
                self.internal_config_dict.setdefault(key, value)
            for properties in model_properties_files(model_class):
                self.internal_config_dict.update(read_yaml_file(properties))

    setattr(get_model, "bridged", True)
    setattr(load_internal_config_dict, "recbole_original", recbole_loader)
    for module in (recbole.utils, recbole_utils, configurator):
        setattr(module, "get_model", get_model)
    for module in (recbole.utils, recbole_utils):
        setattr(module, "get_trainer", get_trainer)
    setattr(Config, "_load_internal_config_dict", load_internal_config_dict)
