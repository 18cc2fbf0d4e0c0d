"""All-positions training rows and seen-item filtering against RecBole's split."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction

from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import (
    AllPositionsLoader,
    SeenFilterCollate,
    attach_seen_filters,
    training_sequences,
    window_rows,
    window_stride,
)
from recbole_attn.errors import UsageError
from recbole_attn.data.fields import TARGET_SEQ_FIELD


def test_windows_cover_every_target_once_newest_first():
    users, items, offsets = np.array([7]), np.arange(1, 9), np.array([0, 8])
    rows = window_rows(users, items, offsets, max_len=3)
    assert rows["item_seq"].tolist() == [[5, 6, 7], [2, 3, 4], [1, 0, 0]]
    assert rows["targets"].tolist() == [[6, 7, 8], [3, 4, 5], [2, 0, 0]]
    assert rows["item_seq_len"].tolist() == [3, 3, 1] and rows["user"].tolist() == [7, 7, 7]


def test_single_item_users_give_no_rows():
    rows = window_rows(np.array([1, 2]), np.array([4, 5, 6]), np.array([0, 1, 3]), max_len=5)
    assert rows["item_seq"].tolist() == [[5, 0, 0, 0, 0]] and rows["targets"].tolist() == [[6, 0, 0, 0, 0]]


def training_last_item(dataset, user):
    users, items, offsets = training_sequences(dataset)
    k = users.tolist().index(user)
    return items[offsets[k + 1] - 1].item()


@pytest.fixture(scope="module")
def ml100k_split(ml100k_root):
    config = AttnConfig("AttnSeq", "ml-100k", config_dict={  # side-by-side windows unless a test sets an overlap
        "data_path": str(ml100k_root), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 20, "window_overlap": 0.0})
    dataset = create_dataset(config)
    return config, dataset, *data_preparation(config, dataset)


def loader_with_overlap(config, train, overlap: float) -> AllPositionsLoader:
    config["window_overlap"] = overlap
    try:
        return AllPositionsLoader(config, train)
    finally:
        config["window_overlap"] = 0.0


@pytest.mark.parametrize("overlap", [0.0, 0.5])  # side by side, and the shipped default
def test_all_positions_rows_hold_exactly_recboles_training_items(ml100k_split, overlap):
    config, dataset, train, valid, test = ml100k_split
    loader = loader_with_overlap(config, train, overlap)
    fields = loader.fields
    uid, iid = dataset.uid_field, dataset.iid_field
    seq_field = dataset.item_id_list_field
    feat = train.dataset.inter_feat
    for user in torch.unique(feat[uid]).tolist():
        own = feat[uid] == user
        # RecBole's training part of this user: its prefix rows' targets plus the first history item
        recbole_targets = Counter(feat[iid][own].tolist())
        first = feat[seq_field][own][feat[dataset.item_list_length_field][own].argmin(), 0].item()
        mine = fields[uid] == user
        targets = fields[TARGET_SEQ_FIELD][mine]
        inputs = fields[seq_field][mine]
        assert Counter(targets[targets > 0].tolist()) == recbole_targets
        # inputs: the whole training sequence but its last item, so inputs + last == first + targets
        # (overlapping windows repeat inputs: then the same items, not the same counts)
        last = training_last_item(train.dataset, user)
        if overlap == 0:
            assert Counter(inputs[inputs > 0].tolist()) + Counter([last]) == recbole_targets + Counter([first])
        else:
            assert set(inputs[inputs > 0].tolist()) | {last} == set(recbole_targets) | {first}
        held_out = {valid.dataset.inter_feat[iid][valid.dataset.inter_feat[uid] == user].item(),
                    test.dataset.inter_feat[iid][test.dataset.inter_feat[uid] == user].item()}
        assert not held_out & set(inputs.flatten().tolist() + targets.flatten().tolist())


def test_training_sequences_follow_time_order(ml100k_split):
    config, dataset, train, valid, test = ml100k_split
    users, items, offsets = training_sequences(train.dataset)
    feat = valid.dataset.inter_feat
    for k, user in enumerate(users.tolist()):
        row = feat[dataset.uid_field] == user
        history = feat[dataset.item_id_list_field][row][0]
        length = feat[dataset.item_list_length_field][row].item()
        # the validation row's history is the last `length` training items, in order
        assert items[offsets[k]:offsets[k + 1]][-length:].tolist() == history[:length].tolist()


def test_seen_filter_marks_exactly_the_earlier_items(ml100k_split):
    config, dataset, train, valid, test = ml100k_split
    users, items, offsets = training_sequences(train.dataset)
    attach_seen_filters(train, valid, test)
    try:
        interaction, (rows, cols), positive_u, positive_i = next(iter(test))
        assert isinstance(test.collate_fn, SeenFilterCollate)
        vfeat = valid.dataset.inter_feat
        for row, user in enumerate(interaction[dataset.uid_field].tolist()[:5]):
            k = users.tolist().index(user)
            expected = set(items[offsets[k]:offsets[k + 1]].tolist())
            expected.add(vfeat[dataset.iid_field][vfeat[dataset.uid_field] == user].item())
            assert set(cols[rows == row].tolist()) == expected
            assert positive_i[positive_u == row].item() not in expected  # the target itself stays ranked
    finally:
        for loader in (valid, test):
            loader.collate_fn = loader.collate_fn.collate_fn


def test_seen_filter_keeps_every_validation_item_of_a_random_split(ml100k_root):
    config = AttnConfig("AttnSeq", "ml-100k", config_dict={
        "data_path": str(ml100k_root), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 20,
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full", "group_by": "user"}})
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    attach_seen_filters(train, valid, test)
    interaction, (rows, cols), _, _ = next(iter(test))
    vfeat = valid.dataset.inter_feat
    sizes = []
    for row, user in enumerate(interaction[dataset.uid_field].tolist()[:20]):
        validated = set(vfeat[dataset.iid_field][vfeat[dataset.uid_field] == user].tolist())
        assert validated <= set(cols[rows == row].tolist())
        sizes.append(len(validated))
    assert max(sizes) > 1


def test_overlapping_windows_give_context_and_still_cover_every_target_once():
    users, items, offsets = np.array([7]), np.arange(1, 11), np.array([0, 10])  # 9 targets
    rows = window_rows(users, items, offsets, max_len=4, stride=2)
    assert rows["item_seq"].tolist() == [[6, 7, 8, 9], [4, 5, 6, 7], [2, 3, 4, 5], [1, 2, 3, 0]]
    # a window supervises only its last `stride` positions, the oldest all of its own
    assert rows["targets"].tolist() == [[0, 0, 9, 10], [0, 0, 7, 8], [0, 0, 5, 6], [2, 3, 4, 0]]
    assert sorted(t for row in rows["targets"].tolist() for t in row if t) == list(range(2, 11))


@pytest.mark.parametrize("overlap", [0.99, 0.85, 0.6, 0.0])  # strides 1, 3, 8 and 20 at length 20
def test_any_overlap_supervises_each_training_target_exactly_once(ml100k_split, overlap):
    config, dataset, train, valid, test = ml100k_split
    overlapping = loader_with_overlap(config, train, overlap)
    plain = AllPositionsLoader(config, train)
    uid = dataset.uid_field
    for loader in (overlapping, plain):
        assert loader.num_targets == len(train.dataset)  # one target per RecBole prefix row
    for user in torch.unique(plain.fields[uid]).tolist()[:10]:
        def targets(loader):
            own = loader.fields[TARGET_SEQ_FIELD][loader.fields[uid] == user]
            return Counter(own[own > 0].tolist())
        assert targets(overlapping) == targets(plain)
    assert (overlapping.num_rows > plain.num_rows) == (overlap > 0)


def test_window_overlap_becomes_a_stride():
    assert [window_stride(50, overlap) for overlap in (0.0, None, 0.5, 0.9, 0.999)] == [50, 50, 25, 5, 1]


@pytest.mark.parametrize("bad", [1.0, -0.1, "half", True])
def test_window_overlap_is_checked(ml100k_root, bad):
    with pytest.raises(UsageError, match=r"window_overlap must be a number in \[0, 1\)"):
        AttnConfig("AttnSeq", "ml-100k", config_dict={"data_path": str(ml100k_root), "window_overlap": bad})


@pytest.mark.parametrize("model_name", ["AttnSeq", "AttnRNN"])
def test_batches_are_cut_to_their_longest_window_without_changing_the_loss(pattern_root, model_name):
    from recbole_attn import registry

    config = AttnConfig(model_name, "pattern", config_dict={
        "data_path": str(pattern_root), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 40, "train_batch_size": 64})
    dataset = create_dataset(config)
    train = data_preparation(config, dataset)[0]
    torch.manual_seed(0)
    model = registry.get_model_class(model_name)(config, train.dataset).eval()
    batch = next(iter(AllPositionsLoader(config, train)))
    seq_field, len_field = dataset.item_id_list_field, dataset.item_list_length_field
    width = int(batch[len_field].max())
    assert batch[seq_field].shape[1] == batch[TARGET_SEQ_FIELD].shape[1] == width < 40
    padded = Interaction(dict(batch.interaction))  # the same rows at the configured width
    for field in (seq_field, TARGET_SEQ_FIELD):
        padded[field] = torch.nn.functional.pad(batch[field], (0, 40 - width))
    with torch.no_grad():
        torch.testing.assert_close(model.calculate_loss(batch), model.calculate_loss(padded))
