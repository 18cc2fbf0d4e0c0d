"""Views over RecBole's split sequential data that RecBole does not offer.

* :class:`AllPositionsLoader`: RecBole trains on every prefix of every
  sequence (a user with n items is encoded n times, one target each). This
  loader rebuilds each user's training sequence from RecBole's own training
  rows and serves it once, cut into windows of ``MAX_ITEM_LIST_LENGTH``, with
  the next item as target at every position. Same split, same items, n times
  fewer encoder passes; each batch is as wide as its longest window, so short
  histories (most e-commerce data) do not pay for ``MAX_ITEM_LIST_LENGTH``.
* :func:`attach_seen_filters`: makes RecBole's sequential full-sort loaders
  report each user's items of the earlier splits (validation: training;
  test: training and validation), which RecBole's trainer then ranks last,
  exactly as it does for general recommenders.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from recbole.data.dataloader.general_dataloader import FullSortEvalDataLoader
from recbole.data.interaction import Interaction

from recbole_attn import distributed
from recbole_attn.data.fields import POSITION_SEQ_FIELD, SEGMENT_SEQ_FIELD, TARGET_SEQ_FIELD
from recbole_attn.data.packing import pack_windows, row_count
from recbole_attn.errors import UsageError


def training_sequences(dataset: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's training items in time order, rebuilt from RecBole's
    prefix rows: the first row's first history item, then every row's target.

    Returns ``(users, items, offsets)``: user ``users[k]`` has the items
    ``items[offsets[k]:offsets[k + 1]]``.
    """
    feat = dataset.inter_feat
    uid = feat[dataset.uid_field].numpy()
    target = feat[dataset.iid_field].numpy()
    first_item = feat[dataset.item_id_list_field][:, 0].numpy()
    time = feat[dataset.time_field].numpy() if dataset.time_field in feat else np.zeros(len(uid))
    order = np.lexsort((np.arange(len(uid)), time, uid))  # stable: user, then time
    uid, target, first_item = uid[order], target[order], first_item[order]
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
    lengths = np.diff(np.r_[starts, len(uid)]) + 1  # + the first history item
    offsets = np.r_[0, np.cumsum(lengths)]
    items = np.empty(offsets[-1], dtype=np.int64)
    items[offsets[:-1]] = first_item[starts]
    is_target = np.ones(offsets[-1], dtype=bool)
    is_target[offsets[:-1]] = False
    items[is_target] = target
    return uid[starts], items, offsets


def window_rows(
    users: np.ndarray, items: np.ndarray, offsets: np.ndarray, max_len: int, stride: int | None = None
) -> dict[str, torch.Tensor]:
    """Cut every sequence into right-padded windows of ``max_len`` inputs,
    newest first, each supervised position's target being the next item;
    every item after the first is the target of exactly one position.

    ``stride`` (default ``max_len``: windows side by side) < ``max_len``
    makes windows overlap: each window ends ``stride`` inputs before the
    newer one and supervises only its last ``stride`` positions (the oldest
    window: all of them), so a target has at least ``max_len - stride``
    earlier items as context where the sequence has them, at about
    ``max_len / stride`` times the encoder work. Side by side, a window's
    first positions see only the items inside it.
    """
    stride = max_len if stride is None else stride
    n_targets = np.diff(offsets) - 1  # inputs = all but the last item
    # windows ending at T, T - stride, ... while they start after 0, then one starting at 0
    n_windows = np.where(n_targets > max_len, -(-(n_targets - max_len) // stride) + 1, 1)
    n_windows = np.where(n_targets > 0, n_windows, 0).astype(np.int64)
    window_user = np.repeat(np.arange(len(users)), n_windows)
    # k-th window from the end of its user: inputs [end - max_len, end) clipped at 0
    k = np.arange(len(window_user)) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    end = n_targets[window_user] - k * stride
    start = np.maximum(end - max_len, 0)
    lengths = end - start
    # inputs [end, end + stride) are the newer window's; this one supervises [end - stride, end)
    first_supervised = np.where(start == 0, 0, end - stride)
    position = np.arange(max_len)[None, :]
    valid = position < lengths[:, None]
    index = start[:, None] + position
    supervised = valid & (index >= first_supervised[:, None])
    index = offsets[window_user][:, None] + np.where(valid, index, 0)
    inputs = np.where(valid, items[index], 0)
    targets = np.where(supervised, items[np.minimum(index + 1, len(items) - 1)], 0)
    return {
        "user": torch.from_numpy(users[window_user]),
        "item_seq": torch.from_numpy(inputs),
        "item_seq_len": torch.from_numpy(lengths),
        "targets": torch.from_numpy(targets),
    }


def window_stride(max_len: int, overlap: float | None) -> int:
    """``window_overlap`` (share of a window the newer one also covers) as
    the step between window ends: 0 -> ``max_len`` (side by side), 0.5 ->
    half a window; at least 1."""
    return max(1, round(max_len * (1 - (overlap or 0.0))))


#: Share of a batch's positions that packing must save to be used.
PACKING_MIN_SAVING = 0.2


class AllPositionsLoader:
    """Training batches of sequence windows with a target at every position,
    built once from a RecBole training loader; iterates like it.

    Under DDP (``world_size > 1``) every process holds all rows but serves a
    disjoint share of each *global* batch of ``train_batch_size`` rows: the
    global batches are those a single process would form, cut into
    ``world_size`` near-equal parts, so every process runs the same number of
    steps (DDP's all-reduce never waits for a process that ran out) and the
    effective batch is ``train_batch_size``, as in RecBole's prefix loaders.
    The shuffle is drawn from ``seed + epoch`` (:meth:`set_epoch`), the same
    on every process and the same again after a resume. A single process
    keeps shuffling with the global torch RNG, as before.
    """

    def __init__(self, config: Any, train_data: Any, rank: int | None = None, world_size: int | None = None) -> None:
        self.dataset = train_data.dataset  # RecBole's trainer reads counts from it
        self.batch_size = config["train_batch_size"]
        self.shuffle = bool(config["shuffle"])
        self.rank = distributed.rank() if rank is None else rank
        self.world_size = distributed.world_size() if world_size is None else world_size
        self.seed, self.epoch = config["seed"], 0
        self.pack = bool(config["pack_windows"])
        dataset = self.dataset
        max_len = config["MAX_ITEM_LIST_LENGTH"]
        rows = window_rows(*training_sequences(dataset), max_len, window_stride(max_len, config["window_overlap"]))
        self.fields = {
            dataset.uid_field: rows["user"],
            dataset.item_id_list_field: rows["item_seq"],
            dataset.item_list_length_field: rows["item_seq_len"],
            TARGET_SEQ_FIELD: rows["targets"],
        }
        self.num_rows = len(rows["user"])  # all processes' rows, as are the counts below
        self.num_targets = int((rows["targets"] > 0).sum())
        if self.num_rows < self.world_size:
            raise UsageError(f"{self.num_rows} training windows cannot be shared by {self.world_size} processes; "
                             f"use a smaller nproc")
        batches = math.ceil(self.num_rows / self.batch_size)
        if batches > 1 and self.num_rows - (batches - 1) * self.batch_size < self.world_size:
            batches -= 1  # a tail too short for one row per process joins the batch before it
        self.num_batches = batches

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Shuffle of the coming epoch, when shared by several processes."""
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_rows)
        if self.world_size == 1:
            return torch.randperm(self.num_rows)
        return torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def batch_indices(self) -> list[torch.Tensor]:
        """Row indices of this process's batches in the current epoch."""
        order = self._order()
        bounds = [k * self.batch_size for k in range(self.num_batches)] + [self.num_rows]
        return [torch.tensor_split(order[start:end], self.world_size)[self.rank]
                for start, end in zip(bounds[:-1], bounds[1:])]

    def __iter__(self) -> Iterator[Interaction]:
        sequence_fields = (self.dataset.item_id_list_field, TARGET_SEQ_FIELD)
        lengths = self.fields[self.dataset.item_list_length_field]
        for index in self.batch_indices():
            # windows are right-padded and every model on them is causal: the padding after the
            # batch's longest window changes no output, so it is cut before the model sees it
            width = int(lengths[index].max()) if len(index) else 0
            batch = {name: column[index][:, :width] if name in sequence_fields else column[index]
                     for name, column in self.fields.items()}
            yield Interaction(self._packed(batch) if self.pack and len(index) else batch)

    def _packed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's windows packed into rows (:mod:`recbole_attn.data.packing`);
        a packed row holds several users, so it has no user id. A batch that
        packing would not make smaller by :data:`PACKING_MIN_SAVING` of its
        positions (windows of about equal length, as on MovieLens) stays as it
        is, on the fused causal kernel, which costs less than the mask."""
        dataset = self.dataset
        lengths, padded = batch[dataset.item_list_length_field], batch[dataset.item_id_list_field].numel()
        if row_count(lengths) * int(lengths.max()) > (1 - PACKING_MIN_SAVING) * padded:
            return batch  # no packing would save enough: skip its work
        packed = pack_windows(batch[dataset.item_id_list_field], batch[TARGET_SEQ_FIELD], lengths)
        if packed["item_seq"].numel() > (1 - PACKING_MIN_SAVING) * padded:
            return batch
        return {dataset.item_id_list_field: packed["item_seq"], dataset.item_list_length_field: packed["lengths"],
                TARGET_SEQ_FIELD: packed["targets"], POSITION_SEQ_FIELD: packed["positions"],
                SEGMENT_SEQ_FIELD: packed["segments"]}


def seen_items(owners: np.ndarray, items: np.ndarray, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR ``(indptr, indices)`` over user ids of the items ``items[k]``
    seen by user ``owners[k]``."""
    order = np.argsort(owners, kind="stable")
    counts = np.bincount(owners, minlength=n_users)
    return torch.from_numpy(np.r_[0, np.cumsum(counts)]), torch.from_numpy(items[order].astype(np.int64))


class SeenFilterCollate:
    """Wraps a full-sort loader's ``collate_fn`` so that each batch reports
    ``history_index = (rows, items)`` of the items its users saw before."""

    def __init__(self, collate_fn: Any, uid_field: str, indptr: torch.Tensor, indices: torch.Tensor) -> None:
        self.collate_fn, self.uid_field = collate_fn, uid_field
        self.indptr, self.indices = indptr, indices

    def __call__(self, batch: Any) -> Any:
        interaction, history_index, positive_u, positive_i = self.collate_fn(batch)
        users = interaction[self.uid_field]
        starts, counts = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        rows = torch.repeat_interleave(torch.arange(len(users)), counts)
        within = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        cols = self.indices[torch.repeat_interleave(starts, counts) + within]
        if history_index is not None:
            rows, cols = torch.cat([history_index[0], rows]), torch.cat([history_index[1], cols])
        return interaction, (rows, cols), positive_u, positive_i


def attach_seen_filters(train_data: Any, valid_data: Any, test_data: Any) -> None:
    """``filter_seen``: validation ranks the training items of each user last;
    test ranks training and validation items last. Full ranking
    only: in sampled evaluation (``uni100``, ``pop100``) RecBole draws the
    negatives among the items a user has not interacted with already."""
    dataset = train_data.dataset
    users, items, offsets = training_sequences(dataset)
    owners = np.repeat(users, np.diff(offsets))
    valid_feat = valid_data.dataset.inter_feat  # a user has several validation rows under a random split
    valid_owners = valid_feat[dataset.uid_field].numpy()
    valid_items = valid_feat[dataset.iid_field].numpy()
    n_users = dataset.user_num
    for loader, csr in (
        (valid_data, seen_items(owners, items, n_users)),
        (test_data, seen_items(np.r_[owners, valid_owners], np.r_[items, valid_items], n_users)),
    ):
        if isinstance(loader, FullSortEvalDataLoader):
            loader.collate_fn = SeenFilterCollate(loader.collate_fn, dataset.uid_field, *csr)
