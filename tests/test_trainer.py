"""AttnTrainer: the bf16 path (exercised on CPU, CI has no GPU), the one-sync
epoch loop and the stop on a non-finite loss."""
from __future__ import annotations

import pytest
import torch
from recbole.data import create_dataset, data_preparation

from recbole_attn.config import AttnConfig
from recbole_attn.data import AllPositionsLoader
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


def test_masked_all_positions_loss_equals_indexed_loss(trainer_and_data):
    """The sync-free accelerator formula gives the CPU formula's value."""
    _, loader, model = trainer_and_data
    model.eval()
    batch = next(iter(loader))
    hidden = model.encode(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    targets = batch["target_item_list"]
    indexed = model._all_positions_loss(hidden, targets)
    valid = targets > 0
    per_position = model._loss(hidden.flatten(0, 1), targets.flatten(), None, reduction="none")
    masked = (per_position * valid.flatten()).sum() / valid.sum()
    torch.testing.assert_close(masked, indexed)


def test_nan_loss_stops_with_a_clear_message(trainer_and_data, monkeypatch):
    trainer, loader, model = trainer_and_data
    monkeypatch.setattr(model, "calculate_loss", lambda batch: torch.tensor(float("nan"), requires_grad=True))
    trainer.step_model = model
    with pytest.raises(NonFiniteLossError, match="epoch 3"):
        trainer._train_epoch(loader, 3)
