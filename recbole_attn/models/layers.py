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


def zero_padding_row(embedding: nn.Embedding) -> None:
    """Zero the padding row after a weight initialisation overwrote it: it
    gets no gradient, so a random row would stay in every sum over a field's
    tokens (padded token_seq slots, a user's unknown field) for good."""
    if embedding.padding_idx is not None:
        with torch.no_grad():
            embedding.weight[embedding.padding_idx].zero_()


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    bias: torch.Tensor | None = None,
    causal_offset: int = 0,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``softmax(query key^T * scale + bias + mask) value`` over the last two dims.

    query (B, h, Lq, d), key (B, h, Lk, d), value (B, h, Lk, dv);
    key_mask (B, Lk) bool, True where a key may be attended to; ``bias``
    float logits broadcastable to (B, h, Lq, Lk), added to the scores;
    ``mask`` bool broadcastable to (B, h, Lq, Lk), True where a query may
    look (e.g. inside its own window of a packed row). A
    scorer that is not a dot product (additive, linear) passes its logits as
    ``bias`` with zero-width query/key: SDPA adds them as a float mask and
    differentiates through it, so every scorer shares this one softmax.
    With only ``causal`` the fused causal kernel runs; otherwise causal,
    key mask and bias become one mask (SDPA refuses ``attn_mask`` together
    with ``is_causal``). ``causal_offset``: query i may see keys up to
    i + offset (keys that precede the queries' sequence, e.g. a user token).
    Returns the output (B, h, Lq, dv) and, if ``need_weights``, the weights
    (B, h, Lq, Lk), computed without dropout.
    """
    allowed = mask  # bool, broadcastable to (B, h, Lq, Lk): where attention may look
    if key_mask is not None:
        allowed = key_mask[:, None, None, :] if allowed is None else allowed & key_mask[:, None, None, :]
    if causal and (allowed is not None or bias is not None or causal_offset):
        lq, lk = query.shape[-2], key.shape[-2]
        tril = torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril(diagonal=causal_offset)
        allowed = tril if allowed is None else allowed & tril
    if bias is None:
        attn_mask = allowed
    elif allowed is None:
        attn_mask = bias
    else:
        attn_mask = torch.where(allowed, bias, float("-inf"))
    is_causal = causal and attn_mask is None
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
    weights = None
    if need_weights:
        lk = key.shape[-2]
        identity = torch.eye(lk, dtype=value.dtype, device=value.device)
        identity = identity.expand(*value.shape[:-2], lk, lk)
        weights = F.scaled_dot_product_attention(
            query, key, identity, attn_mask=attn_mask, is_causal=is_causal, scale=scale
        )
    return out, weights


class AttentionPooling(nn.Module):
    """Queries attend over a sequence of keys/values: the pooling step of the
    attention-RNN family. One query per history (the last RNN state) pools
    the whole masked history; with ``causal`` the RNN state at every position
    is a query that sees only keys at positions <= its own, which gives all
    positions' pooled vectors in one call (all-positions training).

    Scorers (logits of query i for key j; :func:`attend` does the masking,
    softmax and weighted sum for all of them):

    * ``additive`` -- Bahdanau et al., 2015: ``v^T tanh(W_q q_i + W_k k_j)``.
      Not a dot product, so the (B, Lq, Lk, attention_size) tanh tensor is
      materialised: with Lq = Lk = L (all positions) that is L times the
      one-query memory
    * ``general`` -- Luong et al., 2015: ``q_i^T W k_j`` (SDPA on ``W q``)
    * ``dot`` -- ``q_i^T k_j / sqrt(d)`` (plain SDPA)
    * ``linear`` -- self-scoring, no query: ``w^T k_j`` (a bias would be the
      same for every position and cancel in the softmax)
    * ``self_additive`` -- self-scoring through a tanh layer, no query:
      ``v^T tanh(W k_j + b)`` (the learned pooling over Transformer outputs
      of Lin et al., ICLR 2017, "softmax(W2 tanh(W1 H))")
    """

    TYPES = ("additive", "general", "dot", "linear", "self_additive")

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
            self.energy: nn.Module = nn.Linear(attention_size, 1, bias=False)
        elif attention_type == "general":
            self.query_proj = nn.Linear(query_size, key_size, bias=False)
        elif attention_type == "linear":
            self.energy = nn.Linear(key_size, 1, bias=False)
        elif attention_type == "self_additive":
            self.energy = nn.Sequential(nn.Linear(key_size, attention_size), nn.Tanh(),
                                        nn.Linear(attention_size, 1, bias=False))

    def sdpa_inputs(
        self, query: torch.Tensor, keys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]:
        """What :func:`attend` needs to score queries (B, Lq, Dq) against keys
        (B, Lk, Dk): (B, 1, Lq, d) query, (B, 1, Lk, d) key, scale and the
        float logits (broadcastable to (B, 1, Lq, Lk)) of non-dot scorers."""
        if self.attention_type in ("general", "dot"):
            if self.attention_type == "general":
                query = self.query_proj(query)
            scale = self.scale if self.attention_type == "dot" else 1.0
            return query[:, None], keys[:, None], scale, None
        if self.attention_type == "additive":
            # (B, Lq, 1, A) + (B, 1, Lk, A) -> (B, Lq, Lk, A) -> (B, 1, Lq, Lk)
            energy = torch.tanh(self.query_proj(query)[:, :, None] + self.key_proj(keys)[:, None])
            logits = self.energy(energy).squeeze(-1)[:, None]
        else:  # linear, self_additive: one logit per key, the same for every query
            logits = self.energy(keys).squeeze(-1)[:, None, None]  # (B, 1, 1, Lk)
        # zero-width query/key: their dot products are 0, so the scores are the logits alone
        no_query = query.new_zeros(query.shape[0], 1, query.shape[1], 0)  # (B, 1, Lq, 0)
        no_key = keys.new_zeros(keys.shape[0], 1, keys.shape[1], 0)  # (B, 1, Lk, 0)
        return no_query, no_key, 1.0, logits

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        causal_offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Contexts (B, Lq, Dv) of queries (B, Lq, Dq) over keys (B, Lk, Dk)
        and values (B, Lk, Dv), and, with ``need_weights``, the pooling
        weights (B, Lq, Lk): zero where ``key_mask`` (B, Lk) is False and,
        with ``causal``, on keys after the query's position (+ ``causal_offset``)."""
        q, k, scale, logits = self.sdpa_inputs(query, keys)
        context, weights = attend(
            q, k, values[:, None], key_mask=key_mask, causal=causal, scale=scale, need_weights=need_weights,
            bias=logits, causal_offset=causal_offset,
        )
        return context[:, 0], weights[:, 0] if weights is not None else None


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

    def forward(
        self, x: torch.Tensor, need_weights: bool = False, query_index: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, L, H) -> (B, L, H), each position over itself and earlier ones.
        ``query_index`` (B,): only that position's output, (B, 1, H), over
        keys up to it -- what inference needs from the last layer. ``mask``
        (B, 1, L, L) bool narrows what each position sees further (packed
        windows: its own window)."""
        batch, length, hidden = x.shape
        q, k, v = self.qkv_proj(x).split(hidden, dim=2)
        key_mask = None
        if query_index is not None:
            q = select_positions(q, query_index)
            key_mask = torch.arange(length, device=x.device)[None, :] <= query_index[:, None]
        # (B, L, H) -> (B, nh, L, hs)
        q, k, v = (t.view(batch, t.shape[1], self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        dropout = self.attn_dropout if self.training else 0.0
        y, weights = attend(q, k, v, key_mask=key_mask, causal=query_index is None, dropout_p=dropout,
                            need_weights=need_weights, mask=mask)
        y = y.transpose(1, 2).reshape(batch, q.shape[2], hidden)
        return self.resid_dropout(self.out_proj(y)), weights


def same_window_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool of a packed row's segment ids (B, L): True where
    query and key belong to one window."""
    return (segments[:, :, None] == segments[:, None, :])[:, None]


def select_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, L, H) at one position per row, (B,) -> (B, 1, H)."""
    return x.gather(1, index[:, None, None].expand(-1, 1, x.shape[-1]))  # no batch-size constant (ONNX)


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

    def forward(
        self, x: torch.Tensor, need_weights: bool = False, query_index: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``query_index`` (B,): compute only that position, (B, 1, H); ``mask``:
        what each position may see besides causality (see
        :class:`CausalSelfAttention`); the block's other work is per position."""
        residual = x if query_index is None else select_positions(x, query_index)
        if self.norm_first:
            attn_out, weights = self.attention(self.attn_norm(x), need_weights, query_index, mask)
            x = residual + attn_out
            x = x + self.feed_forward(self.ffn_norm(x))
        else:
            attn_out, weights = self.attention(x, need_weights, query_index, mask)
            x = self.attn_norm(residual + attn_out)
            x = self.ffn_norm(x + self.feed_forward(x))
        return x, weights


class FieldTokenEmbedding(nn.Module):
    """Tokens of some fields per entity (an item's genres, a user's age and
    occupation), embedded as the sum over fields of the mean embedding of
    each field's tokens. Token 0 means "no value" and is left out of the
    mean; the item features and the user token share this layer."""

    def __init__(self, tokens: dict[str, torch.Tensor], vocab_sizes: dict[str, int], size: int) -> None:
        super().__init__()
        self.fields = list(tokens)
        self.embeddings = nn.ModuleDict()
        for field, table in tokens.items():
            table = table[:, None] if table.dim() == 1 else table  # (n_entities, T)
            self.register_buffer(f"tokens_{field}", table.long(), persistent=False)
            self.embeddings[field] = nn.Embedding(vocab_sizes[field], size, padding_idx=0)

    def tokens_of(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each field's tokens ``(*ids.shape, T)`` of the entities ``ids``."""
        return {field: getattr(self, f"tokens_{field}")[ids] for field in self.fields}

    def pooled(self, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., size)`` sum over fields of the mean embedding of the tokens
        ``(..., T)``, and ``(..., 1)`` whether any field had a token."""
        total: torch.Tensor | None = None
        known: torch.Tensor | None = None
        for field in self.fields:
            present = (tokens[field] > 0).sum(-1, keepdim=True)
            vector = self.embeddings[field](tokens[field]).sum(-2) / present.clamp(min=1)
            total = vector if total is None else total + vector
            known = present > 0 if known is None else known | (present > 0)
        assert total is not None and known is not None, "FieldTokenEmbedding needs at least one field"
        return total, known
