"""Names of the interaction fields this package adds to RecBole's batches:
shared by the loaders that write them and the models that read them."""
from __future__ import annotations

#: Each position's next item in an all-positions training row (0 = padding);
#: its presence switches a model's ``calculate_loss`` to every position.
TARGET_SEQ_FIELD = "target_item_list"
#: A packed row's place of each position in its own window (0, 1, ...).
POSITION_SEQ_FIELD = "position_list"
#: A packed row's window number of each position (1, 2, ...; 0 = padding).
SEGMENT_SEQ_FIELD = "segment_list"
