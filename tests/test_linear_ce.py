"""The chunked cross-entropy gives F.cross_entropy's loss and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recbole_attn.models import linear_ce
from recbole_attn.models.linear_ce import chunk_rows, linear_cross_entropy


def _inputs(rows: int = 300, items: int = 97, dim: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    table = torch.randn(items, dim, generator=generator, dtype=torch.float64) * 0.5
    targets = torch.randint(0, items, (rows,), generator=generator)
    return hidden, table, targets


def _loss_and_grads(loss_fn, hidden, table, targets, **kwargs):
    hidden, table = hidden.clone().requires_grad_(), table.clone().requires_grad_()
    loss = loss_fn(hidden, table, targets, **kwargs)
    (3.0 * loss).backward()  # a non-unit upstream gradient must scale both grads
    return loss.detach(), hidden.grad, table.grad


def _reference(hidden, table, targets, ignore_index=None):
    return F.cross_entropy(hidden @ table.T, targets, ignore_index=-100 if ignore_index is None else ignore_index)


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 64, 1000])  # one row, ragged last chunk, one chunk
@pytest.mark.parametrize("ignore_index", [None, 0])
def test_matches_cross_entropy_on_the_full_logits(rows_per_chunk, ignore_index):
    hidden, table, targets = _inputs()
    targets[::5] = 0  # padding rows (ignored when ignore_index=0, an ordinary item otherwise)
    ours = _loss_and_grads(linear_cross_entropy, hidden, table, targets, ignore_index=ignore_index,
                           rows_per_chunk=rows_per_chunk)
    ref = _loss_and_grads(_reference, hidden, table, targets, ignore_index=ignore_index)
    for mine, theirs in zip(ours, ref):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_ignored_rows_get_no_gradient_and_all_ignored_is_zero():
    hidden, table, targets = _inputs(rows=20)
    targets[:10] = 0
    _, grad_hidden, _ = _loss_and_grads(linear_cross_entropy, hidden, table, targets, ignore_index=0)
    assert grad_hidden[:10].abs().max() == 0 and grad_hidden[10:].abs().max() > 0
    loss, grad_hidden, grad_table = _loss_and_grads(linear_cross_entropy, hidden, table, targets * 0, ignore_index=0)
    assert loss == 0 and grad_hidden.abs().max() == 0 and grad_table.abs().max() == 0


def test_bf16_autocast_keeps_float32_gradients_close():
    """The accelerator path (bf16 matmuls, fp32 softmax), run on CPU autocast."""
    hidden, table, targets = (t.float() if t.is_floating_point() else t for t in _inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grad_hidden, grad_table = _loss_and_grads(linear_cross_entropy, hidden, table, targets)
    ref_loss, ref_hidden, ref_table = _loss_and_grads(_reference, hidden, table, targets)
    assert loss.dtype == grad_hidden.dtype == grad_table.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grad_hidden, ref_hidden, rtol=5e-2, atol=5e-3)
    torch.testing.assert_close(grad_table, ref_table, rtol=5e-2, atol=5e-3)


def test_chunks_hold_about_the_budget_and_never_too_few_rows():
    cpu = torch.device("cpu")
    assert chunk_rows(1683, cpu) * 1683 * 4 <= linear_ce.CPU_CHUNK_BYTES
    assert chunk_rows(10**6, cpu) == linear_ce.MIN_CHUNK_ROWS
    assert chunk_rows(1683, torch.device("cuda")) > chunk_rows(1683, cpu)
