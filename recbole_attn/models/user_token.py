"""The user as one more token: their features (``user_features``, e.g.
ml-1m's age, gender and occupation) embedded and summed into one vector that
the sequence models attend to beside the items, so that user and item
features meet in one attention (as in Chen et al., "Behavior Sequence
Transformer", DLP-KDD 2019, which puts user and item features in one
self-attention). A learned "unknown user" vector stands in where nothing is
known: a user id without features, or a new user served without them.
"""
from __future__ import annotations

from typing import Any

import torch
from recbole.utils import FeatureType
from torch import nn

from recbole_attn.errors import UsageError
from recbole_attn.models.layers import FieldTokenEmbedding

#: Field types a user feature may have (token_seq: the mean of its tokens' embeddings).
USER_FEATURE_TYPES = (FeatureType.TOKEN, FeatureType.TOKEN_SEQ)


class UserToken(FieldTokenEmbedding):
    """``(B,)`` user ids or per-field token ids -> ``(B, size)`` user vectors."""

    def __init__(self, dataset: Any, fields: list[str], size: int) -> None:
        user_feat = dataset.get_user_feature()
        loaded = [f for f in dataset.field2type if f in user_feat and f != dataset.uid_field]
        for field in fields:
            if field not in loaded:
                raise UsageError(
                    f"user_features: {field!r} is not a user feature of {dataset.dataset_name}; valid choices: "
                    f"{', '.join(loaded) or 'none (the dataset has no .user file, or load_col loads none of it)'}")
            if dataset.field2type[field] not in USER_FEATURE_TYPES:
                raise UsageError(f"user_features: {field!r} is a {dataset.field2type[field].value} field; "
                                 f"only token and token_seq fields can be embedded")
        super().__init__({field: user_feat[field] for field in fields}, {f: dataset.num(f) for f in fields}, size)
        self.unknown = nn.Parameter(torch.zeros(size))

    def forward(self, features: dict[str, torch.Tensor] | None, batch_size: int) -> torch.Tensor:
        """Sum over fields of the mean embedding of each field's tokens; rows
        with no token in any field, and every row when ``features`` is
        ``None`` (nothing known of the batch's users), get the learned
        unknown-user vector."""
        if features is None:
            return self.unknown.expand(batch_size, -1)
        tokens = {field: t[:, None] if t.dim() == 1 else t for field, t in features.items()}  # a token field: (B,)
        total, known = self.pooled(tokens)
        return torch.where(known, total, self.unknown.to(total.dtype))
