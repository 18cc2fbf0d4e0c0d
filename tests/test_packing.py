"""pack_windows: the layout of packed rows, the same loss and gradients as
padded windows, training end to end, and its refusals."""
from __future__ import annotations

import re

import pytest
import torch
from recbole.data import create_dataset, data_preparation

from recbole_attn.checkpoint import settings_fingerprint, training_settings
from recbole_attn.config import AttnConfig
from recbole_attn.data.fields import POSITION_SEQ_FIELD, SEGMENT_SEQ_FIELD, TARGET_SEQ_FIELD
from recbole_attn.data.packing import pack_windows
from recbole_attn.data.rows import AllPositionsLoader
from recbole_attn.errors import UsageError
from recbole_attn.models.attnseq import AttnSeq
from recbole_attn.trainer import AttnTrainer


def padded(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded windows whose items name their window and place (100 * window + place + 1)."""
    width = max(lengths)
    place = torch.arange(width)[None, :]
    window = torch.arange(len(lengths))[:, None]
    valid = place < torch.tensor(lengths)[:, None]
    items = torch.where(valid, 100 * window + place + 1, 0)
    return items, torch.where(valid, items + 1000, 0), torch.tensor(lengths)


@pytest.mark.parametrize("lengths", [[5, 1, 9, 3, 3, 12, 2, 7, 1, 4], [6, 6, 6, 6], [4], [12, 1, 1, 1]])
def test_every_window_is_laid_out_whole_in_its_own_segment(lengths):
    items, targets, length = padded(lengths)
    packed = pack_windows(items, targets, length)
    rows = -(-sum(lengths) // max(lengths))
    assert packed["item_seq"].shape[0] == rows
    assert packed["lengths"].tolist() == (packed["segments"] > 0).sum(1).tolist()
    assert int(packed["lengths"].sum()) == sum(lengths)
    for window, size in enumerate(lengths):
        inside = packed["segments"] == window + 1
        assert int(inside.sum()) == size and int(inside.any(1).sum()) == 1  # in one row only
        columns = inside.nonzero()[:, 1]
        assert torch.equal(columns, torch.arange(size) + columns[0])  # contiguous, in order
        assert torch.equal(packed["item_seq"][inside], items[window, :size])
        assert torch.equal(packed["targets"][inside], targets[window, :size])
        assert torch.equal(packed["positions"][inside], torch.arange(size))
    padding = packed["segments"] == 0
    assert not packed["item_seq"][padding].any() and not packed["targets"][padding].any()


def test_rows_fill_about_evenly():
    """Equal windows take a row each; 32 short windows and one long one fill
    rows about as wide as the long one, not 32 rows of its width."""
    items, targets, length = padded([6] * 4)
    assert pack_windows(items, targets, length)["item_seq"].shape == (4, 6)
    lengths = [50] + [3, 4, 5, 6, 7, 8, 9, 10] * 4
    items, targets, length = padded(lengths)
    shape = pack_windows(items, targets, length)["item_seq"].shape
    assert shape == (6, 50)  # 258 positions in 300


@pytest.fixture(scope="module")
def short_root(tmp_path_factory):
    """``short/short.inter``: 120 users with 4 to 30 interactions over 40
    items, so a batch's windows differ in length as on review data."""
    root = tmp_path_factory.mktemp("short")
    (root / "short").mkdir()
    generator = torch.Generator().manual_seed(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(1, 121):
        count = int(torch.randint(4, 31, (1,), generator=generator))
        items = torch.randint(1, 41, (count,), generator=generator).tolist()
        lines += [f"{user}\t{item}\t{step}" for step, item in enumerate(items)]
    (root / "short" / "short.inter").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def packed_setup(short_root):
    config = AttnConfig("AttnSeq", "short", config_dict={
        "data_path": str(short_root), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 30, "hidden_size": 32,
        "inner_size": 64, "train_batch_size": 16})
    train = data_preparation(config, create_dataset(config))[0]
    torch.manual_seed(0)
    return config, AttnSeq(config, train.dataset).eval(), train


def first_batches(config, train):
    """The first batch of the same shuffle, padded and packed."""
    padded_loader, packed_loader = AllPositionsLoader(config, train), AllPositionsLoader(config, train)
    packed_loader.pack = True
    torch.manual_seed(1)
    plain = next(iter(padded_loader))
    torch.manual_seed(1)
    return plain, next(iter(packed_loader))


def test_a_packed_batch_has_the_loss_and_gradients_of_the_padded_one(packed_setup):
    config, model, train = packed_setup
    plain, packed = first_batches(config, train)
    assert packed[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]].numel() < plain[
        config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]].numel()
    assert int((packed[TARGET_SEQ_FIELD] > 0).sum()) == int((plain[TARGET_SEQ_FIELD] > 0).sum())
    gradients = []
    for batch in (plain, packed):
        model.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        gradients.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_a, grads_a), (loss_b, grads_b) = gradients
    torch.testing.assert_close(loss_b, loss_a)
    for grad_a, grad_b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(grad_b, grad_a, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("lengths, packs", [
    ([30] * 4, False),  # full windows: one row each either way
    ([30] * 8 + [15, 15], False),  # 9 rows of 30 for 10: a tenth saved, too little for the mask's cost
    ([30] * 3 + [15, 15], True),  # 4 rows of 30 for 5: a fifth saved
    ([30] + [3] * 20, True),
])
def test_a_batch_is_packed_only_where_it_saves_a_fifth_of_the_positions(packed_setup, lengths, packs):
    config, _, train = packed_setup
    loader = AllPositionsLoader(config, train)
    items, targets, length = padded(lengths)
    batch = {config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]: items, TARGET_SEQ_FIELD: targets,
             config["ITEM_LIST_LENGTH_FIELD"]: length}
    assert (loader._packed(batch) is not batch) == packs


def test_windows_of_one_row_do_not_see_each_other(packed_setup):
    """Without the segments, attention would reach into the windows before
    in the row, and the loss would change."""
    config, model, train = packed_setup
    plain, packed = first_batches(config, train)
    assert len(packed[SEGMENT_SEQ_FIELD]) < len(plain[TARGET_SEQ_FIELD])  # some row holds several windows
    with torch.no_grad():
        kept = model.calculate_loss(packed)
        packed[SEGMENT_SEQ_FIELD] = (packed[SEGMENT_SEQ_FIELD] > 0).long()  # one segment per row
        assert not torch.allclose(model.calculate_loss(packed), kept)


def test_packed_training_runs_an_epoch_and_keeps_the_targets(packed_setup):
    config, _, train = packed_setup
    torch.manual_seed(0)
    model = AttnSeq(config, train.dataset)
    trainer = AttnTrainer(config, model)
    loader = AllPositionsLoader(config, train)
    loader.pack = True
    batches = list(loader)
    assert all(POSITION_SEQ_FIELD in batch and config["USER_ID_FIELD"] not in batch for batch in batches)
    assert sum(int((b[TARGET_SEQ_FIELD] > 0).sum()) for b in batches) == loader.num_targets
    first = trainer._train_epoch(loader, 0)
    assert trainer._train_epoch(loader, 1) < first


@pytest.mark.parametrize("model, options, message", [
    ("AttnRNN", {}, "needs train_mode: all_positions and a model that takes packed rows (AttnSeq), not AttnRNN"),
    ("AttnSeq", {"train_mode": "prefix"}, "not AttnSeq with train_mode: prefix"),
    ("AttnSeq", {"readout": "attention"}, "needs readout: last and no user_features, got readout: attention"),
    ("AttnSeq", {"user_features": ["age"]}, "user_features: ['age']"),
])
def test_pack_windows_is_refused_before_data_is_read(model, options, message):
    """Refused where windows of one row could see each other; no data_path
    is given, so the check runs before any data would be read."""
    with pytest.raises(UsageError, match=re.escape(message)):
        AttnConfig(model, "no-such-dataset", config_dict={"state": "WARNING", "pack_windows": True, **options})


def test_packing_left_off_keeps_older_checkpoints_resumable():
    older = {"model": "AttnSeq", "learning_rate": 0.001}  # written before the option
    assert settings_fingerprint(training_settings({**older, "pack_windows": False})) == \
        settings_fingerprint(training_settings(older))
    assert settings_fingerprint(training_settings({**older, "pack_windows": True})) != \
        settings_fingerprint(training_settings(older))
