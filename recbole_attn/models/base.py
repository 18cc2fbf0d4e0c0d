"""The part every plugin model shares: losses, ``predict`` and
``full_sort_predict`` (on top of ``full_sort_scorer``, which scores item
ranges for chunked ranking), written once. A model supplies ``item_embedding``
(the tied output table), ``forward`` (one vector per history, in item-
embedding space) and, if it trains on all positions, ``encode`` (one vector
per position)."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_attn.data.fields import POSITION_SEQ_FIELD, SEGMENT_SEQ_FIELD, TARGET_SEQ_FIELD
from recbole_attn.errors import UsageError, check_choice, check_positive
from recbole_attn.models.linear_ce import linear_cross_entropy
from recbole_attn.models.user_token import UserToken
from recbole_attn.values import as_list

LOSS_TYPES = ("CE", "BPR", "SSM")
NEGATIVE_SAMPLERS = ("uniform", "popularity")
#: Where the package's models keep their default YAML.
MODEL_PROPERTIES_DIR = Path(__file__).resolve().parents[1] / "properties" / "model"


class AttnSequentialRecommender(SequentialRecommender):
    """RecBole ``SequentialRecommender`` with the shared training objective.

    Losses (``loss_type``): ``CE`` full softmax over the catalog (chunked:
    :mod:`~recbole_attn.models.linear_ce`); ``SSM``
    sampled softmax against ``num_negatives`` items drawn once per batch and
    shared by its rows (Jean et al., 2015); ``BPR`` (Rendle et al., 2009)
    with RecBole's negatives in prefix mode, ours in all-positions mode.
    """

    #: The options this class reads (losses, negatives, user token), layered under each subclass's own file.
    properties_file: ClassVar[Path] = MODEL_PROPERTIES_DIR / "AttnSequentialRecommender.yaml"
    #: Whether ``encode`` gives a causal vector per position.
    supports_all_positions: ClassVar[bool] = False
    #: Whether ``encode`` takes packed rows (``positions``, ``segments``: ``pack_windows``).
    supports_packed_windows: ClassVar[bool] = False
    #: Valid values of the model's text options; the config checks them before any data is read.
    option_choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "loss_type": LOSS_TYPES, "negative_sampler": NEGATIVE_SAMPLERS,
    }

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        self.loss_type = config["loss_type"]
        check_choice("loss_type", self.loss_type, LOSS_TYPES)
        self.num_negatives = config["num_negatives"] or 0
        self.negative_sampler = config["negative_sampler"] or "uniform"
        check_choice("negative_sampler", self.negative_sampler, NEGATIVE_SAMPLERS)
        if self.loss_type == "SSM":
            check_positive("num_negatives", self.num_negatives)
        item_counts = torch.zeros(self.n_items)
        if self.negative_sampler == "popularity":
            counts = dataset.item_counter
            item_counts[list(counts)] = torch.tensor(list(counts.values()), dtype=torch.float)
        self.register_buffer("negative_weights", item_counts, persistent=False)
        self._expects_all_positions = config["train_mode"] == "all_positions"
        self.user_features = as_list(config["user_features"])
        self.user_token: UserToken | None = None  # a model that supports user_features builds it

    # -- to be supplied by each model ---------------------------------------
    item_embedding: nn.Embedding
    #: Whether the model takes ``user_features`` (``forward``/``encode``/``attention_weights`` accept ``user``).
    supports_user_features: ClassVar[bool] = False

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """(B, D) representation of each history, D = item embedding size."""
        raise NotImplementedError

    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """(B, L, D) causal representation at every position."""
        raise NotImplementedError(f"{type(self).__name__} does not train on all positions")

    def attention_weights(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """(B, P, L, L) causal attention of P panels (query position by
        attended position), what ``explain`` shows; (B, P, L + 1, L + 1)
        with a user token, which is position 0."""
        raise NotImplementedError(f"{type(self).__name__} exposes no attention weights")

    def attention_panels(self) -> list[list[str]]:
        """Names of the P panels of :meth:`attention_weights`, as a grid of rows."""
        raise NotImplementedError(f"{type(self).__name__} exposes no attention weights")

    # -- shared --------------------------------------------------------------
    def build_user_token(self, dataset: Any, size: int) -> None:
        """The user token of ``user_features`` (nothing when there are none)."""
        if not self.user_features:
            return
        if not self.supports_user_features:
            raise UsageError(f"user_features: {type(self).__name__} does not take user features")
        self.user_token = UserToken(dataset, self.user_features, size)

    def user_input(self, interaction: Any) -> dict[str, Any]:
        """``{"user": features}`` for the model's ``forward``/``encode``: each
        user feature's tokens from the batch (RecBole joins them into its rows;
        a served new user may bring them), else looked up by user id; ``{}``
        without a user token, so models without one keep their signature."""
        if self.user_token is None:
            return {}
        if all(field in interaction for field in self.user_features):
            return {"user": {field: interaction[field] for field in self.user_features}}
        return {"user": self.user_token.tokens_of(interaction[self.USER_ID])}

    def _sample_negatives(self, count: int, device: torch.device) -> torch.Tensor:
        """``count`` item ids (never the padding id 0), drawn on ``device``."""
        if self.negative_sampler == "popularity":
            return torch.multinomial(self.negative_weights, count, replacement=True)
        return torch.randint(1, self.n_items, (count,), device=device)

    def _loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None,
        mask_padding: bool = False,
    ) -> torch.Tensor:
        """Mean loss of representations (N, D) against target ids (N,). With
        ``mask_padding``, rows whose target is 0 (padding) are left out of the
        mean by a mask, so shapes stay static (no host sync to drop them)."""
        table = self.item_embedding.weight
        if self.loss_type == "CE":  # no (N, n_items) logits matrix: see linear_ce
            return linear_cross_entropy(hidden, table, targets, ignore_index=0 if mask_padding else None)
        reduction = "none" if mask_padding else "mean"
        positive = (hidden * table[targets]).sum(-1, keepdim=True)  # (N, 1)
        if self.loss_type == "BPR":
            if negatives is None:
                negatives = self._sample_negatives(targets.numel(), hidden.device)
            negative = (hidden * table[negatives]).sum(-1, keepdim=True)
            per_row = -F.logsigmoid(positive - negative).squeeze(-1)
            loss = per_row if mask_padding else per_row.mean()
        else:
            shared = self._sample_negatives(self.num_negatives, hidden.device)
            negative = hidden @ table[shared].T  # (N, K)
            negative = negative.masked_fill(shared[None, :] == targets[:, None], float("-inf"))
            logits = torch.cat([positive, negative], dim=1)
            loss = F.cross_entropy(logits, torch.zeros_like(targets), reduction=reduction)
        if not mask_padding:
            return loss
        valid = targets > 0
        return (loss * valid).sum() / valid.sum().clamp(min=1)

    def _all_positions_loss(
        self, hidden: torch.Tensor, targets: torch.Tensor, static_shapes: bool | None = None
    ) -> torch.Tensor:
        """Mean loss over the non-padding positions of (B, L, D) / (B, L).
        ``static_shapes`` (default: off on CPU, on elsewhere) masks padding
        instead of indexing it away."""
        if static_shapes is None:
            static_shapes = hidden.device.type != "cpu"
        if static_shapes:  # on accelerators: no host sync to size hidden[valid]
            return self._loss(hidden.flatten(0, 1), targets.flatten(), None, mask_padding=True)
        valid = targets > 0  # boolean indexing: no sync to pay on CPU, no work on padding
        return self._loss(hidden[valid], targets[valid], None)

    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        if TARGET_SEQ_FIELD in interaction:
            targets = interaction[TARGET_SEQ_FIELD]  # (B, L), 0 = no target
            packed = ({"positions": interaction[POSITION_SEQ_FIELD], "segments": interaction[SEGMENT_SEQ_FIELD]}
                      if SEGMENT_SEQ_FIELD in interaction else {})
            hidden = self.encode(item_seq, item_seq_len, **self.user_input(interaction), **packed)
            return self._all_positions_loss(hidden, targets)
        if self._expects_all_positions:  # a trainer that is not AttnTrainer handed RecBole's prefix rows
            warnings.warn(f"{type(self).__name__} is configured with train_mode='all_positions' but is trained on "
                          f"prefix rows: train it with recbole_attn's trainer (recbole.utils.get_trainer after "
                          f"'import recbole_attn', or recbole_attn.run)", stacklevel=2)
            self._expects_all_positions = False  # once
        negatives = interaction[self.NEG_ITEM_ID] if self.NEG_ITEM_ID in interaction else None
        hidden = self.forward(item_seq, item_seq_len, **self.user_input(interaction))
        return self._loss(hidden, interaction[self.POS_ITEM_ID], negatives)

    def predict(self, interaction: Any) -> torch.Tensor:
        """Scores of (history, item) rows. Sampled evaluation (``uni100``)
        repeats each history once per candidate item: each distinct history
        is encoded once, so it costs about what full ranking does (at the
        price of one host sync per batch: the number of distinct histories)."""
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        if self.user_token is not None:  # the same history of two users is two inputs
            hidden = self.forward(item_seq, item_seq_len, **self.user_input(interaction))
            return (hidden * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)
        histories, row_history = torch.unique(item_seq, dim=0, return_inverse=True)
        lengths = torch.zeros(len(histories), dtype=item_seq_len.dtype, device=item_seq_len.device)
        lengths.scatter_(0, row_history, item_seq_len)  # a history's rows share its length
        hidden = self.forward(histories, lengths)[row_history]
        return (hidden * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_scorer(self, interaction: Any) -> Callable[[int, int], torch.Tensor]:
        """``score(start, end)`` -> (B, end - start) scores of the items
        ``[start, end)`` for the batch's histories, encoded once. Chunked
        full-sort ranking (:mod:`recbole_attn.evaluation`) calls it item chunk
        by item chunk, so no (B, n_items) matrix is ever made; a model that
        scores differently overrides this, not :meth:`full_sort_predict`."""
        hidden = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                              **self.user_input(interaction))
        table = self.item_embedding.weight
        return lambda start, end: hidden @ table[start:end].T

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        return self.full_sort_scorer(interaction)(0, self.n_items)  # (B, n_items)
