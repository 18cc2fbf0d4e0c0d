"""Queries for a loaded model: known users or ad-hoc histories of raw item
tokens, resolved to internal ids and cut to the model's input window."""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from recbole.data.interaction import Interaction
from recbole.utils import FeatureType

from recbole_attn.errors import UsageError, check_choice
from recbole_attn.serve.load import LoadedModel

ON_UNKNOWN = ("error", "warn")


def tail_windows(
    indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``width`` items of each CSR row in ``rows``, right-padded with
    0 as RecBole pads: ``(B, width)`` ids and ``(B,)`` lengths."""
    start, end = indptr[rows], indptr[rows + 1]
    lengths = torch.clamp(end - start, max=width)
    position = torch.arange(width)[None, :]
    valid = position < lengths[:, None]
    index = torch.where(valid, (end - lengths)[:, None] + position, 0)
    return torch.where(valid, indices[index], 0), lengths


def _reject(problem: str, names: Sequence[str], on_unknown: str) -> None:
    """Raise (``on_unknown="error"``) or warn that ``names`` are skipped."""
    if not names:
        return
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    message = f"{problem}: {', '.join(repr(name) for name in names[:10])}{more}"
    if on_unknown == "error":
        raise UsageError(message)
    warnings.warn(f"{message} (skipped)", stacklevel=4)


@dataclass(frozen=True)
class Queries:
    """Resolved queries as CSR histories: row ``i`` answers ``keys[i]``."""

    keys: list[Any]
    indptr: torch.Tensor
    indices: torch.Tensor
    rows: torch.Tensor
    user_ids: torch.Tensor  # 0 (padding user) for ad-hoc histories


def is_token_list(value: Any) -> bool:
    """A list (or other iterable) of tokens; a string is one token, not its characters."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes))


def resolve_queries(
    loaded: LoadedModel, users: Sequence[Any] | None, histories: Sequence[Sequence[Any]] | None, on_unknown: str
) -> Queries:
    """Map user tokens, or histories of item tokens, to internal ids;
    unknown tokens and empty histories raise or are skipped (``on_unknown``)."""
    check_choice("on_unknown", on_unknown, ON_UNKNOWN)
    if (users is None) == (histories is None):
        raise UsageError("give either users (known user tokens) or histories (lists of item tokens), not both")
    name = loaded.config["dataset"]
    if users is not None:
        users = list(users) if is_token_list(users) else [users]  # one user token
        ids = loaded.user_ids(users)
        _reject(f"unknown users in dataset {name}", [str(u) for u, i in zip(users, ids) if i is None], on_unknown)
        user_keys = [str(u) for u, i in zip(users, ids) if i is not None]
        user_ids = torch.tensor([i for i in ids if i is not None], dtype=torch.long)
        has_history = (loaded.history_indptr[user_ids + 1] > loaded.history_indptr[user_ids]).tolist()
        without = [u for u, ok in zip(user_keys, has_history) if not ok]
        _reject(f"users without history in dataset {name}", without, on_unknown)
        if not all(has_history):
            user_keys = [u for u, ok in zip(user_keys, has_history) if ok]
            user_ids = user_ids[torch.tensor(has_history)]
        return Queries(list(user_keys), loaded.history_indptr, loaded.history_items, user_ids, user_ids)

    histories = list(cast(Iterable[Sequence[Any]], histories)) if is_token_list(histories) else None
    if histories is None or not all(is_token_list(history) for history in histories):
        raise UsageError("histories must be a list of histories, each a list of item tokens (e.g. [['50', '172']])")
    keys: list[Any] = []
    sequences: list[list[int]] = []
    unknown: list[str] = []
    empty: list[str] = []
    for position, history in enumerate(histories or ()):
        history = list(history)
        ids = loaded.item_ids(history)
        unknown += [str(token) for token, i in zip(history, ids) if i is None]
        known = [i for i in ids if i is not None]
        if not known:
            empty.append(f"#{position}")
            continue
        keys.append(position)
        sequences.append(known)
    _reject(f"unknown items in dataset {name}", list(dict.fromkeys(unknown)), on_unknown)
    _reject(f"empty histories (no item known in dataset {name})", empty, on_unknown)
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    indices = torch.tensor([i for s in sequences for i in s], dtype=torch.long)
    rows = torch.arange(len(sequences))
    return Queries(keys, indptr, indices, rows, torch.zeros(len(sequences), dtype=torch.long))


def model_input(loaded: LoadedModel, item_seq: torch.Tensor, lengths: torch.Tensor, users: torch.Tensor,
                features: dict[str, torch.Tensor] | None = None) -> Interaction:
    """The batch RecBole models read: history window, its length, the user id
    (and, for new users of a model with ``user_features``, their feature ids)."""
    model = loaded.model
    fields = {model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths, loaded.dataset.uid_field: users,
              **(features or {})}
    return Interaction(fields).to(loaded.device)


def _feature_tokens(field: str, value: Any, is_seq: bool, separator: str) -> list[str]:
    """The raw tokens given for one field: one for a token field; a list, or
    one string cut at the dataset's ``seq_separator``, for a token_seq field."""
    if isinstance(value, (list, tuple)):
        if not is_seq:
            raise UsageError(f"user feature {field!r} is a token field: one value, got {list(value)!r}")
        return [str(token) for token in value]
    if is_seq:
        return [token for token in str(value).split(separator) if token]
    return [str(value)]


def user_feature_ids(
    loaded: LoadedModel, user_features: Sequence[dict[str, Any] | None], keys: Sequence[Any], on_unknown: str,
) -> dict[str, torch.Tensor]:
    """``(len(keys), T)`` ids per user feature of the model for the new users
    ``keys`` (positions into ``user_features``; ``T`` is 1, or the most
    tokens given for a token_seq field); a feature left out, or a token the
    dataset does not know (``on_unknown``), is id 0: a user with no known
    feature gets the model's unknown-user vector."""
    fields = list(getattr(loaded.model, "user_features", None) or [])
    if not fields:
        raise UsageError(f"model {loaded.config['model']} was trained without user_features; "
                         "it cannot take a user's features")
    dataset = loaded.dataset
    separator = str(loaded.config["seq_separator"] or " ")
    given_tokens: list[dict[str, list[str]]] = []
    for position in keys:
        given = user_features[position] or {}
        extra = sorted(set(given) - set(fields))
        if extra:
            raise UsageError(f"unknown user feature {extra[0]!r}; the model takes: {', '.join(fields)}")
        given_tokens.append({field: _feature_tokens(field, value, dataset.field2type[field] == FeatureType.TOKEN_SEQ,
                                                    separator) for field, value in given.items()})
    columns: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for field in fields:
        width = max([1, *(len(tokens.get(field, ())) for tokens in given_tokens)])
        columns[field] = torch.zeros(len(keys), width, dtype=torch.long)
        for row, tokens in enumerate(given_tokens):
            for slot, token in enumerate(tokens.get(field, ())):
                try:
                    columns[field][row, slot] = int(dataset.token2id(field, token))
                except ValueError:
                    unknown.append(f"{field}={token}")
    _reject(f"unknown user feature values in dataset {loaded.config['dataset']}", unknown, on_unknown)
    return columns
