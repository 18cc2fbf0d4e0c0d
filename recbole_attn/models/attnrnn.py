"""AttnRNN: a GRU/LSTM over the history, pooled by attention, fused with the
last hidden state.

Reference:
    Dzmitry Bahdanau, Kyunghyun Cho and Yoshua Bengio. "Neural Machine
    Translation by Jointly Learning to Align and Translate." ICLR 2015
    (``additive`` attention).
    Minh-Thang Luong, Hieu Pham and Christopher D. Manning. "Effective
    Approaches to Attention-based Neural Machine Translation." EMNLP 2015
    (``general``, ``dot`` and location-based ``linear`` scoring).
    Jing Li et al. "Neural Attentive Session-based Recommendation." CIKM 2017
    (NARM: attention over GRU states with the last state as query, the
    context concatenated with that state, a bilinear decoder).
    Balazs Hidasi et al. "Session-based Recommendations with Recurrent Neural
    Networks." ICLR 2016 (GRU4Rec: ``attention_type: none``).

Note:
    Pipeline: item embeddings -> dropout -> GRU/LSTM -> attention of the last valid state (the query) over the
    history (RNN states, or the raw item embeddings with ``attend_over:
    embedding``) -> ``fusion``: concat(context, query) -> linear (NARM), or
    the context alone -> scores against the tied item table.

    Unlike RecBole's NARM, attention weights are a softmax over the valid
    positions (exactly zero on padding), not unnormalised sigmoid gates, and
    the scorer is selectable. Unlike RecBole's GRU4Rec and NARM, every RNN
    layer is initialised, not only layer 0.

    The RNN runs over the right-padded batch unpacked: a forward RNN's state
    at a valid position has read no padding, the query is gathered at the
    last valid position and attention masks padding out, so padding never
    changes the output. ``pack_padded_sequence`` would give the same states
    through a per-step path that loses the fused kernel (``docs/attnrnn.md``),
    for little saved work when most histories fill the window.

    ``train_mode: all_positions`` (``supports_all_positions``): one RNN pass
    gives the state at every position, each state queries the positions up
    to its own (a causal mask), and the loss is taken at every position, as
    GRU4Rec trains with a loss at every step of a session. ``encode`` at
    position t equals ``forward`` on the prefix ending at t, so the two modes
    train the same function; all positions just encodes a history once
    instead of once per prefix. The ``additive`` scorer then builds a
    (B, L, L, attention_size) tensor (``layers.AttentionPooling``), which the
    default batch of windows keeps small.

    Symbols of NARM's paper map to
    names here: ``A_1``/``A_2``/``v`` -> ``AttentionPooling.key_proj``/
    ``query_proj``/``energy``; ``B`` -> ``output_proj``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recbole_attn.errors import UsageError, check_choice, check_positive, check_probability
from recbole_attn.models.base import MODEL_PROPERTIES_DIR, AttnSequentialRecommender
from recbole_attn.models.layers import AttentionPooling, zero_padding_row

RNN_TYPES = {"gru": nn.GRU, "lstm": nn.LSTM}
ATTENTION_TYPES = (*AttentionPooling.TYPES, "none")
ATTEND_OVER = ("hidden", "embedding")
FUSIONS = ("concat", "context")


class AttnRNN(AttnSequentialRecommender):
    """Recurrent encoder + attention pooling; the user vector is scored
    against the (tied) item embedding table."""

    properties_file = MODEL_PROPERTIES_DIR / "AttnRNN.yaml"
    supports_all_positions = True
    supports_user_features = True
    option_choices = {
        **AttnSequentialRecommender.option_choices,
        "rnn_type": tuple(RNN_TYPES), "attention_type": ATTENTION_TYPES, "attend_over": ATTEND_OVER,
        "fusion": FUSIONS,
    }

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        # read and validate parameters
        self.embedding_size = config["embedding_size"]
        self.hidden_size = config["hidden_size"]
        self.num_layers = config["num_layers"]
        self.attention_size = config["attention_size"]
        for name in ("embedding_size", "hidden_size", "num_layers", "attention_size"):
            check_positive(name, getattr(self, name))
        self.rnn_type = config["rnn_type"]
        self.attention_type = config["attention_type"]
        self.attend_over = config["attend_over"]
        self.fusion = config["fusion"]
        check_choice("rnn_type", self.rnn_type, RNN_TYPES)
        check_choice("attention_type", self.attention_type, ATTENTION_TYPES)
        check_choice("attend_over", self.attend_over, ATTEND_OVER)
        check_choice("fusion", self.fusion, FUSIONS)
        self.emb_dropout_prob = config["emb_dropout_prob"]
        self.dropout_prob = config["dropout_prob"]
        check_probability("emb_dropout_prob", self.emb_dropout_prob)
        check_probability("dropout_prob", self.dropout_prob)
        key_size = self.hidden_size if self.attend_over == "hidden" else self.embedding_size
        if self.attention_type == "dot" and key_size != self.hidden_size:
            raise UsageError(
                f"attention_type 'dot' with attend_over 'embedding' needs hidden_size == embedding_size, "
                f"got {self.hidden_size} and {self.embedding_size}; use attention_type 'general' "
                f"(a learned projection) or equal sizes"
            )

        if self.user_features and self.attention_type == "none":
            raise UsageError("user_features joins the attention pooling as one more key; "
                             "attention_type 'none' has no pooling: choose another attention_type")

        # layers
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size, padding_idx=0)
        self.build_user_token(dataset, key_size)  # one more key and value of the pooling
        self.emb_dropout = nn.Dropout(self.emb_dropout_prob)
        self.rnn = RNN_TYPES[self.rnn_type](
            self.embedding_size, self.hidden_size, self.num_layers, batch_first=True
        )
        self.pooling = (
            AttentionPooling(self.attention_type, self.hidden_size, key_size, self.attention_size)
            if self.attention_type != "none"
            else None
        )
        # fused vector: [context, query], the context, or (none) the query alone. "concat" always
        # ends in a linear layer (NARM's B; GRU4Rec's dense layer for none), "context" only when
        # the fused size differs from the item embedding size.
        if self.pooling is None:
            fused_size = self.hidden_size
        elif self.fusion == "concat":
            fused_size = key_size + self.hidden_size
        else:
            fused_size = key_size
        self.fusion_dropout = nn.Dropout(self.dropout_prob)
        self.output_proj = (
            nn.Linear(fused_size, self.embedding_size, bias=False)
            if self.fusion == "concat" or fused_size != self.embedding_size
            else nn.Identity()
        )

        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Xavier weights as in RecBole's NARM/GRU4Rec, but for every RNN
        layer (input-to-hidden Xavier, hidden-to-hidden orthogonal); zero
        biases; the padding row stays zero."""
        if isinstance(module, nn.Embedding):
            nn.init.xavier_normal_(module.weight)
            zero_padding_row(module)
        elif isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RNNBase):
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    nn.init.orthogonal_(param)
                else:
                    nn.init.zeros_(param)

    def encode_history(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, E) dropped-out item embeddings and (B, L, H) RNN states.
        RecBole pads on the right and the RNN runs forward, so the state at a
        valid position has read no padding; states at padded positions are
        never used (masked or causally hidden in attention, never a kept query)."""
        embedded = self.emb_dropout(self.item_embedding(item_seq))
        states, _ = self.rnn(embedded)
        return embedded, states

    def _represent(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, all_positions: bool, need_weights: bool = False,
        user: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """User vectors (B, Lq, E) and, with ``need_weights``, the weight
        (B, Lq, L) of each history position in them.

        One code path for both modes: ``all_positions`` makes the state at
        every position a query (Lq = L) that attends causally, to positions
        <= its own; otherwise the last valid state is the one query (Lq = 1)
        and a key mask hides padding. The vector at position t of the first is
        the second's for the prefix ending at t. Under the causal mask alone,
        queries at padded positions see padding, but their vectors are never
        used (their targets are padding). With a user token, it is key 0,
        which every query may see, and the weights (B, Lq, 1 + L) have it first."""
        embedded, states = self.encode_history(item_seq)
        length = item_seq.shape[1]
        positions = torch.arange(length, device=item_seq.device)
        if all_positions:
            query, key_mask = states, None  # (B, L, H)
        else:
            query = self.gather_indexes(states, item_seq_len - 1)[:, None]  # (B, 1, H) last valid state
            key_mask = positions[None, :] < item_seq_len[:, None]  # (B, L)
        weights = None
        if self.pooling is None:  # the query alone: all weight on the query's own position
            fused = query
            if need_weights:
                own = positions[:, None] if all_positions else (item_seq_len - 1)[:, None, None]
                weights = (positions == own).to(states.dtype).expand(item_seq.shape[0], -1, -1)
        else:
            keys = states if self.attend_over == "hidden" else embedded
            offset = 0
            if self.user_token is not None:
                keys = torch.cat([self.user_token(user, len(item_seq))[:, None].to(keys.dtype), keys], dim=1)
                offset = 1
                if key_mask is not None:
                    key_mask = torch.cat([key_mask.new_ones(len(key_mask), 1), key_mask], dim=1)
            context, weights = self.pooling(
                query, keys, keys, key_mask=key_mask, causal=all_positions, need_weights=need_weights,
                causal_offset=offset,
            )
            fused = torch.cat([context, query], dim=-1) if self.fusion == "concat" else context
        return self.output_proj(self.fusion_dropout(fused)), weights

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                user: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, E) user vector from the last valid position's state."""
        return self._represent(item_seq, item_seq_len, all_positions=False, user=user)[0][:, 0]

    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
               user: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, L, E) user vector at every position from one RNN pass; position
        t sees items <= t and equals :meth:`forward` of the prefix ending at t."""
        return self._represent(item_seq, item_seq_len, all_positions=True, user=user)[0]

    def attention_weights(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                          user: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, 1, P, P) causal pooling weights of each position's user vector
        over the history; the row of the last valid position is the weight of
        each item in :meth:`forward`'s vector (exactly 0 on padding). With a
        user token, P = 1 + L and position 0 is the user (its own row: 1 on itself)."""
        weights = self._represent(item_seq, item_seq_len, all_positions=True, need_weights=True, user=user)[1]
        assert weights is not None
        if self.user_token is not None:
            user_row = torch.zeros_like(weights[:, :1])
            user_row[..., 0] = 1.0
            weights = torch.cat([user_row, weights], dim=1)
        return weights[:, None]

    def attention_panels(self) -> list[list[str]]:
        return [["pooling"]]
