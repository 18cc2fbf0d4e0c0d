"""Full-softmax cross-entropy of ``hidden @ table.T`` without the
(rows x items) logits matrix.

``F.cross_entropy(hidden @ table.T, targets)`` writes the logits, their
log-softmax, a one-hot gradient and the logits' gradient: four passes over a
rows x items matrix that does not fit in cache. Here the rows go through in
chunks small enough to stay in cache;
each chunk's loss *and* gradients are computed at once (softmax minus the
one-hot, times ``table`` and ``hidden``), so the matrix is never whole and
backward only rescales. Same loss and gradients up to float rounding, less
memory traffic (``docs/attnseq.md``), and a catalog of millions of items
trains without a (rows x items) tensor.

References:
    Erik Wijmans et al. "Cut Your Losses in Large-Vocabulary Language
    Models." ICLR 2025. Pin-Lun Hsu et al. "Liger Kernel: Efficient Triton
    Kernels for LLM Training." 2024 (fused linear cross-entropy).
"""
from __future__ import annotations

from typing import Any

import torch

#: Bytes of float32 logits per chunk: about a core's L2 cache on a CPU; on
#: accelerators large, for few launches.
CPU_CHUNK_BYTES = 2**20
ACCELERATOR_CHUNK_BYTES = 2**28
MIN_CHUNK_ROWS = 64


def chunk_rows(n_items: int, device: torch.device) -> int:
    """Rows per chunk so that one chunk's logits take about the chunk budget."""
    budget = CPU_CHUNK_BYTES if device.type == "cpu" else ACCELERATOR_CHUNK_BYTES
    return max(MIN_CHUNK_ROWS, budget // (4 * max(n_items, 1)))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                ignore_index: int | None, rows: int) -> torch.Tensor:
        # softmax and gradient sums in float32 at least (float64 stays float64)
        dtype = torch.promote_types(torch.promote_types(hidden.dtype, table.dtype), torch.float32)
        keep = None if ignore_index is None else targets != ignore_index
        count = (keep.sum() if keep is not None else hidden.new_tensor(len(targets))).clamp(min=1).to(dtype)
        grad_hidden = torch.empty(hidden.shape, dtype=dtype, device=hidden.device)
        grad_table = torch.zeros(table.shape, dtype=dtype, device=table.device)
        total = torch.zeros((), dtype=dtype, device=hidden.device)
        for start in range(0, len(targets), rows):
            part, target = hidden[start:start + rows], targets[start:start + rows, None]
            logits = (part @ table.T).to(dtype)  # bf16 matmul under autocast, fp32 softmax
            target_logit = logits.gather(1, target)
            peak = logits.amax(-1, keepdim=True)
            probs = logits.sub_(peak).exp_()  # in place; one exp pass serves the loss and the gradient
            norm = probs.sum(-1, keepdim=True)
            losses = peak + norm.log() - target_logit  # logsumexp - target logit
            probs.div_(norm)  # softmax
            one_hot = torch.ones_like(losses)
            if keep is not None:
                weight = keep[start:start + rows, None].to(dtype)
                losses, one_hot = losses * weight, weight
                probs.mul_(weight)
            total += losses.sum()
            probs.scatter_add_(1, target, -one_hot)  # d loss / d logits: softmax - one-hot
            grad_hidden[start:start + rows] = probs @ table
            grad_table += probs.T @ part
        ctx.save_for_backward(grad_hidden, grad_table, count)
        ctx.dtypes = hidden.dtype, table.dtype
        return total / count

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_table, count = ctx.saved_tensors
        scale = grad / count
        hidden_dtype, table_dtype = ctx.dtypes
        return (grad_hidden * scale).to(hidden_dtype), (grad_table * scale).to(table_dtype), None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, ignore_index: int | None = None,
    rows_per_chunk: int | None = None,
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ table.T, targets, ignore_index=...)``, mean
    over the rows not ignored, computed chunk by chunk (module docstring).

    hidden (N, D), table (V, D), targets (N,) ids in ``[0, V)``. Rows whose
    target is ``ignore_index`` (padding) add nothing and get zero gradient;
    shapes stay static, so no host sync is needed to drop them.
    ``rows_per_chunk``: default :func:`chunk_rows` for the catalog and device.
    """
    rows = rows_per_chunk or chunk_rows(len(table), hidden.device)
    return _LinearCrossEntropy.apply(hidden, table, targets, ignore_index, rows)
