"""recbole-attn: attention-based sequential recommenders as RecBole plugins.

Importing the package makes RecBole 1.2.1 work on numpy 2 / torch >= 2.6
(:mod:`recbole_attn.compat`).
"""
from importlib.metadata import PackageNotFoundError, version

from recbole_attn import compat

compat.apply()

from recbole_attn import registry  # noqa: E402

registry.install_recbole_bridge()

from recbole_attn.registry import available_models, get_model_class  # noqa: E402
from recbole_attn.runner import run  # noqa: E402
from recbole_attn.serve import explain, load, recommend  # noqa: E402
from recbole_attn.serve.export import export_model  # noqa: E402

try:
    __version__ = version("recbole-attn")  # the one place it is written: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["available_models", "explain", "export_model", "get_model_class", "load", "recommend", "run",
           "__version__"]
