"""Top-k items for known users or new histories, batched: one padded
``(B, L)`` tensor per batch of users, ranked in item chunks by
:func:`recbole_attn.evaluation.chunked_topk` (the same top-k as evaluation;
no ``(B, n_items)`` matrix for our models)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recbole_attn.errors import UsageError, check_positive
from recbole_attn.evaluation import chunked_topk, item_scorer, resolve_chunk_size
from recbole_attn.serve.load import LoadedModel
from recbole_attn.serve.queries import model_input, resolve_queries, tail_windows, user_feature_ids


@dataclass(frozen=True)
class Recommendations:
    """Top-k per query, best first. ``keys[i]``: the user token, or the index
    of the history in the ``histories`` given; ``items`` (n, k) raw item
    tokens (``None`` where fewer than k items were left to rank);
    ``scores`` (n, k) the model's scores."""

    keys: list[Any]
    items: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, index: int) -> list[tuple[int, str, float]]:
        """``(rank, item token, score)`` for query ``index``."""
        return [
            (rank, item, float(score))
            for rank, (item, score) in enumerate(zip(self.items[index], self.scores[index]), start=1)
            if item is not None
        ]


def recommend(
    loaded: LoadedModel,
    users: Sequence[Any] | None = None,
    histories: Sequence[Sequence[Any]] | None = None,
    k: int = 10,
    exclude_seen: bool = True,
    on_unknown: str = "error",
    batch_size: int = 1024,
    item_chunk_size: int | None = None,
    user_features: Sequence[dict[str, Any] | None] | None = None,
) -> Recommendations:
    """Top-``k`` items for known ``users`` (raw tokens) or for ``histories``
    (lists of raw item tokens, oldest first), never the padding item.

    ``exclude_seen`` leaves out every item of the history (the whole
    history, not only the model's input window). ``on_unknown``: ``"error"``
    raises :class:`UsageError` naming unknown tokens; ``"warn"`` warns and
    skips them (an unknown user, an unknown item of a history).
    ``item_chunk_size``: items scored at a time (``None``: auto, at most
    256 MiB of scores per chunk; ``0``: the whole catalog at once).
    ``user_features``: with ``histories`` of new users and a model trained
    with ``user_features``, one dict of raw feature tokens (or ``None``) per
    history, e.g. ``{"age": "25", "gender": "F"}``; without them (or for a
    missing feature) the model's unknown-user vector stands in.
    """
    check_positive("k", k)
    check_positive("batch_size", batch_size)
    chunk = resolve_chunk_size(item_chunk_size, batch_size, "item_chunk_size") or loaded.n_items
    if k > loaded.n_items - 1:
        raise UsageError(f"k={k} is more than the {loaded.n_items - 1} items of dataset {loaded.config['dataset']}")
    queries = resolve_queries(loaded, users, histories, on_unknown)
    features = None
    if user_features is not None:
        if histories is None:
            raise UsageError("user_features go with histories (new users); known users bring their own")
        if isinstance(user_features, dict) or len(user_features) != len(histories):
            raise UsageError("user_features must be a list with one dict (or None) per history")
        features = user_feature_ids(loaded, user_features, queries.keys, on_unknown)
    all_items, all_scores = [], []
    with torch.inference_mode():
        for start in range(0, len(queries.rows), batch_size):
            rows = queries.rows[start : start + batch_size]
            item_seq, lengths = tail_windows(queries.indptr, queries.indices, rows, loaded.max_length)
            batch_features = None if features is None else {
                field: ids[start : start + batch_size] for field, ids in features.items()}
            interaction = model_input(loaded, item_seq, lengths, queries.user_ids[start : start + batch_size],
                                      batch_features)
            exclude = None
            if exclude_seen:  # every item of the whole history (padding 0 is ranked last anyway)
                longest = int((queries.indptr[rows + 1] - queries.indptr[rows]).max())
                seen, _ = tail_windows(queries.indptr, queries.indices, rows, longest)
                exclude = (torch.arange(len(rows)).repeat_interleave(longest), seen.flatten())
            scorer = item_scorer(loaded.model, interaction, loaded.n_items)
            top = chunked_topk(scorer, loaded.n_items, k, chunk, exclude)
            all_items.append(top.items.cpu())
            all_scores.append(top.scores.cpu())
    ids = torch.cat(all_items).numpy() if all_items else np.zeros((0, k), dtype=np.int64)
    scores = torch.cat(all_scores).numpy() if all_scores else np.zeros((0, k), dtype=np.float32)
    items = loaded.item_tokens[ids].astype(object)
    items[~np.isfinite(scores)] = None
    return Recommendations(queries.keys, items, scores)


def format_recommendations(loaded: LoadedModel, recs: Recommendations, index: int) -> str:
    titles = loaded.titles()
    header = f"{'rank':>4}  {'item':<8}  {'title':<44}  score" if titles else f"{'rank':>4}  {'item':<8}  score"
    lines = [header]
    for rank, item, score in recs.rows(index):
        title = f"  {titles.get(item, ''):<44.44}" if titles else ""
        lines.append(f"{rank:>4}  {item:<8}{title}  {score:.4f}")
    return "\n".join(lines)
