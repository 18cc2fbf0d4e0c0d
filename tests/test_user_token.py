"""user_features: the user as token 0 of AttnSeq and key 0 of AttnRNN's
pooling; causal, padding-proof, exact in all-positions windows."""
from __future__ import annotations

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction

from recbole_attn import registry
from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import AllPositionsLoader
from recbole_attn.errors import UsageError
from recbole_attn.data.fields import TARGET_SEQ_FIELD

FEATURES = ["age", "gender", "occupation"]
L = 10


def build(root, model_name, **options):
    config = AttnConfig(model_name, "ml-100k", config_dict={
        "data_path": str(root), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": L, "user_features": FEATURES,
        **options})
    dataset = create_dataset(config)
    train = data_preparation(config, dataset)[0]
    torch.manual_seed(0)
    return config, registry.get_model_class(model_name)(config, train.dataset).eval(), train


@pytest.fixture(scope="module", params=["AttnSeq", "AttnRNN"])
def built(request, ml100k_root):
    return build(ml100k_root, request.param)


def batch_of(model, users=(1, 2, 3, 4), lengths=(1, 4, 7, L)):
    torch.manual_seed(1)
    seq = torch.randint(1, model.n_items, (len(users), L))
    length = torch.tensor(lengths)
    seq[torch.arange(L)[None, :] >= length[:, None]] = 0
    user = model.user_token.tokens_of(torch.tensor(users))
    return seq, length, user


def test_features_are_loaded_and_embedded(built, ml100k_root):
    config, model, _ = built
    assert config["load_col"]["user"] == ["user_id", *FEATURES]  # loaded because they were named
    assert list(model.user_token.embeddings) == FEATURES
    lines = (ml100k_root / "ml-100k" / "ml-100k.user").read_text().splitlines()[1:]
    occupations = {line.split("\t")[3] for line in lines}
    assert model.user_token.embeddings["occupation"].num_embeddings == 1 + len(occupations)  # + padding


@pytest.mark.parametrize("load_col", [None, {"inter": ["user_id", "item_id", "timestamp"], "user": "*"}])
def test_a_load_col_that_loads_everything_is_kept(ml100k_root, load_col):
    """None loads every file and "*" every user column: adding the named
    features to either would drop the rest (None would lose the .inter file)."""
    config, model, train = build(ml100k_root, "AttnSeq", load_col=load_col)
    assert config["load_col"] == load_col and list(model.user_token.embeddings) == FEATURES
    assert train.dataset.inter_num > 0


def test_no_future_leakage_with_the_user_token(built):
    _, model, _ = built
    seq, length, user = batch_of(model, lengths=(L, L, L, L))
    out = model.encode(seq, length, user=user)
    for t in range(L - 1):
        changed = seq.clone()
        changed[:, t + 1] = changed[:, t + 1] % (model.n_items - 1) + 1
        torch.testing.assert_close(model.encode(changed, length, user=user)[:, : t + 1], out[:, : t + 1])


def test_every_position_sees_the_user_and_padding_stays_out(built):
    _, model, _ = built
    seq, length, user = batch_of(model)
    other = {field: tokens.roll(1, dims=0) for field, tokens in user.items()}  # the users swap features
    assert not torch.allclose(model.encode(seq, length, user=user)[:, 0], model.encode(seq, length, user=other)[:, 0])
    garbage = seq.clone()
    pad = torch.arange(L)[None, :] >= length[:, None]
    garbage[pad] = torch.randint(1, model.n_items, (int(pad.sum()),))
    torch.testing.assert_close(model(garbage, length, user=user), model(seq, length, user=user))
    # forward is encode at the last valid position
    full = model.encode(seq, length, user=user)[torch.arange(4), length - 1]
    torch.testing.assert_close(model(seq, length, user=user), full, rtol=1e-5, atol=1e-6)


def test_unknown_users_get_the_learned_unknown_vector(built):
    _, model, _ = built
    seq, length, _ = batch_of(model)
    nobody = model.user_token.tokens_of(torch.zeros(4, dtype=torch.long))  # id 0: no features
    torch.testing.assert_close(model(seq, length, user=nobody), model(seq, length))
    with torch.no_grad():
        model.user_token.unknown.add_(1.0)
    try:
        assert not torch.allclose(model(seq, length, user=nobody), model(seq, length, user=batch_of(model)[2]))
    finally:
        with torch.no_grad():
            model.user_token.unknown.sub_(1.0)


def test_a_missing_field_adds_nothing(built):
    """A user with one field unknown (token 0) gets exactly the sum of the
    fields that are known: padding rows embed to zero after initialisation."""
    _, model, _ = built
    user = model.user_token.tokens_of(torch.tensor([1, 2]))
    partial = {**user, "occupation": torch.zeros_like(user["occupation"])}
    embeddings = model.user_token.embeddings
    expected = embeddings["age"](user["age"]).sum(-2) + embeddings["gender"](user["gender"]).sum(-2)
    torch.testing.assert_close(model.user_token(partial, 2), expected)
    assert all(not table.weight[0].any() for table in embeddings.values())


def test_weights_show_the_user_first(built):
    _, model, _ = built
    seq, length, user = batch_of(model)
    weights = model.attention_weights(seq, length, user=user)
    assert weights.shape[-2:] == (L + 1, L + 1)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert torch.all(weights.triu(diagonal=1) == 0)
    assert weights[:, :, 1:, 0].min() > 0  # every item position attends to the user


@pytest.mark.parametrize("model_name", ["AttnSeq", "AttnRNN"])
def test_all_positions_windows_stay_exact(ml100k_root, model_name):
    """Cutting a batch to its longest window changes no loss with the user
    token in front, and the loss reads each window's own user."""
    config, model, train = build(ml100k_root, model_name, MAX_ITEM_LIST_LENGTH=40, train_batch_size=16)
    batch = next(iter(AllPositionsLoader(config, train)))
    width = batch["item_id_list"].shape[1]
    padded = Interaction(dict(batch.interaction))
    for field in ("item_id_list", TARGET_SEQ_FIELD):
        padded[field] = torch.nn.functional.pad(batch[field], (0, 40 - width))
    with torch.no_grad():
        loss = model.calculate_loss(batch)
        torch.testing.assert_close(loss, model.calculate_loss(padded))
        shuffled = Interaction(dict(batch.interaction))
        shuffled["user_id"] = batch["user_id"].flip(0)
        assert not torch.allclose(loss, model.calculate_loss(shuffled))


@pytest.mark.parametrize("options, message", [
    ({"user_features": ["salary"]}, "user_features: 'salary' is not a user feature of ml-100k; valid choices: "),
    ({"user_features": [3]}, "user_features must be a list of field names"),
    ({"attention_type": "none"}, "attention_type 'none' has no pooling"),
])
def test_bad_user_features_say_why(ml100k_root, options, message):
    with pytest.raises(UsageError, match=message):
        build(ml100k_root, "AttnRNN", **options)
