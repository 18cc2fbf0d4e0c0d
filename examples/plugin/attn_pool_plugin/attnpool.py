"""AttnPool: item and position embeddings, one causal multi-head attention
layer, a LayerNorm; the user vector at each position is scored against the
tied item table.

Reference: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018
(this is its one-block, attention-only core).
Note: written on ``recbole_attn.models.base.AttnSequentialRecommender``, which
supplies the CE/SSM/BPR losses, ``predict``, ``full_sort_predict`` and
all-positions training; the model supplies ``encode`` and ``forward``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from recbole_attn.models.base import AttnSequentialRecommender
from recbole_attn.models.layers import CausalSelfAttention


class AttnPool(AttnSequentialRecommender):
    properties_file = Path(__file__).with_name("AttnPool.yaml")
    supports_all_positions = True

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        hidden, dropout = config["hidden_size"], config["dropout_prob"]
        self.n_heads = config["n_heads"]
        self.item_embedding = nn.Embedding(self.n_items, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, hidden)
        self.dropout = nn.Dropout(dropout)
        self.attention = CausalSelfAttention(hidden, self.n_heads, attn_dropout=dropout, resid_dropout=dropout)
        self.norm = nn.LayerNorm(hidden)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _embed(self, item_seq: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        return self.dropout(self.item_embedding(item_seq) + self.position_embedding(positions))

    def _attend(self, item_seq: torch.Tensor, need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._embed(item_seq)
        attended, weights = self.attention(x, need_weights)
        return self.norm(x + attended), weights

    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """(B, L, H): position t sees items <= t (causal attention)."""
        return self._attend(item_seq, need_weights=False)[0]

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """(B, H): the vector at the last valid position."""
        return self.gather_indexes(self.encode(item_seq, item_seq_len), item_seq_len - 1)

    def attention_weights(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        weights = self._attend(item_seq, need_weights=True)[1]
        assert weights is not None
        return weights  # (B, heads, L, L)

    def attention_panels(self) -> list[list[str]]:
        return [[f"head {head + 1}" for head in range(self.n_heads)]]
