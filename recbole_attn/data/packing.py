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

import torch

#: Interaction fields of a packed batch: each position's place in its own
#: window, and its window's number in the batch (1, 2, ...; 0 = padding).
POSITION_SEQ_FIELD = "position_list"
SEGMENT_SEQ_FIELD = "segment_list"


def pack_windows(item_seq: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Lay right-padded windows (N, W) of ``lengths`` (N,) end to end in
    ``ceil(sum / longest)`` rows, longest first, dealt to the rows in
    alternating directions so that the rows fill about evenly.

    Returns ``item_seq``, ``targets``, ``positions`` and ``segments``, each
    (rows, width), and ``lengths`` (rows,), the positions each row fills.
    """
    lengths = lengths.long()
    count = len(lengths)
    rows = max(1, -(-int(lengths.sum()) // max(1, int(lengths.max()))))
    by_length = torch.argsort(lengths, descending=True, stable=True)
    rank = torch.arange(count)
    lap, slot = rank // rows, rank % rows
    row_of_ranked = torch.where(lap % 2 == 0, slot, rows - 1 - slot)
    row = torch.empty_like(row_of_ranked)
    row[by_length] = row_of_ranked
    # each window starts after the windows of lower rank in its row
    ranked_lengths = lengths[by_length]
    in_row_order = torch.argsort(row_of_ranked * count + rank, stable=True)
    ends = torch.cumsum(ranked_lengths[in_row_order], 0)
    row_fill = torch.bincount(row_of_ranked, weights=ranked_lengths, minlength=rows).long()
    row_start = torch.cumsum(row_fill, 0) - row_fill
    start_ranked = torch.empty_like(ranked_lengths)
    start_ranked[in_row_order] = ends - ranked_lengths[in_row_order] - row_start[row_of_ranked[in_row_order]]
    start = torch.empty_like(start_ranked)
    start[by_length] = start_ranked

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
