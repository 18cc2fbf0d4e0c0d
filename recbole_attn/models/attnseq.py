"""AttnSeq: a causal Transformer over the history, trained on all positions.

Reference:
    Wang-Cheng Kang and Julian McAuley. "Self-Attentive Sequential
    Recommendation." ICDM 2018 (SASRec).
    Aleksandr Petrov and Craig Macdonald. "gSASRec: Reducing Overconfidence in
    Sequential Recommendation Trained with Negative Sampling." RecSys 2023
    (full-softmax / sampled training of SASRec on every position).
    Ruibin Xiong et al. "On Layer Normalization in the Transformer
    Architecture." ICML 2020 (pre-LN).

Note:
    Unlike RecBole's SASRec, attention runs through ``scaled_dot_product_attention``
    with ``is_causal=True`` only: RecBole pads on the right, so a causal mask
    already keeps every valid position from seeing padding, and the fused
    kernels apply. Pre-LN is the default (``norm_first``) and a final
    LayerNorm follows the last block. Item features (``selected_features``)
    are embedded and fused into each history position. ``readout: attention``
    replaces the last position's output by a learned, causal pooling of the
    outputs (Zhouhan Lin et al. "A Structured Self-Attentive Sentence
    Embedding." ICLR 2017).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from recbole.utils import FeatureType
from torch import nn

from recbole_attn.errors import UsageError, check_choice, check_positive, check_probability
from recbole_attn.models.base import MODEL_PROPERTIES_DIR, AttnSequentialRecommender
from recbole_attn.models.layers import (
    AttentionPooling,
    FieldTokenEmbedding,
    TransformerBlock,
    same_window_mask,
    select_positions,
    zero_padding_row,
)
from recbole_attn.values import as_list

FEATURE_FUSIONS = ("sum", "concat")
#: The user vector: the output at the last position, or an attention-pooled mix of every output up to it.
READOUTS = ("last", "attention")


class ItemFeatureEmbedding(FieldTokenEmbedding):
    """Mean embedding of each item's tokens in the chosen item features
    (e.g. an item's genres), looked up by item id."""

    def __init__(self, dataset: Any, fields: list[str], size: int) -> None:
        item_feat = dataset.get_item_feature()
        for field in fields:
            if field not in dataset.field2type or field not in item_feat:
                known = [f for f in dataset.field2type if f in item_feat and f != dataset.iid_field]
                raise UsageError(
                    f"selected_features: {field!r} is not an item feature of {dataset.dataset_name}; "
                    f"valid choices: {', '.join(known) or 'none (no .item file loaded)'}"
                )
            if dataset.field2type[field] not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
                raise UsageError(f"selected_features: {field!r} is not a token or token_seq field")
        super().__init__({field: item_feat[field] for field in fields}, {f: dataset.num(f) for f in fields}, size)

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L, D): sum over fields of the mean token embedding."""
        return self.pooled(self.tokens_of(item_seq))[0]


class AttnSeq(AttnSequentialRecommender):
    """Causal multi-head self-attention recommender; scores are dot products
    with the (tied) item embedding table."""

    properties_file = MODEL_PROPERTIES_DIR / "AttnSeq.yaml"
    supports_all_positions = True
    supports_user_features = True
    supports_packed_windows = True
    option_choices = {**AttnSequentialRecommender.option_choices, "feature_fusion": FEATURE_FUSIONS,
                      "readout": READOUTS}

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        # read and validate parameters
        self.hidden_size = config["hidden_size"]
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.inner_size = config["inner_size"]
        for name in ("hidden_size", "n_layers", "n_heads", "inner_size"):
            check_positive(name, getattr(self, name))
        if self.hidden_size % self.n_heads:
            raise UsageError(f"hidden_size {self.hidden_size} must be divisible by n_heads {self.n_heads}")
        self.dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        check_probability("hidden_dropout_prob", self.dropout_prob)
        check_probability("attn_dropout_prob", self.attn_dropout_prob)
        self.norm_first = config["norm_first"]
        if not isinstance(self.norm_first, bool):
            raise UsageError(f"norm_first must be True or False, got {self.norm_first!r}")
        self.initializer_range = config["initializer_range"]
        self.selected_features = as_list(config["selected_features"])
        self.feature_fusion = config["feature_fusion"] or "sum"
        check_choice("feature_fusion", self.feature_fusion, FEATURE_FUSIONS)
        self.readout = config["readout"] or "last"
        check_choice("readout", self.readout, READOUTS)

        # layers
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.build_user_token(dataset, self.hidden_size)
        #: Positions before the first item: the user token's.
        self.offset = 1 if self.user_token is not None else 0
        self.position_embedding = nn.Embedding(self.max_seq_length + self.offset, self.hidden_size)
        self.feature_embedding = (
            ItemFeatureEmbedding(dataset, self.selected_features, self.hidden_size)
            if self.selected_features
            else None
        )
        self.feature_fusion_proj = (
            nn.Linear(2 * self.hidden_size, self.hidden_size)
            if self.feature_embedding is not None and self.feature_fusion == "concat"
            else None
        )
        self.emb_dropout = nn.Dropout(self.dropout_prob)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                self.hidden_size,
                self.n_heads,
                self.inner_size,
                self.dropout_prob,
                self.attn_dropout_prob,
                norm_first=self.norm_first,
                layer_norm_eps=config["layer_norm_eps"],
            )
            for _ in range(self.n_layers)
        )
        norm_eps = config["layer_norm_eps"]
        self.input_norm = nn.Identity() if self.norm_first else nn.LayerNorm(self.hidden_size, eps=norm_eps)
        self.final_norm = nn.LayerNorm(self.hidden_size, eps=norm_eps) if self.norm_first else nn.Identity()
        self.readout_pooling = (AttentionPooling("self_additive", self.hidden_size, self.hidden_size,
                                                 self.hidden_size) if self.readout == "attention" else None)

        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Truncated-normal weights as in BERT/SASRec; zero biases, unit
        norms; padding rows stay zero."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=self.initializer_range, a=-2 * self.initializer_range,
                                  b=2 * self.initializer_range)
        if isinstance(module, nn.Embedding):
            zero_padding_row(module)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def embed(self, item_seq: torch.Tensor, user: dict[str, torch.Tensor] | None = None,
              positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, H) input: item (+ features) + position embeddings; with a
        user token, (B, 1 + L, H) with the user first. ``positions`` (B, L):
        each item's place in its own window (packed rows), else 0, 1, ..."""
        x = self.item_embedding(item_seq)
        if self.feature_embedding is not None:
            features = self.feature_embedding(item_seq)
            if self.feature_fusion_proj is not None:
                x = self.feature_fusion_proj(torch.cat([x, features], dim=-1))
            else:
                x = x + features
        if self.user_token is not None:
            x = torch.cat([self.user_token(user, len(item_seq))[:, None].to(x.dtype), x], dim=1)
        if positions is None:
            positions = torch.arange(x.shape[1], device=item_seq.device)
        x = x + self.position_embedding(positions)
        return self.emb_dropout(self.input_norm(x))

    def encode(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
               user: dict[str, torch.Tensor] | None = None, positions: torch.Tensor | None = None,
               segments: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, H) output at every item position; position t sees items <= t
        (and the user token). Packed rows (:mod:`recbole_attn.data.packing`)
        bring each item's ``positions`` in its window and the window
        ``segments``: a position then sees only earlier items of its window."""
        return self._encode(item_seq, need_weights=False, user=user, positions=positions, segments=segments)[0]

    def _encode(self, item_seq: torch.Tensor, need_weights: bool, user: dict[str, torch.Tensor] | None = None,
                positions: torch.Tensor | None = None, segments: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`encode`, and with ``need_weights`` each layer's (B, heads, P, P)
        weights, then the readout's (B, 1, P, P); P = L, or 1 + L with the
        user token first (the readout pools item outputs: its user row and
        column are 1 on the user and 0 elsewhere)."""
        x = self.embed(item_seq, user, positions)
        mask = None if segments is None else same_window_mask(segments)
        layer_weights = []
        for block in self.blocks:
            x, weights = block(x, need_weights, mask=mask)
            if weights is not None:
                layer_weights.append(weights)
        x = self.final_norm(x)[:, self.offset:]
        if self.readout_pooling is not None:  # position t pools the outputs at positions <= t
            x, weights = self.readout_pooling(x, x, x, causal=True, need_weights=need_weights)
            if weights is not None:
                weights = F.pad(weights[:, None], (self.offset, 0, self.offset, 0))
                if self.offset:
                    weights[:, :, 0, 0] = 1.0
                layer_weights.append(weights)
        return x, layer_weights

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                user: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The representation at the last valid position, as ``encode`` gives
        it. With ``readout: last`` the last block computes only that position,
        since nothing reads the others; the attention readout pools every
        output up to it."""
        x = self.embed(item_seq, user)
        for block in self.blocks[:-1]:
            x, _ = block(x)
        last = item_seq_len - 1
        if self.readout_pooling is None:
            x, _ = self.blocks[-1](x, query_index=last + self.offset)
            return self.final_norm(x[:, 0])
        x = self.final_norm(self.blocks[-1](x)[0])[:, self.offset:]
        valid = torch.arange(x.shape[1], device=x.device)[None, :] <= last[:, None]
        pooled, _ = self.readout_pooling(select_positions(x, last), x, x, key_mask=valid)
        return pooled[:, 0]

    def attention_weights(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor,
                          user: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, panels, P, P) weights of each position over earlier ones (see
        :meth:`_encode`): every layer's heads, then the readout's pooling when
        ``readout: attention``."""
        return torch.cat(self._encode(item_seq, need_weights=True, user=user)[1], dim=1)

    def attention_panels(self) -> list[list[str]]:
        rows = [[f"layer {layer + 1}, head {head + 1}" for head in range(self.n_heads)]
                for layer in range(self.n_layers)]
        return rows + ([["readout"]] if self.readout_pooling is not None else [])
