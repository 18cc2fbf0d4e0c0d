"""RecBole's ``Trainer`` with the training loop this project needs:

* ``train_mode: all_positions`` swaps RecBole's prefix rows for
  :class:`~recbole_attn.data.AllPositionsLoader` (same split, same items);
* the epoch loss accumulates on the device and is read once per epoch, not
  once per batch (RecBole's ``loss.item()`` syncs the GPU every step);
* bf16 autocast on CUDA when ``enable_amp`` (no GradScaler needed for bf16);
  optional ``torch.compile``;
* a non-finite loss stops training with a message naming the epoch and the
  last good checkpoint instead of silently training on NaNs.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from recbole.trainer import Trainer
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_attn.data import AllPositionsLoader
from recbole_attn.errors import UsageError


class NonFiniteLossError(RuntimeError):
    """Training diverged; the best checkpoint so far is left intact."""


class AttnTrainer(Trainer):
    def __init__(self, config: Any, model: Any) -> None:
        super().__init__(config, model)
        self.train_mode = config["train_mode"]
        if self.train_mode == "all_positions" and not getattr(model, "supports_all_positions", False):
            raise UsageError(
                f"train_mode='all_positions' is not available for {type(model).__name__}; use train_mode=prefix"
            )
        self.use_bf16 = bool(config["enable_amp"]) and self.device.type == "cuda"
        self.enable_amp = False  # RecBole's fp16 path stays off; ours is bf16
        self.step_model = torch.compile(model) if config["compile"] else model
        self.train_targets: int | None = None  # supervised items per epoch, for throughput

    def fit(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> Any:
        if self.train_mode == "all_positions" and not isinstance(train_data, AllPositionsLoader):
            train_data = AllPositionsLoader(self.config, train_data)
            self.logger.info(
                f"all_positions: {train_data.num_rows} sequence windows, {train_data.num_targets} targets per epoch"
            )
        self.train_targets = getattr(train_data, "num_targets", len(train_data.dataset))
        return super().fit(train_data, valid_data, **kwargs)

    def _train_epoch(
        self, train_data: Any, epoch_idx: int, loss_func: Any = None, show_progress: bool = False
    ) -> float:
        self.model.train()
        loss_func = loss_func or self.step_model.calculate_loss
        batches = tqdm(train_data, total=len(train_data), ncols=100, desc=f"Train {epoch_idx:>5}") \
            if show_progress else train_data
        total = torch.zeros((), device=self.device)
        for interaction in batches:
            interaction = interaction.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                loss = loss_func(interaction)
            loss.backward()
            if self.clip_grad_norm:
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            total += loss.detach().float()
        epoch_loss = total.item()  # the one host sync of the epoch
        if not math.isfinite(epoch_loss):
            raise NonFiniteLossError(
                f"training loss is {epoch_loss} in epoch {epoch_idx}; stopped. "
                f"The best checkpoint so far is intact: {self.saved_model_file}"
            )
        return epoch_loss
