"""Find a model class by name: installed plugins first, then RecBole's own.

A plugin is any installed distribution that declares an entry point in the
group :data:`ENTRY_POINT_GROUP`, e.g. in its ``pyproject.toml``::

    [project.entry-points."recbole_attn.models"]
    MyModel = "my_package.my_model:MyModel"

The class may set ``properties_file`` (a path to its default YAML); the
:class:`~recbole_attn.config.AttnConfig` layers that file under the user's.
"""
from __future__ import annotations

import functools
import importlib
import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from recbole_attn.errors import choice_error

ENTRY_POINT_GROUP = "recbole_attn.models"

_RECBOLE_MODEL_PACKAGES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


@functools.cache
def plugin_entry_points() -> dict[str, EntryPoint]:
    """Entry points of every installed plugin model, by model name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


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
    """The model class called ``name``: a plugin's, else RecBole's."""
    if name in plugin_entry_points():
        return plugin_entry_points()[name].load()
    if name in recbole_models():
        return getattr(importlib.import_module(recbole_models()[name]), name)
    raise choice_error("model", name, available_models())


def model_properties_file(model_class: type) -> Path | None:
    """The default YAML of a model: the plugin's ``properties_file``, or the
    one RecBole ships for its own models; ``None`` when there is none."""
    declared = getattr(model_class, "properties_file", None)
    if declared is not None:
        return Path(declared)
    import recbole

    own = Path(recbole.__file__).parent / "properties" / "model" / f"{model_class.__name__}.yaml"
    return own if own.is_file() else None


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
            properties = model_properties_file(model_class)
            if properties is not None and properties.is_file():
                self.internal_config_dict.update(read_yaml_file(properties))

    setattr(get_model, "bridged", True)
    setattr(load_internal_config_dict, "recbole_original", recbole_loader)
    for module in (recbole.utils, recbole_utils, configurator):
        setattr(module, "get_model", get_model)
    for module in (recbole.utils, recbole_utils):
        setattr(module, "get_trainer", get_trainer)
    setattr(Config, "_load_internal_config_dict", load_internal_config_dict)
