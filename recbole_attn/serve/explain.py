"""The attention a model pays over one history: every panel the model
exposes (AttnSeq: a layer and head each; AttnRNN: its pooling), the last
position's row (the next-item prediction) and the whole causal matrix."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recbole_attn.errors import UsageError
from recbole_attn.serve.load import LoadedModel
from recbole_attn.serve.queries import is_token_list, model_input, resolve_queries, tail_windows, user_feature_ids


#: How the user token (``user_features``) appears among the explained positions.
USER_TOKEN = "(user)"


@dataclass(frozen=True)
class Explanation:
    """Attention over one history window (the model's input, oldest first).

    ``weights`` (panels, n): the weight of each history item in the next-item
    prediction, the last position's row of each panel (``"layer 1, head 2"``
    for AttnSeq, ``"pooling"`` for AttnRNN). ``matrices`` (panels, n, n):
    the whole causal attention, query position by attended position.
    ``padding_weights`` (panels, L - n): weight left on the padding slots of
    the model's window (zero). With ``user_features`` the user token is
    position 0, listed as ``"(user)"``. ``grid``: (rows, columns) of the panels
    (AttnSeq: layers by heads, plus a ``"readout"`` row with ``readout:
    attention``); ``positions``: each panel's (row, column) in it.
    """

    model: str
    items: list[str]
    titles: list[str | None]
    panels: list[str]
    weights: np.ndarray
    matrices: np.ndarray
    padding_weights: np.ndarray
    grid: tuple[int, int]
    positions: list[tuple[int, int]]

    def label(self, position: int, width: int = 40) -> str:
        """``title [token]`` (or the token alone) of a history position."""
        title = self.titles[position]
        text = f"{title} [{self.items[position]}]" if title else str(self.items[position])
        return text if len(text) <= width else text[: width - 1] + "…"


def explain(
    loaded: LoadedModel, history: Sequence[Any] | None = None, user: Any = None, on_unknown: str = "error",
    user_features: dict[str, Any] | None = None,
) -> Explanation:
    """The attention weights of ``loaded``'s model over a ``history`` of raw
    item tokens, or over a known ``user``'s most recent items. With a
    history, ``user_features`` are the new user's (as in ``recommend``)."""
    model: Any = loaded.model
    try:
        names = model.attention_panels()
    except (AttributeError, NotImplementedError):  # RecBole's models, plugins without attention
        raise UsageError(
            f"model {loaded.config['model']} exposes no attention weights; explain supports AttnSeq, AttnRNN "
            f"and plugin models with attention_panels and attention_weights"
        ) from None
    if (history is None) == (user is None):
        raise UsageError("give either a history (list of item tokens) or a user, not both")
    if history is not None and not is_token_list(history):
        raise UsageError(f"history must be a list of item tokens (e.g. ['50', '172']), got {history!r}")
    if user is not None:
        queries = resolve_queries(loaded, [user], None, on_unknown)
    else:
        queries = resolve_queries(loaded, None, [list(history or ())], on_unknown)
    if not queries.keys:
        raise UsageError("nothing to explain: every token was unknown and skipped")
    features = None
    if user_features is not None:
        if user is not None:
            raise UsageError("user_features go with a history (a new user); a known user brings their own")
        features = user_feature_ids(loaded, [user_features], queries.keys, on_unknown)
    item_seq, lengths = tail_windows(queries.indptr, queries.indices, queries.rows, loaded.max_length)
    interaction = model_input(loaded, item_seq, lengths, queries.user_ids, features)
    user_input = model.user_input(interaction) if hasattr(model, "user_input") else {}
    with torch.inference_mode():
        weights = model.attention_weights(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], **user_input)
    matrices = weights[0].float().cpu()  # (panels, L, L), or (panels, 1 + L, 1 + L) with the user first
    offset = matrices.shape[-1] - item_seq.shape[1]
    n = int(lengths[0]) + offset
    rows = matrices[:, n - 1, :]  # the last position's row makes the prediction
    tokens = loaded.item_tokens[item_seq[0, : n - offset].numpy()].tolist()
    titles = loaded.titles()
    user_label = [USER_TOKEN] * offset
    no_titles: list[str | None] = [None] * offset
    return Explanation(
        model=loaded.config["model"],
        items=user_label + tokens,
        titles=no_titles + [titles.get(token) for token in tokens],
        panels=[name for row in names for name in row],
        weights=rows[:, :n].numpy(),
        matrices=matrices[:, :n, :n].numpy(),
        padding_weights=rows[:, n:].numpy(),
        grid=(len(names), max(len(row) for row in names)),
        positions=[(r, c) for r, row in enumerate(names) for c in range(len(row))],
    )


def format_explanation(explanation: Explanation) -> str:
    """One row per history item (oldest first), one column per panel."""
    short = [panel.replace("layer ", "L").replace(", head ", "H") for panel in explanation.panels]
    lines = [f"{'pos':>3}  {'item':<44}  " + "  ".join(f"{name:>7}" for name in short)]
    for position in range(len(explanation.items)):
        cells = "  ".join(f"{value:7.4f}" for value in explanation.weights[:, position])
        lines.append(f"{position + 1:>3}  {explanation.label(position, 44):<44}  {cells}")
    return "\n".join(lines)
