"""Attention building blocks shared by both model families.

Every softmax-weighted sum in this package goes through :func:`attend`, a thin
wrapper of ``torch.nn.functional.scaled_dot_product_attention`` (fused
flash / memory-efficient kernels on GPU). Its attention weights, when asked
for, come from the same call with the identity matrix as values
(``softmax(q k^T) @ I``): one implementation of the math, not two.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_attn.errors import check_choice


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``softmax(query key^T * scale + mask) value`` over the last two dims.

    query (B, h, Lq, d), key (B, h, Lk, d), value (B, h, Lk, dv);
    key_mask (B, Lk) bool, True where a key may be attended to. With only
    ``causal`` the fused causal kernel runs; with both, one boolean mask.
    Returns the output (B, h, Lq, dv) and, if ``need_weights``, the weights
    (B, h, Lq, Lk), computed without dropout.
    """
    attn_mask = None
    if key_mask is not None:
        attn_mask = key_mask[:, None, None, :]  # (B, 1, 1, Lk)
        if causal:
            lq, lk = query.shape[-2], key.shape[-2]
            attn_mask = attn_mask & torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril()
    is_causal = causal and attn_mask is None
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
    weights = None
    if need_weights:
        lk = key.shape[-2]
        identity = torch.eye(lk, dtype=query.dtype, device=query.device)
        identity = identity.expand(*key.shape[:-2], lk, lk)
        weights = F.scaled_dot_product_attention(
            query, key, identity, attn_mask=attn_mask, is_causal=is_causal, scale=scale
        )
    return out, weights


class AttentionPooling(nn.Module):
    """One query attends over a masked sequence of keys/values: the pooling
    step of the attention-RNN family.

    Scorers (logits over positions, then :func:`attend` does masking,
    softmax and the weighted sum):

    * ``additive`` -- Bahdanau et al., 2015: ``v^T tanh(W_q q + W_k k_i)``
    * ``general`` -- Luong et al., 2015: ``q^T W k_i``
    * ``dot`` -- ``q^T k_i / sqrt(d)``
    * ``linear`` -- self-scoring, no query: ``w^T k_i`` (a bias would be the
      same for every position and cancel in the softmax)
    """

    TYPES = ("additive", "general", "dot", "linear")

    def __init__(self, attention_type: str, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        check_choice("attention_type", attention_type, self.TYPES)
        if attention_type == "dot" and query_size != key_size:
            raise ValueError(f"dot attention needs query_size == key_size, got {query_size} and {key_size}")
        self.attention_type = attention_type
        self.scale = 1.0 / math.sqrt(key_size)
        if attention_type == "additive":
            self.query_proj = nn.Linear(query_size, attention_size, bias=False)
            self.key_proj = nn.Linear(key_size, attention_size)
            self.energy = nn.Linear(attention_size, 1, bias=False)
        elif attention_type == "general":
            self.query_proj = nn.Linear(query_size, key_size, bias=False)
        elif attention_type == "linear":
            self.energy = nn.Linear(key_size, 1, bias=False)

    def attn_scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Unnormalised scores (B, L) of each key for the query (B, Dq)."""
        if self.attention_type == "additive":
            hidden = torch.tanh(self.query_proj(query).unsqueeze(1) + self.key_proj(keys))
            return self.energy(hidden).squeeze(-1)
        if self.attention_type == "linear":
            return self.energy(keys).squeeze(-1)
        if self.attention_type == "general":
            query = self.query_proj(query)
        return torch.einsum("bd,bld->bl", query, keys) * (self.scale if self.attention_type == "dot" else 1.0)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Context (B, Dv) and pooling weights (B, L) (zero on padding)."""
        logits = self.attn_scores(query, keys)  # (B, L)
        # softmax(1 * logit_i) over masked positions, as one SDPA call
        ones = logits.new_ones(logits.shape[0], 1, 1, 1)
        context, weights = attend(
            ones, logits[:, None, :, None], values[:, None], key_mask=mask, scale=1.0, need_weights=need_weights
        )
        pool_weights = weights[:, 0, 0] if weights is not None else None
        return context[:, 0, 0], pool_weights


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused q/k/v projection
    (Vaswani et al., 2017; layout after nanoGPT)."""

    def __init__(self, hidden_size: int, n_heads: int, attn_dropout: float, resid_dropout: float) -> None:
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = attn_dropout
        self.resid_dropout = nn.Dropout(resid_dropout)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, hidden = x.shape
        q, k, v = self.qkv_proj(x).split(hidden, dim=2)
        # (B, L, H) -> (B, nh, L, hs)
        q, k, v = (t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        dropout = self.attn_dropout if self.training else 0.0
        y, weights = attend(q, k, v, causal=True, dropout_p=dropout, need_weights=need_weights)
        y = y.transpose(1, 2).reshape(batch, length, hidden)
        return self.resid_dropout(self.out_proj(y)), weights


class TransformerBlock(nn.Module):
    """Self-attention + position-wise feed-forward, each with a residual and
    LayerNorm; ``norm_first`` (pre-LN, Xiong et al., 2020) trains stably
    without warm-up, post-LN matches SASRec/BERT."""

    def __init__(
        self,
        hidden_size: int,
        n_heads: int,
        inner_size: int,
        dropout: float,
        attn_dropout: float,
        norm_first: bool = True,
        layer_norm_eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attention = CausalSelfAttention(hidden_size, n_heads, attn_dropout, dropout)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden_size, inner_size),
            nn.GELU(),
            nn.Linear(inner_size, hidden_size),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.norm_first:
            attn_out, weights = self.attention(self.attn_norm(x), need_weights)
            x = x + attn_out
            x = x + self.feed_forward(self.ffn_norm(x))
        else:
            attn_out, weights = self.attention(x, need_weights)
            x = self.attn_norm(x + attn_out)
            x = self.ffn_norm(x + self.feed_forward(x))
        return x, weights
