"""Each evaluated user's hits in the top-k, kept beside a run's results so
that two runs can be compared user by user (paired significance tests,
:mod:`recbole_attn.bench.significance`) without retraining.

What is kept is exactly what RecBole's ranking metrics read (its
``'rec.topk'`` rows: whether each of the top ``k = max(topk)`` items is a
positive, and the user's number of positives), so every per-user metric at a
cut-off ``<= k`` is recomputed exactly; a target ranked below ``k`` counts as
a miss, as it does in the metrics themselves. It works for any trainer
RecBole's evaluation loop drives, ours and RecBole's models alike.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from recbole_attn.serialization import atomic_npz_save
from recbole_attn.hooks import TrainerHook

logger = logging.getLogger(__name__)

#: Suffix of the file saved beside ``<results>.json``.
RANKS_SUFFIX = ".ranks.npz"


@dataclass(frozen=True)
class UserHits:
    """One evaluation's top-k hits, one row per evaluated user, loader order."""

    user_id: np.ndarray  # (U,) int64 RecBole's internal user ids
    hits: np.ndarray  # (U, k) uint8: 1 where the item at that rank is a positive
    pos_len: np.ndarray  # (U,) int64 positives per user (1 in leave-one-out)
    user_token: np.ndarray | None = None  # (U,) str the users' original ids, where known

    @property
    def rank(self) -> np.ndarray:
        """(U,) 1-based rank of each user's best-ranked positive; 0 = below the top k."""
        found = self.hits.any(axis=1)
        return np.where(found, self.hits.argmax(axis=1) + 1, 0)


class _RecordingCollector:
    """RecBole's evaluation collector, noting each batch's users and, when the
    trainer asks for the collected data, the ``'rec.topk'`` rows it holds."""

    def __init__(self, inner: Any, hook: UserRanks) -> None:
        self.inner, self.hook = inner, hook
        self.batch_users: list[torch.Tensor] = []

    def eval_batch_collect(self, scores: Any, interaction: Any, positive_u: Any, positive_i: Any) -> None:
        self.batch_users.append(interaction[self.hook.uid_field].detach())  # stays on the device until the end
        self.inner.eval_batch_collect(scores, interaction, positive_u, positive_i)

    def get_data_struct(self) -> Any:
        struct = self.inner.get_data_struct()
        users = torch.cat(self.batch_users).cpu().numpy() if self.batch_users else np.zeros(0, np.int64)
        self.batch_users = []
        if "rec.topk" in struct:
            self.hook.record(users, struct.get("rec.topk"))
        return struct

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class UserRanks(TrainerHook):
    """Keeps the hits of the trainer's latest evaluation (after a run: the
    test) in :attr:`latest`; ``None`` when no top-k metric was computed."""

    def __init__(self) -> None:
        self.latest: UserHits | None = None
        self.uid_field = "user_id"

    def on_build(self, trainer: Any) -> None:
        self.uid_field = trainer.config["USER_ID_FIELD"]

    def wrap_collector(self, collector: Any) -> Any:
        return _RecordingCollector(collector, self)

    def save(self, path: str | os.PathLike, dataset: Any) -> bool:
        """Write :attr:`latest` to ``path`` (:func:`save_user_hits`) with the
        users' tokens from ``dataset``; ``False`` when there is nothing to save."""
        if self.latest is None:
            return False
        save_user_hits(path, replace(self.latest, user_token=user_tokens(dataset, self.latest)))
        return True

    def record(self, users: np.ndarray, topk: torch.Tensor) -> None:
        rows = topk.cpu().numpy()
        if len(users) != len(rows):  # sampled evaluation: a row per candidate, not per user
            users = np.full(len(rows), -1, dtype=np.int64)
        self.latest = UserHits(users.astype(np.int64), rows[:, :-1].astype(np.uint8), rows[:, -1].astype(np.int64))


def save_user_hits(path: str | os.PathLike, hits: UserHits) -> None:
    """Write ``hits`` (with the users' original tokens, where known) as a
    compressed ``.npz``, atomically."""
    arrays: dict[str, Any] = {"user_id": hits.user_id, "hits": hits.hits, "pos_len": hits.pos_len}
    if hits.user_token is not None:
        arrays["user_token"] = np.asarray(hits.user_token).astype(str)
    atomic_npz_save(path, compressed=True, **arrays)


def load_user_hits(path: str | os.PathLike) -> UserHits:
    """The hits a :func:`save_user_hits` file holds."""
    with np.load(path, allow_pickle=False) as data:
        tokens = data["user_token"] if "user_token" in data.files else None
        return UserHits(data["user_id"], data["hits"], data["pos_len"], tokens)


def user_tokens(dataset: Any, hits: UserHits) -> np.ndarray | None:
    """Original user ids of ``hits``' users (``None`` where they are unknown)."""
    if (hits.user_id < 0).any():
        return None
    return np.asarray(dataset.id2token(dataset.uid_field, hits.user_id))
