"""item_init: word2vec reads the training split only, fills the item table,
is cached, and can be frozen."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from recbole.data import create_dataset, data_preparation

from recbole_attn.config import AttnConfig
from recbole_attn.errors import UsageError
from recbole_attn.item_init import initialize_item_table, training_corpus
from recbole_attn.models.attnseq import AttnSeq

pytest.importorskip("gensim")


def split(root, tmp_path, **options):
    config = AttnConfig("AttnSeq", "pattern", config_dict={
        "data_path": str(root), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 12, "hidden_size": 16,
        "inner_size": 32, "checkpoint_dir": str(tmp_path), **options})
    dataset = create_dataset(config)
    feat = dataset.inter_feat  # before data_preparation, which turns it into prefix rows
    rows = zip(*(feat[field].tolist() for field in (dataset.uid_field, dataset.iid_field, dataset.time_field)))
    full: dict[int, list[str]] = {}
    for user, item, _ in sorted(rows, key=lambda row: (row[0], row[2])):
        full.setdefault(user, []).append(str(item))
    return config, full, *data_preparation(config, dataset)


def test_the_corpus_is_each_users_training_items_and_nothing_else(pattern_root, tmp_path):
    config, full, train, valid, test = split(pattern_root, tmp_path)

    def targets(loader):
        inter = loader.dataset.inter_feat
        return dict(zip(inter[loader.dataset.uid_field].tolist(), inter[loader.dataset.iid_field].tolist()))

    valid_target, test_target = targets(valid), targets(test)
    corpus = training_corpus(train.dataset)
    users = sorted(full)
    assert len(corpus) == len(users) == 300
    for user, sentence in zip(users, corpus):
        # RecBole's leave-one-out: the last item is the test target, the one before it validation's
        assert sentence + [str(valid_target[user]), str(test_target[user])] == full[user]


def test_word2vec_fills_known_items_caches_and_freezes(pattern_root, tmp_path, monkeypatch):
    config, _, train, _, _ = split(pattern_root, tmp_path, item_init="word2vec", item_init_freeze=True)
    torch.manual_seed(0)
    model = AttnSeq(config, train.dataset)
    before = model.item_embedding.weight.detach().clone()
    initialize_item_table(model, config, train.dataset)
    after = model.item_embedding.weight.detach()
    assert torch.equal(after[0], before[0])  # padding is left alone
    changed = (after != before).any(dim=1)
    assert changed[1:].all()  # every item of the pattern data is in some training sequence
    assert after[1:].std() == pytest.approx(before[1:].std().item(), rel=1e-4)  # the table's scale is kept
    # frozen: the pretrained rows get no gradient, the padding row (also an output row) still does
    model.item_embedding.weight.sum().backward()
    grad = model.item_embedding.weight.grad
    assert not grad[1:].any() and grad[0].any()
    model.item_embedding.weight.grad = None
    # items that follow each other in the sequences end up closer than random pairs
    table = torch.nn.functional.normalize(after[1:], dim=1)
    neighbours = (table[:-1] * table[1:]).sum(1).mean()
    assert neighbours > (table @ table.T).mean() + 0.1
    [cached] = list((tmp_path / "item_init").iterdir())
    # a second model reads the cache: gensim is not called again
    import gensim.models

    monkeypatch.setattr(gensim.models, "Word2Vec", None)
    torch.manual_seed(0)
    again = AttnSeq(config, train.dataset)
    initialize_item_table(again, config, train.dataset)
    torch.testing.assert_close(again.item_embedding.weight, after)  # same seed: same table
    assert list((tmp_path / "item_init").iterdir()) == [cached]
    with np.load(cached) as data:
        assert data["known"][1:].all() and not data["known"][0]


def test_random_keeps_the_table_and_bad_values_name_the_choices(pattern_root, tmp_path):
    config, _, train, _, _ = split(pattern_root, tmp_path)
    model = AttnSeq(config, train.dataset)
    before = model.item_embedding.weight.detach().clone()
    initialize_item_table(model, config, train.dataset)
    assert torch.equal(model.item_embedding.weight, before) and model.item_embedding.weight.requires_grad
    assert not (tmp_path / "item_init").exists()
    with pytest.raises(UsageError, match=r"unknown item_init 'glove'. Valid choices: random, word2vec"):
        split(pattern_root, tmp_path, item_init="glove")
    with pytest.raises(UsageError, match=r"item_init_freeze must be True or False"):
        split(pattern_root, tmp_path, item_init_freeze="yes")


def test_the_cache_keeps_tables_of_other_sizes_apart(pattern_root, tmp_path):
    """BERT4Rec's table has one row more than SASRec's on the same data: each gets its own vectors."""
    from recbole_attn.item_init import pretrained_table

    _, _, train, _, _ = split(pattern_root, tmp_path)
    rows = train.dataset.item_num
    first, _ = pretrained_table(train.dataset, rows, 8, 0, tmp_path, "pattern")
    second, known = pretrained_table(train.dataset, rows + 1, 8, 0, tmp_path, "pattern")
    assert first.shape == (rows, 8) and second.shape == (rows + 1, 8) and not known[-1]
    assert len(list((tmp_path / "item_init").iterdir())) == 2


@pytest.mark.parametrize("model, options, message", [
    ("BPR", {"item_init": "word2vec"}, "item_init: word2vec learns from training sequences; BPR is not a sequential"),
    ("AttnSeq", {"item_init": "word2vec", "item_init_freeze": True, "weight_decay": 0.01},
     "weight_decay 0.01 would still move them"),
])
def test_item_init_refuses_what_it_cannot_do(pattern_root, model, options, message):
    with pytest.raises(UsageError, match=message):
        AttnConfig(model, "pattern", config_dict={"data_path": str(pattern_root), "state": "WARNING", **options})


@pytest.mark.slow
def test_a_recbole_model_trains_from_word2vec_items(pattern_root, tmp_path):
    from recbole_attn import run

    result = run("GRU4Rec", "pattern", config_dict={
        "data_path": str(pattern_root), "epochs": 1, "state": "WARNING", "item_init": "word2vec",
        "checkpoint_dir": str(tmp_path)}, write_results=False)
    assert result["test"]["ndcg@10"] >= 0 and len(list((tmp_path / "item_init").iterdir())) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_frozen_rows_stay_frozen_after_the_model_moves_to_cuda(pattern_root, tmp_path):
    config, _, train, _, _ = split(pattern_root, tmp_path, item_init="word2vec", item_init_freeze=True)
    model = AttnSeq(config, train.dataset)
    initialize_item_table(model, config, train.dataset)
    model = model.cuda()
    model.item_embedding.weight.sum().backward()
    grad = model.item_embedding.weight.grad
    assert not grad[1:].any() and grad[0].any()
