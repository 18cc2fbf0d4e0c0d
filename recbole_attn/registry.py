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
