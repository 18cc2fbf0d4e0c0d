"""AttnSeq: causality, padding, attention weights, losses, features, learning."""
from __future__ import annotations

import math

import pytest
import torch
from recbole.data import create_dataset, data_preparation

import recbole_attn
from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import AllPositionsLoader
from recbole_attn.errors import UsageError
from recbole_attn.models.attnseq import AttnSeq
from tests.conftest import FAST, benchmark_script

L = 12


def build(root, dataset="pattern", **options):
    config = AttnConfig("AttnSeq", dataset, config_dict={
        "data_path": str(root), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": L, "hidden_size": 32,
        "inner_size": 64, **options})
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    torch.manual_seed(0)
    return config, AttnSeq(config, train.dataset), train


@pytest.fixture(scope="module")
def model(pattern_root):
    return build(pattern_root)[1].eval()


def random_batch(n_items, batch=4, lengths=(1, 5, 9, L)):
    seq = torch.randint(1, n_items, (batch, L))
    length = torch.tensor(lengths[:batch])
    seq[torch.arange(L)[None, :] >= length[:, None]] = 0  # RecBole pads on the right
    return seq, length


@pytest.mark.parametrize("norm_first, readout", [(True, "last"), (False, "last"), (True, "attention")])
def test_no_future_leakage(pattern_root, norm_first, readout):
    model = build(pattern_root, norm_first=norm_first, readout=readout)[1].eval()
    seq, length = random_batch(model.n_items)
    out = model.encode(seq, length)
    for t in range(L - 1):
        changed = seq.clone()
        changed[:, t + 1] = (changed[:, t + 1] % (model.n_items - 1)) + 1
        torch.testing.assert_close(model.encode(changed, length)[:, : t + 1], out[:, : t + 1])
        assert not torch.allclose(model.encode(changed, length)[:, t + 1], out[:, t + 1])


@pytest.mark.parametrize("readout", ["last", "attention"])
def test_padding_never_reaches_valid_positions(pattern_root, readout):
    """RecBole pads on the right, so the causal mask alone keeps padding out."""
    model = build(pattern_root, readout=readout)[1].eval()
    seq, length = random_batch(model.n_items)
    garbage = seq.clone()
    pad = torch.arange(L)[None, :] >= length[:, None]
    garbage[pad] = torch.randint(1, model.n_items, (int(pad.sum()),))
    torch.testing.assert_close(model(garbage, length), model(seq, length))


def test_user_output_does_not_depend_on_batch_mates(model):
    seq, length = random_batch(model.n_items)
    alone = model(seq[:1], length[:1])
    torch.testing.assert_close(model(seq, length)[:1], alone)
    assert length[0] == 1  # a history of length 1 works


def test_attention_weights_are_causal_distributions(model):
    seq, length = random_batch(model.n_items)
    weights = model.attention_weights(seq, length)
    assert weights.shape == (4, model.n_layers * model.n_heads, L, L)
    assert len(model.attention_panels()) == model.n_layers and len(model.attention_panels()[0]) == model.n_heads
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, model.n_layers * model.n_heads, L))
    assert torch.all(weights.triu(diagonal=1) == 0)


@pytest.mark.parametrize("norm_first", [True, False])
def test_every_layer_norm_uses_the_configured_epsilon(pattern_root, norm_first):
    config, net, _ = build(pattern_root, norm_first=norm_first, layer_norm_eps=1e-3)
    norms = [module for module in net.modules() if isinstance(module, torch.nn.LayerNorm)]
    assert len(norms) == 2 * config["n_layers"] + 1 and {norm.eps for norm in norms} == {1e-3}


@pytest.mark.parametrize("loss_type", ["CE", "SSM", "BPR"])
def test_all_positions_losses_are_finite_and_decrease(pattern_root, loss_type):
    config, model, train = build(pattern_root, loss_type=loss_type, num_negatives=16, train_batch_size=64)
    loader = AllPositionsLoader(config, train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    epoch_losses = []
    for _ in range(6):
        total = 0.0
        for batch in loader:
            loss = model.calculate_loss(batch)
            assert torch.isfinite(loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        epoch_losses.append(total / len(loader))
    assert epoch_losses[-1] < 0.8 * epoch_losses[0], epoch_losses


def test_gradient_reaches_every_parameter(pattern_root):
    config, model, train = build(pattern_root)
    batch = next(iter(AllPositionsLoader(config, train)))
    model.calculate_loss(batch).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_item_features_are_fused(ml100k_root, fusion):
    _, plain, _ = build(ml100k_root, "ml-100k")
    _, fused, _ = build(ml100k_root, "ml-100k", selected_features=["class"], feature_fusion=fusion)
    extra = sum(p.numel() for p in fused.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra >= 19 * 32  # a genre embedding table (18 genres + padding)
    seq, length = random_batch(fused.n_items)
    fused.eval()
    assert fused(seq, length).shape == (4, 32)
    fused.feature_embedding.embeddings["class"].weight.data.normal_()
    before = fused(seq, length)
    fused.feature_embedding.embeddings["class"].weight.data.normal_()
    assert not torch.allclose(before, fused(seq, length))  # genres change the representation


def test_unknown_feature_lists_the_valid_ones(ml100k_root):
    with pytest.raises(UsageError, match="'genres'.*class"):
        build(ml100k_root, "ml-100k", selected_features=["genres"])


@pytest.mark.slow
def test_learns_the_pattern_far_above_random(pattern_root):
    result = recbole_attn.run("AttnSeq", "pattern", config_dict={
        **FAST, "data_path": str(pattern_root), "epochs": 15, "stopping_step": 15, "learning_rate": 3e-3,
        "MAX_ITEM_LIST_LENGTH": L}, write_results=False)
    random_ndcg = sum(1 / 60 / math.log2(rank + 1) for rank in range(1, 11))  # expected, random ranking of 60
    assert result["test"]["ndcg@10"] > 0.6 and result["test"]["ndcg@10"] > 7 * random_ndcg
    assert result["train_targets"] == 300 * 17  # 20 items a user, 2 held out, first has no target


def test_prefix_mode_matches_recbole_rows(pattern_root):
    result = recbole_attn.run("AttnSeq", "pattern", config_dict={
        **FAST, "data_path": str(pattern_root), "epochs": 1, "train_mode": "prefix"}, write_results=False)
    assert result["train_targets"] == result["dataset_stats"]["train_rows"] == 300 * 17


def test_filter_seen_runs_for_every_model(pattern_root):
    for model in ("AttnSeq", "GRU4Rec"):
        result = recbole_attn.run(model, "pattern", config_dict={
            **FAST, "data_path": str(pattern_root), "epochs": 1, "filter_seen": True}, write_results=False)
        assert result["config"]["filter_seen"] is True and 0 <= result["test"]["ndcg@10"] <= 1


@pytest.mark.parametrize("norm_first, readout", [(True, "last"), (False, "last"), (True, "attention")])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_forward_equals_encode_at_the_last_position(pattern_root, norm_first, n_layers, readout):
    """forward computes only the last position in the last block (or pools
    up to it); it must give what the full causal encode gives there, for
    every length."""
    model = build(pattern_root, norm_first=norm_first, n_layers=n_layers, readout=readout)[1].eval()
    seq, length = random_batch(model.n_items)
    full = model.encode(seq, length)[torch.arange(4), length - 1]
    torch.testing.assert_close(model(seq, length), full, rtol=1e-5, atol=1e-6)


def test_attention_readout_pools_earlier_outputs_and_is_explained(pattern_root):
    model = build(pattern_root, readout="attention")[1].eval()
    seq, length = random_batch(model.n_items)
    weights = model.attention_weights(seq, length)
    panels = model.n_layers * model.n_heads + 1
    assert weights.shape == (4, panels, L, L) and model.attention_panels()[-1] == ["readout"]
    readout = weights[:, -1]
    torch.testing.assert_close(readout.sum(-1), torch.ones(4, L))
    assert torch.all(readout.triu(diagonal=1) == 0) and readout[:, 3, :4].min() > 0  # causal, and it mixes
    # the pooled vector is the readout's weights over the final-normed block outputs
    hidden = model.final_norm(model.blocks[1](model.blocks[0](model.embed(seq))[0])[0])
    torch.testing.assert_close(model.encode(seq, length), readout @ hidden, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in model.readout_pooling.parameters()) == 32 * 32 + 32 + 32


def test_bad_readout_names_the_choices(pattern_root):
    with pytest.raises(UsageError, match=r"unknown readout 'pooled'. Valid choices: attention, last"):
        build(pattern_root, readout="pooled")


def test_the_speed_benchmarks_textbook_variant_computes_the_same_loss_and_output(pattern_root):
    """benchmarks/attnseq_speedups.py times A against B: the same numbers,
    computed the textbook way."""
    speedups = benchmark_script("attnseq_speedups.py")
    config, shipped, train = build(pattern_root, train_batch_size=64)
    textbook = speedups.TextbookAttnSeq(config, train.dataset)
    textbook.load_state_dict(shipped.state_dict(), assign=True)
    shipped.eval(), textbook.eval()
    batch = next(iter(AllPositionsLoader(config, train)))
    torch.testing.assert_close(textbook.calculate_loss(batch), shipped.calculate_loss(batch))
    seq, length = random_batch(shipped.n_items)
    torch.testing.assert_close(textbook(seq, length), shipped(seq, length))
    with torch.no_grad():  # one set of weights: training either trains both
        shipped.item_embedding.weight.add_(1.0)
    assert torch.equal(textbook.item_embedding.weight, shipped.item_embedding.weight)
