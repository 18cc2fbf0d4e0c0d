"""Packing a batch of training windows end to end into a few rows.

Right-padded windows make a batch as wide as its longest window; on short
histories (most e-commerce data) most of the positions an encoder computes
are padding. Packed, the same windows lie side by side in rows about as wide
as the longest one, each keeping its own positions (0, 1, ...) and a segment
id, so that attention stays inside a window (a block-diagonal causal mask).
The batch keeps the same windows and targets, so the loss and its gradient
are those of the padded batch; only the padding work goes.
"""
from __future__ import annotations

import heapq

import torch


def assign_rows(lengths: list[int], rows: int) -> tuple[list[int], list[int]]:
    """Each window's row and start column: longest first, each to the row
    filled least so far (Graham's LPT rule), which fills ``rows`` rows about
    evenly. A loop over a batch's ``train_batch_size`` windows (32 by
    default), O(N log rows) on the host, not over items or positions."""
    fills = [(0, row) for row in range(rows)]
    row_of, start_of = [0] * len(lengths), [0] * len(lengths)
    for window in sorted(range(len(lengths)), key=lambda w: -lengths[w]):
        fill, row = heapq.heappop(fills)
        row_of[window], start_of[window] = row, fill
        heapq.heappush(fills, (fill + lengths[window], row))
    return row_of, start_of


def row_count(lengths: torch.Tensor) -> int:
    """Rows for windows of ``lengths``: as few as can hold them at the
    longest window's width, ``ceil(sum / longest)``."""
    return max(1, -(-int(lengths.sum()) // max(1, int(lengths.max()))))


def pack_windows(item_seq: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Lay right-padded windows (N, W) of ``lengths`` (N,) end to end in
    :func:`row_count` rows (:func:`assign_rows`).

    Returns ``item_seq``, ``targets``, ``positions`` and ``segments``, each
    (rows, width), and ``lengths`` (rows,), the positions each row fills.
    """
    lengths = lengths.long()
    count = len(lengths)
    rows = row_count(lengths)
    row_of, start_of = assign_rows(lengths.tolist(), rows)
    row, start = torch.tensor(row_of), torch.tensor(start_of)
    row_fill = torch.zeros(rows, dtype=torch.long).index_add_(0, row, lengths)
    width = int(row_fill.max())
    position = torch.arange(item_seq.shape[1])[None, :].expand(count, -1)
    valid = position < lengths[:, None]
    to_row = row[:, None].expand_as(position)[valid]
    to_column = (start[:, None] + position)[valid]

    def placed(values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(rows, width)
        out[to_row, to_column] = values[valid]
        return out

    segment = (torch.arange(count) + 1)[:, None].expand_as(position)
    return {"item_seq": placed(item_seq), "targets": placed(targets), "positions": placed(position),
            "segments": placed(segment), "lengths": row_fill}
