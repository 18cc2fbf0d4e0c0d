"""AttnRNN: masking and shapes per scorer, padding invariance, gradients,
option validation, all-positions encoding (equal to ``forward`` on every
prefix, causal, padding-proof), learning a sequential pattern in both train
modes, and ``run.py`` end to end.

The shared ``conftest.py`` runs every test in a scratch cwd (RecBole writes
``saved/`` and ``log_tensorboard/`` there) and provides the tiny datasets.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction

import recbole_attn
from recbole_attn.config import AttnConfig
from recbole_attn.errors import UsageError
from recbole_attn.models.attnrnn import ATTEND_OVER, ATTENTION_TYPES, FUSIONS, AttnRNN
from recbole_attn.data.fields import TARGET_SEQ_FIELD
from recbole_attn.models.layers import AttentionPooling

RUN_PY = Path(__file__).resolve().parents[1] / "run.py"
QUIET = {"state": "WARNING", "show_progress": False}
MAX_LEN = 8


@pytest.fixture(scope="module")
def pattern_dataset(pattern_root):
    """RecBole's training dataset of the synthetic pattern data (built once)."""
    config = AttnConfig("AttnRNN", "pattern", config_dict={"data_path": str(pattern_root), **QUIET})
    train_data, _, _ = data_preparation(config, create_dataset(config))
    return train_data.dataset


@pytest.fixture
def make_model(pattern_root, pattern_dataset):
    """``make_model(**options)``: a seeded AttnRNN in eval mode."""

    def make(**options):
        config_dict = {"data_path": str(pattern_root), "MAX_ITEM_LIST_LENGTH": MAX_LEN, **QUIET, **options}
        config = AttnConfig("AttnRNN", "pattern", config_dict=config_dict)
        torch.manual_seed(0)
        return AttnRNN(config, pattern_dataset).eval()

    return make


def histories(lengths, max_len=MAX_LEN, n_items=61, seed=0):
    """Right-padded random item histories (B, max_len) of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    items = torch.randint(1, n_items, (len(lengths), max_len), generator=generator)
    valid = torch.arange(max_len)[None, :] < lengths[:, None]
    return items * valid, lengths


def last_rows(model, item_seq, lengths):
    """(B, L) weight of each history item in the last valid position's user vector."""
    return model.attention_weights(item_seq, lengths)[torch.arange(len(lengths)), 0, lengths - 1]


@pytest.mark.parametrize("attend_over", ["hidden", "embedding"])
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_weights_are_a_softmax_over_valid_positions(make_model, attention_type, attend_over):
    model = make_model(attention_type=attention_type, attend_over=attend_over)
    item_seq, lengths = histories([1, 3, MAX_LEN, 5])
    with torch.no_grad():
        output = model(item_seq, lengths)
        weights = last_rows(model, item_seq, lengths)
    assert output.shape == (4, model.embedding_size)
    assert torch.isfinite(output).all()
    assert weights.shape == item_seq.shape
    padding = torch.arange(MAX_LEN)[None, :] >= lengths[:, None]
    assert (weights[padding] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))
    assert weights[0, 0] == pytest.approx(1.0)  # a history of one item
    if attention_type == "none":  # the last state only
        assert (weights.argmax(-1) == lengths - 1).all()


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_output_ignores_padding_and_batch_neighbours(make_model, attention_type, rnn_type):
    model = make_model(attention_type=attention_type, rnn_type=rnn_type, num_layers=2)
    item_seq, lengths = histories([3, MAX_LEN, 6])
    with torch.no_grad():
        alone = model(item_seq[:1, :3], lengths[:1])  # no padding at all
        batched = model(item_seq, lengths)  # padded to MAX_LEN beside longer histories
        weights_alone = last_rows(model, item_seq[:1, :3], lengths[:1])
        weights_batched = last_rows(model, item_seq, lengths)
    torch.testing.assert_close(batched[:1], alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights_batched[:1, :3], weights_alone, atol=1e-6, rtol=1e-5)


def batch_of(model, item_seq, lengths, targets):
    return Interaction({model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths, model.POS_ITEM_ID: targets})


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_gradient_reaches_every_parameter(make_model, attention_type, fusion):
    model = make_model(attention_type=attention_type, fusion=fusion, num_layers=2, hidden_size=32).train()
    item_seq, lengths = histories([2, 5, MAX_LEN, 7, 1, 4])
    loss = model.calculate_loss(batch_of(model, item_seq, lengths, torch.tensor([1, 2, 3, 4, 5, 6])))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert {"rnn.weight_hh_l1", "rnn.weight_ih_l1"} <= {name for name, _ in model.named_parameters()}


def test_every_rnn_layer_is_initialised(make_model):
    model = make_model(rnn_type="lstm", num_layers=3, hidden_size=16)
    for name, param in model.rnn.named_parameters():
        if name.startswith("weight_hh"):  # (4 * 16, 16) with orthonormal columns
            torch.testing.assert_close(param.T @ param, torch.eye(16), atol=1e-5, rtol=0)
        elif name.startswith("bias"):
            assert (param == 0).all(), name


@pytest.mark.parametrize(
    "options, bad",
    [
        ({"attention_type": "bahdanau"}, "bahdanau"),
        ({"hidden_size": -4}, "-4"),
        ({"rnn_type": "rnn"}, "rnn"),
        ({"attend_over": "both"}, "both"),
        ({"fusion": "sum"}, "sum"),
        ({"dropout_prob": 1.5}, "1.5"),
        ({"attention_type": "dot", "attend_over": "embedding", "hidden_size": 32}, "32"),
    ],
)
def test_invalid_options_are_rejected(make_model, options, bad):
    with pytest.raises(UsageError, match=bad):
        make_model(**options)


@pytest.mark.parametrize(
    "train_mode, options",
    [
        ("prefix", {"train_batch_size": 128}),
        # 300 users x 19 targets = 300 windows: batches of 32 give 10 steps per epoch
        ("all_positions", {"train_batch_size": 32}),
    ],
)
@pytest.mark.slow
def test_learns_a_sequential_pattern(pattern_root, train_mode, options):
    result = recbole_attn.run(
        "AttnRNN",
        "pattern",
        config_dict={
            "data_path": str(pattern_root),
            "epochs": 5,
            "learning_rate": 0.005,
            "train_mode": train_mode,
            **options,
            **QUIET,
        },
        write_results=False,
    )
    # random ranking of 60 items: NDCG@10 ~ 0.07
    assert result["test"]["ndcg@10"] > 0.5


# -- all positions: encode() -------------------------------------------------


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("attend_over", ATTEND_OVER)
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_encode_equals_forward_on_every_prefix(make_model, attention_type, attend_over, fusion):
    """Position t of one all-positions pass is forward() of the prefix ending
    at t, so both train modes fit the same function."""
    model = make_model(attention_type=attention_type, attend_over=attend_over, fusion=fusion)
    item_seq, lengths = histories([1, 3, MAX_LEN, 5])
    with torch.no_grad():
        encoded = model.encode(item_seq, lengths)
        assert encoded.shape == (4, MAX_LEN, model.embedding_size)
        torch.testing.assert_close(encoded[torch.arange(4), lengths - 1], model(item_seq, lengths))
        for t in range(MAX_LEN):
            prefix_lengths = lengths.clamp(max=t + 1)
            keep = lengths > t  # rows where position t is valid
            prefix = model(item_seq[:, : t + 1] * (torch.arange(t + 1) < prefix_lengths[:, None]), prefix_lengths)
            torch.testing.assert_close(encoded[keep, t], prefix[keep], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_encode_has_no_future_leakage(make_model, attention_type, rnn_type):
    model = make_model(attention_type=attention_type, rnn_type=rnn_type, num_layers=2)
    item_seq, lengths = histories([MAX_LEN, MAX_LEN, 6])
    with torch.no_grad():
        encoded = model.encode(item_seq, lengths)
        for t in range(MAX_LEN - 1):
            changed = item_seq.clone()
            changed[:, t + 1] = changed[:, t + 1] % (model.n_items - 1) + 1  # another real item
            after = model.encode(changed, lengths)
            assert torch.equal(after[:, : t + 1], encoded[:, : t + 1]), t
            assert not torch.allclose(after[:2, t + 1], encoded[:2, t + 1]), t


@pytest.mark.parametrize("attend_over", ATTEND_OVER)
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_encode_ignores_padding_and_batch_neighbours(make_model, attention_type, attend_over):
    model = make_model(attention_type=attention_type, attend_over=attend_over, num_layers=2)
    item_seq, lengths = histories([3, MAX_LEN, 6])
    padding = torch.arange(MAX_LEN)[None, :] >= lengths[:, None]
    garbage = item_seq.clone()
    garbage[padding] = torch.randint(1, model.n_items, (int(padding.sum()),))
    with torch.no_grad():
        alone = model.encode(item_seq[:1, :3], lengths[:1])  # no padding at all
        batched = model.encode(item_seq, lengths)  # padded to MAX_LEN beside longer histories
        noisy = model.encode(garbage, lengths)  # real items where padding should be
    torch.testing.assert_close(batched[:1, :3], alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(noisy[~padding], batched[~padding], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_encode_weights_are_causal_distributions(make_model, attention_type):
    model = make_model(attention_type=attention_type)
    item_seq, lengths = histories([2, MAX_LEN])
    with torch.no_grad():
        weights = model.attention_weights(item_seq, lengths)[:, 0]
        last = model._represent(item_seq, lengths, all_positions=False, need_weights=True)[1][:, 0]  # forward's
    assert model.attention_panels() == [["pooling"]] and weights.shape == (2, MAX_LEN, MAX_LEN)
    assert (weights.triu(diagonal=1) == 0).all()  # exactly zero on later positions
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, MAX_LEN))
    torch.testing.assert_close(weights[torch.arange(2), lengths - 1], last)


@pytest.mark.parametrize("loss_type", ["CE", "SSM", "BPR"])
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_all_positions_gradient_reaches_every_parameter(make_model, attention_type, loss_type):
    model = make_model(attention_type=attention_type, num_layers=2, hidden_size=32, loss_type=loss_type,
                       num_negatives=8).train()
    item_seq, lengths = histories([2, 5, MAX_LEN, 1])
    targets, _ = histories([2, 5, MAX_LEN, 1], seed=1)  # a next item at every valid position, 0 on padding
    batch = Interaction({model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths, TARGET_SEQ_FIELD: targets})
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert torch.isfinite(param.grad).all(), name


def test_all_positions_loss_is_the_mean_prefix_loss(make_model):
    """The all-positions loss of a window equals RecBole's prefix-row loss
    averaged over the window's targets (same function, one pass)."""
    model = make_model(attention_type="additive")
    item_seq, lengths = histories([MAX_LEN, 4])
    targets, _ = histories([MAX_LEN, 4], seed=1)
    batch = Interaction({model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths, TARGET_SEQ_FIELD: targets})
    rows = [(b, t) for b in range(2) for t in range(int(lengths[b]))]
    prefix_seq = torch.stack([item_seq[b] * (torch.arange(MAX_LEN) <= t) for b, t in rows])
    prefix = batch_of(model, prefix_seq, torch.tensor([t + 1 for _, t in rows]),
                      torch.stack([targets[b, t] for b, t in rows]))
    with torch.no_grad():
        torch.testing.assert_close(model.calculate_loss(batch), model.calculate_loss(prefix))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("attention_type", AttentionPooling.TYPES)
def test_pooling_on_cuda_matches_cpu(attention_type, dtype):
    """CUDA picks other SDPA kernels (and must differentiate through the float
    logits of additive/linear, with zero-width query/key): same values, finite
    gradients, under bf16 autocast too."""
    torch.manual_seed(0)
    pool = AttentionPooling(attention_type, 16, 16, 16)
    states = torch.randn(4, MAX_LEN, 16)
    expected, _ = pool(states, states, states, causal=True)
    pool_cuda, states_cuda = pool.cuda(), states.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
        context, weights = pool_cuda(states_cuda, states_cuda, states_cuda, causal=True, need_weights=True)
    context.float().square().sum().backward()
    tolerance = 1e-5 if dtype is torch.float32 else 5e-2
    torch.testing.assert_close(context.float().cpu(), expected, atol=tolerance, rtol=tolerance)
    assert (weights.triu(diagonal=1) == 0).all()
    for param in [*pool_cuda.parameters(), states_cuda]:
        grad = param.grad
        assert grad is not None and torch.isfinite(grad).all()


@pytest.mark.slow
def test_run_py_end_to_end(ml100k_root, tmp_path):
    output_dir = tmp_path / "out"
    completed = subprocess.run(
        [
            sys.executable,
            str(RUN_PY),
            "--model=AttnRNN",
            "--dataset=ml-100k",
            f"--data_path={ml100k_root}",
            "--epochs=1",
            f"--output_dir={output_dir}",
            "--state=WARNING",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    [results_file] = output_dir.glob("AttnRNN-ml-100k-*.json")
    result = json.loads(results_file.read_text())
    assert result["model"] == "AttnRNN" and result["epochs_run"] == 1
    assert 0 <= result["test"]["ndcg@10"] <= 1
