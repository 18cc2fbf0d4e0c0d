"""Full-sort ranking in item chunks: the top-k of every item for a batch of
users without ever holding a (users x items) score matrix.

Why: RecBole's full-sort evaluation asks the model for every item's score
(``full_sort_predict`` -> ``(B, n_items)`` floats), sets ``-inf`` on padding
and history in place, and its collector then takes ``torch.topk`` of that
matrix and builds a second ``(B, n_items)`` int matrix of positives beside it
(``Collector.eval_batch_collect``, ``'rec.topk'``). With 4,096 users per batch
and 1,000,000 items that is 2 x 16 GB per batch. The ranking metrics
(Recall, MRR, NDCG, Hit, Precision, MAP) only ever read the top ``k``.

Here the catalog is scored ``chunk_size`` items at a time
(:func:`item_scorer`), each chunk gets its own part of the mask, its top-k is
merged with the running top-k (:func:`chunked_topk`), and the ``'rec.topk'``
rows RecBole's metrics read are built from the top-k ids and the positive
(user, item) pairs alone (:func:`topk_hits`); :class:`TopKCollector` stores
them, so RecBole's metric code runs unchanged. Python loops run over chunks,
never over items or users.

Memory bound, per batch of ``B`` users, chunk ``C`` items, ``k = max(topk)``
and ``P`` masked (user, item) pairs, on top of the model's own forward pass
for ``B`` histories and its item table (``n_items x D x 4`` bytes, a
parameter that is sliced, never copied)::

    peak extra bytes ~= 4 * B * C            one chunk of float32 scores
                      + 72 * B * k           top-k values (float32) and ids (int64): running, chunk, merged, sorted
                      + 32 * P               the chunk's mask pairs (on an accelerator also B * C bytes of mask)

independent of ``n_items``. Auto chunk size (``eval_item_chunk_size: ~``):
``max(1024, 2**26 // B)`` items, i.e. at most 256 MiB of scores per chunk
(4,096 users -> 16,384 items). RecBole models without
:meth:`~recbole_attn.models.base.AttnSequentialRecommender.full_sort_scorer`
still make their own ``(B, n_items)`` matrix in ``full_sort_predict``; only
the masking, top-k and positives are chunked for them.

Exactness: each score is the same dot product as in the full matrix, but
BLAS may choose another kernel for another matrix width, so a score can
differ in its last bit, most likely in a narrow chunk (chunks are balanced,
so none is a sliver). Ties: a chunk's top-k is ``torch.topk``'s,
as in RecBole's unchunked path; between chunks an equal score goes to the
lower item id. A ranking can differ from RecBole's only where two scores tie
to the last bit; ``tests/test_evaluation.py`` checks that every metric equals
RecBole's.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from recbole.evaluator.collector import Collector
from recbole.evaluator.register import metric_information

from recbole_attn.errors import UsageError

#: ``score(start, end)`` -> (B, end - start) scores of items ``[start, end)``.
ItemScorer = Callable[[int, int], torch.Tensor]

CHUNK_SIZE_KEY = "eval_item_chunk_size"
#: Auto chunk size keeps one chunk of scores at most this many floats (256 MiB).
AUTO_CHUNK_FLOATS = 1 << 26
MIN_AUTO_CHUNK = 1024
#: What RecBole's collector can be given from the top-k alone.
TOPK_ONLY_NEEDS = frozenset({
    "rec.topk", "rec.items", "data.num_items", "data.num_users", "data.count_items", "data.count_users",
})


def check_chunk_size(value: object, name: str = CHUNK_SIZE_KEY) -> None:
    """Raise :class:`UsageError` naming ``value`` unless it is ``None``
    (auto), ``0`` (off) or a positive integer."""
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    if not ok:
        raise UsageError(
            f"{name} must be ~ (auto), 0 (off: RecBole's full score matrix) or a positive "
            f"number of items per chunk, got {value!r}"
        )


def resolve_chunk_size(value: int | None, users_per_batch: int, name: str = CHUNK_SIZE_KEY) -> int | None:
    """Items per chunk for ``value`` (see :func:`check_chunk_size`); ``None``
    when chunking is off."""
    check_chunk_size(value, name)
    if value is None:
        return max(MIN_AUTO_CHUNK, AUTO_CHUNK_FLOATS // max(int(users_per_batch), 1))
    return value or None


def metrics_needing_full_scores(metrics: Sequence[str]) -> list[str]:
    """The metrics that read more than the top-k (e.g. GAUC's mean rank, AUC's
    scores); with any of them the full score matrix is needed."""
    return [m for m in metrics if not set(metric_information.get(m.lower(), ["?"])) <= TOPK_ONLY_NEEDS]


def item_scorer(model: Any, interaction: Any, n_items: int) -> ItemScorer:
    """Scores of item ranges for the batch's users: the model's own
    ``full_sort_scorer`` when it has one (our plugin models: the history is
    encoded once, each call is one ``(B, D) x (D, C)`` product), else slices
    of its ``full_sort_predict`` matrix (RecBole's models, and a plugin
    that overrides ``full_sort_predict`` below the class giving it
    ``full_sort_scorer``: its own scores are the ones to rank by).
    Raises ``NotImplementedError`` where the model has neither."""
    chunked = getattr(model, "full_sort_scorer", None)
    if chunked is not None and not _predicts_its_own_way(type(model)):
        return chunked(interaction)
    scores = model.full_sort_predict(interaction).view(-1, n_items)
    return lambda start, end: scores[:, start:end]


def _predicts_its_own_way(model_class: type) -> bool:
    """Whether ``full_sort_predict`` comes before ``full_sort_scorer`` in the
    class's method order (a subclass or mixin replaced the scores, not the
    scorer)."""
    def position(name: str) -> int:
        found = [index for index, klass in enumerate(model_class.__mro__) if name in vars(klass)]
        return found[0] if found else len(model_class.__mro__)

    return position("full_sort_predict") < position("full_sort_scorer")


@dataclass(frozen=True)
class TopK:
    """The best ``k`` items of each row, best first; what ranking metrics read.
    Stands in for RecBole's ``(B, n_items)`` score matrix in the evaluation loop."""

    scores: torch.Tensor  # (B, k) float32, -inf where masked items had to fill the list
    items: torch.Tensor  # (B, k) int64 item ids
    n_items: int

    def __len__(self) -> int:
        return self.items.shape[0]


def chunked_topk(
    scorer: ItemScorer,
    n_items: int,
    k: int,
    chunk_size: int,
    exclude: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TopK:
    """Top-``k`` per row of the ``(B, n_items)`` matrix ``scorer(0, n_items)``
    with item 0 (padding) and the ``exclude`` pairs ``(rows, items)`` set to
    ``-inf`` (RecBole's ``history_index``, our ``filter_seen``), computed
    ``chunk_size`` items at a time. See the module docstring for the memory
    bound."""
    if not 0 < k <= n_items:
        raise UsageError(f"top-k of {k} items asked for, but the catalog has {n_items} (item 0 is padding)")
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be a positive number of items, got {chunk_size!r}")
    # balanced chunks of at most chunk_size: no sliver of a last chunk
    width = math.ceil(n_items / math.ceil(n_items / chunk_size))
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    best_scores: torch.Tensor | None = None
    best_items: torch.Tensor | None = None
    for start in range(0, n_items, width):
        end = min(start + width, n_items)
        scores = scorer(start, end).float()
        if start == 0:
            scores[:, 0] = float("-inf")
            if exclude is not None and exclude[0].numel():
                pairs = exclude[0].to(scores.device), exclude[1].to(scores.device)
        if pairs is not None:
            _mask_pairs(scores, pairs[0], pairs[1] - start)
        chunk_scores, chunk_items = torch.topk(scores, min(k, end - start), dim=1)
        del scores  # before the next chunk is scored: one chunk of scores alive at a time
        chunk_items += start
        if best_scores is None or best_items is None:
            best_scores, best_items = chunk_scores, chunk_items
            continue
        # earlier chunks first + a stable sort: equal scores go to the lower item id
        merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
        merged_items = torch.cat([best_items, chunk_items], dim=1)
        merged_scores, order = torch.sort(merged_scores, dim=1, descending=True, stable=True)
        best_scores, best_items = merged_scores[:, :k], merged_items.gather(1, order[:, :k])
    assert best_scores is not None and best_items is not None  # n_items >= 1: one chunk at least
    return TopK(best_scores, best_items, n_items)


def _mask_pairs(scores: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> None:
    """Set ``scores[rows, columns]`` to ``-inf`` for the pairs whose column
    falls inside ``scores``, in place."""
    inside = (columns >= 0) & (columns < scores.shape[1])
    if scores.device.type == "cpu":  # selecting the pairs is cheapest, and a CPU has no host to wait for
        scores[rows[inside], columns[inside]] = float("-inf")
    else:
        _mask_pairs_without_sync(scores, rows, columns, inside)


def _mask_pairs_without_sync(
    scores: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor, inside: torch.Tensor
) -> None:
    """:func:`_mask_pairs` on an accelerator: pairs outside mark one spare
    cell instead of being selected out, so no tensor's size depends on the
    data (selecting would wait for the device to count them)."""
    users, width = scores.shape
    cells = torch.where(inside, rows * width + columns, users * width)
    masked = torch.zeros(users * width + 1, dtype=torch.bool, device=scores.device)
    masked[cells] = True
    scores.masked_fill_(masked[:-1].view(users, width), float("-inf"))


def topk_hits(
    top_items: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor, n_items: int
) -> torch.Tensor:
    """RecBole's ``'rec.topk'`` rows for one batch, ``(B, k + 1)`` int64:
    whether each top-k item is a positive of its row, then the row's number of
    distinct positives; what ``Collector.eval_batch_collect`` builds from its
    ``(B, n_items)`` ``pos_matrix``, here from the ``(row, item)`` pairs."""
    device, users = top_items.device, top_items.shape[0]
    keys = torch.sort(positive_u.to(device).long() * n_items + positive_i.to(device).long()).values
    pos_len = torch.zeros(users, dtype=torch.long, device=device)
    query = torch.arange(users, device=device)[:, None] * n_items + top_items
    if keys.numel() == 0:
        return torch.cat([torch.zeros_like(query), pos_len[:, None]], dim=1)
    # sorted keys instead of unique/bincount/isin, which size their output by the data (a host sync)
    first = torch.ones_like(keys, dtype=torch.bool)
    first[1:] = keys[1:] != keys[:-1]
    pos_len.index_add_(0, keys // n_items, first.long())
    hits = keys[torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)] == query
    return torch.cat([hits.long(), pos_len[:, None]], dim=1)


class TopKCollector(Collector):
    """RecBole's ``Collector`` that also takes a :class:`TopK` in place of a
    score matrix and stores exactly what it would have stored for
    ``'rec.topk'`` and ``'rec.items'``."""

    def eval_batch_collect(
        self, scores_tensor: Any, interaction: Any, positive_u: torch.Tensor, positive_i: torch.Tensor
    ) -> None:
        if not isinstance(scores_tensor, TopK):
            return super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        full = [need for need in ("rec.meanrank", "rec.score", "data.label") if self.register.need(need)]
        if full:
            raise RuntimeError(f"chunked top-k evaluation cannot provide {full}; the trainer should have fallen back")
        if self.register.need("rec.items"):
            self.data_struct.update_tensor("rec.items", scores_tensor.items)
        if self.register.need("rec.topk"):
            hits = topk_hits(scores_tensor.items, positive_u, positive_i, scores_tensor.n_items)
            self.data_struct.update_tensor("rec.topk", hits)
