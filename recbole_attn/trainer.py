"""RecBole's ``Trainer`` with the training loop this project needs:

* ``train_mode: all_positions`` swaps RecBole's prefix rows for
  :class:`~recbole_attn.data.rows.AllPositionsLoader` (same split, same items);
* the epoch loss accumulates on the device and is read every
  ``NONFINITE_CHECK_STEPS`` steps and at the epoch's end, not after every
  batch (RecBole's ``loss.item()`` syncs the GPU every step); with several
  processes only at the epoch's end, where all of them stop together;
* bf16 autocast on CUDA when ``enable_amp`` (no GradScaler needed for bf16);
  optional ``torch.compile``;
* a non-finite loss stops training with a message naming the epoch and the
  last good checkpoint instead of silently training on NaNs;
* full-sort evaluation ranks the catalog in item chunks
  (``eval_item_chunk_size``, :mod:`recbole_attn.evaluation`): bounded memory
  for any catalog size, the same metrics as RecBole's full score matrix.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from recbole.trainer import Trainer
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_attn import distributed
from recbole_attn.config import check_model_support
from recbole_attn.data.rows import AllPositionsLoader
from recbole_attn.errors import RunFailed
from recbole_attn.evaluation import (
    CHUNK_SIZE_KEY,
    TopKCollector,
    chunked_topk,
    item_scorer,
    metrics_needing_full_scores,
    resolve_chunk_size,
)


#: Steps between two checks of the running loss: each check reads it back
#: from the device, so a diverged run stops within this many steps without
#: a host sync per step.
NONFINITE_CHECK_STEPS = 16


class NonFiniteLossError(RunFailed):
    """Training diverged; the best checkpoint so far is left intact."""


class AttnTrainer(Trainer):
    def __init__(self, config: Any, model: Any) -> None:
        super().__init__(config, model)
        check_model_support(config.final_config_dict, type(model))  # also for configs not built by AttnConfig
        self.train_mode = config["train_mode"]
        self.use_bf16 = bool(config["enable_amp"]) and self.device.type == "cuda"
        self.enable_amp = False  # RecBole's fp16 path stays off; ours is bf16
        # compile the training step itself: torch.compile(model) would only wrap forward(), and
        # calculate_loss reached through the wrapper would still run eagerly
        self.train_loss = torch.compile(model.calculate_loss) if config["compile"] else model.calculate_loss
        self.train_targets: int | None = None  # supervised items per epoch, for throughput
        self._init_chunked_eval(config)

    def _build_optimizer(self, **kwargs: Any) -> torch.optim.Optimizer:
        """RecBole's optimizer, but Adam and AdamW run fused (one kernel per
        step over every parameter, not a handful of passes per tensor): the
        same update to float rounding. All-positions training takes many
        small steps, so the optimizer is a large share of each one on a CPU."""
        learner = str(kwargs.get("learner", self.learner)).lower()
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
        params = list(kwargs.pop("params", self.model.parameters()))
        fusable = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
        if learner not in optimizers or not fusable or not params:
            return super()._build_optimizer(params=params, **kwargs)
        weight_decay = kwargs.get("weight_decay", self.weight_decay)
        if weight_decay and self.config["reg_weight"]:  # RecBole's own warning, kept for plugin models
            self.logger.warning("The parameters [weight_decay] and [reg_weight] are specified simultaneously, "
                                "which may lead to double regularization.")
        return optimizers[learner](params, lr=kwargs.get("learning_rate", self.learning_rate),
                                   weight_decay=weight_decay, fused=True)

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
        loss_func = loss_func or self.train_loss
        batches = tqdm(train_data, total=len(train_data), ncols=100, desc=f"Train {epoch_idx:>5}") \
            if show_progress else train_data
        parallel = not self.config["single_spec"]
        distributed.set_epoch(train_data, epoch_idx)
        total = torch.zeros((), device=self.device)
        for step, interaction in enumerate(batches, start=1):
            interaction = interaction.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            sync_loss = 0
            if parallel:  # RecBole's DDP recipe: arm the all-reduce, touch every parameter
                self.set_reduce_hook()
                sync_loss = self.sync_grad_loss()
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                loss = loss_func(interaction)
            (loss + sync_loss).backward()
            if self.clip_grad_norm:
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            total += loss.detach().float()
            if step % NONFINITE_CHECK_STEPS == 0 and not parallel:
                self._stop_if_nonfinite(total.item(), epoch_idx, step)
        epoch_loss = distributed.mean_over_ranks(total).item()  # every process stops at the same step
        self._stop_if_nonfinite(epoch_loss, epoch_idx, None)
        return epoch_loss

    def _stop_if_nonfinite(self, loss: float, epoch_idx: int, step: int | None) -> None:
        if not math.isfinite(loss):
            where = f"epoch {epoch_idx}" + (f" by step {step}" if step is not None else "")
            raise NonFiniteLossError(
                f"training loss is {loss} in {where}; stopped. "
                f"The best checkpoint so far is intact: {self.saved_model_file}"
            )

    # -- evaluation ------------------------------------------------------------
    def _init_chunked_eval(self, config: Any) -> None:
        """Choose between chunked top-k and RecBole's full score matrix once:
        metrics that read more than the top-k (GAUC, AUC, ...) need the latter."""
        self.eval_item_chunk_size = resolve_chunk_size(config[CHUNK_SIZE_KEY], config["eval_batch_size"])
        self.eval_collector = TopKCollector(config)
        self.eval_topk = max(config["topk"] or [1])
        full = metrics_needing_full_scores(config["metrics"] or [])
        if self.eval_item_chunk_size and full:
            self.logger.info(
                f"{CHUNK_SIZE_KEY}: metrics {full} need every item's score; full-sort evaluation uses "
                f"RecBole's (users x items) score matrix instead of item chunks"
            )
            self.eval_item_chunk_size = None

    def _full_sort_batch_eval(self, batched_data: Any) -> tuple[Any, Any, Any, Any]:
        """RecBole's batch step, but the scores are ranked in item chunks and
        only the top-k travels on (:class:`~recbole_attn.evaluation.TopK`)."""
        if not self.eval_item_chunk_size:
            return super()._full_sort_batch_eval(batched_data)
        interaction, history_index, positive_u, positive_i = batched_data
        try:
            scorer = item_scorer(self.model, interaction.to(self.device), self.tot_item_num)
        except NotImplementedError:  # no full-sort scores at all: RecBole's per-item predict path
            return super()._full_sort_batch_eval(batched_data)
        top = chunked_topk(scorer, self.tot_item_num, self.eval_topk, self.eval_item_chunk_size, history_index)
        return interaction, top, positive_u, positive_i
