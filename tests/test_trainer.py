"""AttnTrainer: the bf16 path (exercised on CPU, CI has no GPU), the one-sync
epoch loop and the stop on a non-finite loss."""
from __future__ import annotations

import pytest
import torch
from recbole.data import create_dataset, data_preparation

from recbole_attn.config import AttnConfig
from recbole_attn.data.rows import AllPositionsLoader
from recbole_attn.errors import UsageError
from recbole_attn.models.attnseq import AttnSeq
from recbole_attn.trainer import AttnTrainer, NonFiniteLossError
from tests.conftest import FAST


@pytest.fixture()
def trainer_and_data(pattern_root):
    config = AttnConfig("AttnSeq", "pattern", config_dict={**FAST, "data_path": str(pattern_root)})
    train, _, _ = data_preparation(config, create_dataset(config))
    model = AttnSeq(config, train.dataset)
    return AttnTrainer(config, model), AllPositionsLoader(config, train), model


def test_bf16_autocast_path_trains(trainer_and_data):
    trainer, loader, model = trainer_and_data
    trainer.use_bf16 = True  # what enable_amp gives on CUDA; autocast runs on CPU as well
    before = model.item_embedding.weight.detach().clone()
    loss = trainer._train_epoch(loader, 0)
    assert loss > 0 and not torch.equal(before, model.item_embedding.weight)


@pytest.mark.parametrize("loss_type", ["CE", "SSM", "BPR"])
def test_masked_all_positions_loss_equals_indexed_loss(trainer_and_data, loss_type):
    """The sync-free accelerator branch (padding masked, shapes static) gives
    the CPU branch's loss and gradients, for every loss."""
    _, loader, model = trainer_and_data
    model.eval()
    model.loss_type = loss_type
    if loss_type == "BPR":  # one negative per row: the branches have different row counts, so fix the draw
        model.negative_sampler = "popularity"
        model.negative_weights = torch.zeros_like(model.negative_weights).index_fill_(0, torch.tensor([2]), 1.0)
    batch = next(iter(loader))
    for field in (model.ITEM_SEQ, "target_item_list"):  # the loader cuts padding away: put some back
        batch[field] = torch.nn.functional.pad(batch[field], (0, 3))
    targets = batch["target_item_list"]
    assert (targets == 0).any()  # the batch has padding to ignore
    results = []
    for static_shapes in (False, True):
        model.zero_grad()
        torch.manual_seed(0)  # SSM: both branches draw the same shared negatives
        hidden = model.encode(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        loss = model._all_positions_loss(hidden, targets, static_shapes=static_shapes)
        loss.backward()
        results.append((loss.detach(), model.item_embedding.weight.grad.clone()))
    (indexed, indexed_grad), (masked, masked_grad) = results
    torch.testing.assert_close(masked, indexed)
    torch.testing.assert_close(masked_grad, indexed_grad)


def test_nan_loss_stops_with_a_clear_message(trainer_and_data):
    trainer, loader, model = trainer_and_data
    with pytest.raises(NonFiniteLossError, match="epoch 3"):
        trainer._train_epoch(loader, 3, loss_func=lambda batch: model.calculate_loss(batch) * float("nan"))


@pytest.mark.slow
def test_compiled_training_step_gives_the_eager_loss_and_trains(pattern_root):
    """``compile: True`` runs the training loss through ``torch.compile``
    (inductor, also on CPU): dynamo really captures graphs of it, the loss
    equals eager on the same batch, and an epoch updates the weights."""
    from torch._dynamo.utils import counters

    no_dropout = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}  # eager and compiled: the same function
    config = AttnConfig("AttnSeq", "pattern", config_dict={
        **FAST, **no_dropout, "data_path": str(pattern_root), "compile": True, "train_batch_size": 300})
    train, _, _ = data_preparation(config, create_dataset(config))
    model = AttnSeq(config, train.dataset)
    trainer, loader = AttnTrainer(config, model), AllPositionsLoader(config, train)
    batch = next(iter(loader))
    graphs_before = counters["stats"]["unique_graphs"]
    torch.testing.assert_close(trainer.train_loss(batch), model.calculate_loss(batch), rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] > graphs_before
    before = model.item_embedding.weight.detach().clone()
    assert trainer._train_epoch(loader, 0) > 0
    assert not torch.equal(before, model.item_embedding.weight)


@pytest.mark.parametrize("learner, fused_class", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                                  ("sgd", None)])
def test_adam_runs_fused_with_the_plain_update(pattern_root, learner, fused_class):
    """Adam and AdamW are built fused; one step moves the weights as the
    plain (per-tensor) optimizer does, to float rounding. Others stay RecBole's."""
    config = AttnConfig("AttnSeq", "pattern", config_dict={**FAST, "data_path": str(pattern_root),
                                                           "learner": learner, "weight_decay": 0.01})
    train, _, _ = data_preparation(config, create_dataset(config))
    torch.manual_seed(0)
    model = AttnSeq(config, train.dataset)
    trainer = AttnTrainer(config, model)
    if fused_class is None:
        assert not trainer.optimizer.defaults.get("fused")
        return
    assert type(trainer.optimizer) is fused_class and trainer.optimizer.defaults["fused"]
    twin = AttnSeq(config, train.dataset)
    twin.load_state_dict(model.state_dict())
    plain = fused_class(twin.parameters(), lr=config["learning_rate"], weight_decay=0.01)
    batch = next(iter(AllPositionsLoader(config, train)))
    for net, optimizer in ((model, trainer.optimizer), (twin, plain)):
        optimizer.zero_grad()
        net.eval()  # no dropout: both see the same forward
        net.calculate_loss(batch).backward()
        optimizer.step()
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reg_weight, warned", [(0.1, True), (0.0, False)])
def test_fused_adam_keeps_the_double_regularisation_warning(pattern_root, caplog, reg_weight, warned):
    """RecBole warns when ``weight_decay`` and a model's ``reg_weight`` both
    regularise; the fused path must keep that warning for plugin models."""
    config = AttnConfig("AttnSeq", "pattern", config_dict={**FAST, "data_path": str(pattern_root),
                                                           "weight_decay": 0.01, "reg_weight": reg_weight})
    train, _, _ = data_preparation(config, create_dataset(config))
    caplog.clear()
    with caplog.at_level("WARNING"):
        trainer = AttnTrainer(config, AttnSeq(config, train.dataset))
    assert trainer.optimizer.defaults["fused"]
    assert ("double regularization" in caplog.text) is warned


def test_the_trainer_refuses_all_positions_for_a_model_without_them(pattern_root):
    """A config changed after its checks (or not built by AttnConfig) still
    meets the same refusal in the trainer, not a silent prefix-row run."""
    from recbole.model.sequential_recommender import SASRec

    config = AttnConfig("SASRec", "pattern", config_dict={**FAST, "data_path": str(pattern_root)})
    train, _, _ = data_preparation(config, create_dataset(config))
    model = SASRec(config, train.dataset)
    config["train_mode"] = "all_positions"
    with pytest.raises(UsageError, match="train_mode: all_positions is not available for SASRec"):
        AttnTrainer(config, model)
