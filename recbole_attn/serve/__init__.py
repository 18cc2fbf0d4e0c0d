"""Serve what was trained: :func:`load` a checkpoint, :func:`recommend`
items, :func:`explain` the attention behind them (``docs/serving.md``); the
command line (``recbole-attn recommend|explain``) is in :mod:`recbole_attn.cli`."""
from recbole_attn.serve.explain import Explanation, explain, format_explanation
from recbole_attn.serve.load import LoadedModel, load
from recbole_attn.serve.recommend import Recommendations, format_recommendations, recommend

__all__ = ["Explanation", "LoadedModel", "Recommendations", "explain", "format_explanation",
           "format_recommendations", "load", "recommend"]
