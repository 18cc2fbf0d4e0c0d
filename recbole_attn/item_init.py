"""Pretrained item embeddings (``item_init: word2vec``): skip-gram vectors
learned from the training sequences, written into a model's item table
(which is also its output table) before training. Where histories are short
and sparse, co-occurrence in other users' sequences gives an item a useful
starting point that its few own training targets cannot (Barkan &
Koenigstein, "Item2Vec", MLSP 2016; Mikolov et al., NeurIPS 2013).

Only the training split is read (:func:`training_corpus`): every user's
training items in time order, never a validation or test item. Vectors are
cached under ``checkpoint_dir/item_init/`` by a hash of the corpus and the
settings, so reruns (seeds, tuning trials) do not retrain them.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbole_attn.serialization import atomic_npz_save
from recbole_attn.data.rows import training_sequences
from recbole_attn.errors import UsageError, check_choice

logger = logging.getLogger(__name__)

ITEM_INITS = ("random", "word2vec")
#: Skip-gram (gensim's default is CBOW), every item kept however rare (its default drops
#: words seen fewer than 5 times), and 10 epochs over a corpus of a few hundred thousand tokens.
WORD2VEC = {"sg": 1, "window": 5, "negative": 5, "min_count": 1, "epochs": 10, "sample": 1e-3}


def training_corpus(train_dataset: Any) -> list[list[str]]:
    """Each user's training items in time order (item ids as words), from
    RecBole's training split only."""
    _, items, offsets = training_sequences(train_dataset)
    words = items.astype(str)
    return [words[start:end].tolist() for start, end in zip(offsets[:-1], offsets[1:])]


def _cache_key(corpus: list[list[str]], rows: int, size: int, seed: int, dataset: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"rows": rows, "size": size, "seed": seed, "word2vec": WORD2VEC,
                              "dataset": dataset}).encode())
    for sentence in corpus:
        digest.update((" ".join(sentence) + "\n").encode())
    return digest.hexdigest()[:16]


def word2vec_vectors(corpus: list[list[str]], size: int, seed: int) -> dict[str, np.ndarray]:
    """Skip-gram vectors of every word in ``corpus`` (one worker: reproducible for a seed)."""
    try:
        from gensim.models import Word2Vec
    except ImportError:
        raise UsageError("item_init: word2vec needs gensim: pip install 'recbole-attn[word2vec]'") from None
    model = Word2Vec(corpus, vector_size=size, seed=seed, workers=1, **WORD2VEC)
    return {word: model.wv[word] for word in model.wv.index_to_key}


def pretrained_table(train_dataset: Any, n_items: int, size: int, seed: int, cache_dir: str | Path,
                     dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors (n_items, size), known (n_items,) bool)``: skip-gram vectors
    by item id, read from the cache when the same corpus and settings made
    them before; items without one (not in training) are marked unknown."""
    corpus = training_corpus(train_dataset)
    path = Path(cache_dir) / "item_init" / f"{dataset}-word2vec-{_cache_key(corpus, n_items, size, seed, dataset)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            logger.info(f"item_init: word2vec vectors read from {path}")
            return cached["vectors"], cached["known"]
    vectors = np.zeros((n_items, size), dtype=np.float32)
    known = np.zeros(n_items, dtype=bool)
    for word, vector in word2vec_vectors(corpus, size, seed).items():
        vectors[int(word)], known[int(word)] = vector, True
    atomic_npz_save(path, vectors=vectors, known=known)
    logger.info(f"item_init: word2vec vectors of {int(known.sum())} items written to {path}")
    return vectors, known


def initialize_item_table(model: Any, config: Any, train_dataset: Any) -> None:
    """Apply ``item_init`` / ``item_init_freeze`` to ``model.item_embedding``.

    The vectors are rescaled to the table's own standard deviation, so the
    Transformer's or RNN's input keeps the scale its initialisation chose;
    items word2vec never saw and the padding row keep their own.
    ``item_init_freeze`` keeps the pretrained rows fixed (their gradient is
    zero, so Adam never moves them); the other rows train, so an item seen
    only in validation or test is still pushed down as a negative."""
    kind = config["item_init"] or "random"
    check_choice("item_init", kind, ITEM_INITS)
    table = getattr(model, "item_embedding", None)
    if kind == "random":
        return
    if not isinstance(table, torch.nn.Embedding):
        raise UsageError(f"item_init: {kind} needs a model with an item_embedding table; "
                         f"{type(model).__name__} has none")
    weight = table.weight
    vectors, known = pretrained_table(train_dataset, weight.shape[0], weight.shape[1], config["seed"],
                                      config["checkpoint_dir"], config["dataset"])
    known[0] = False  # padding
    with torch.no_grad():
        rows = torch.from_numpy(known)
        pretrained = torch.from_numpy(vectors[known]).to(weight.device, weight.dtype)
        scale = weight[1:].std() / pretrained.std().clamp(min=1e-12)
        weight[rows.to(weight.device)] = pretrained * scale
    if config["item_init_freeze"]:  # the pretrained rows only: the others (padding, unseen items) still learn
        fixed = rows.to(weight.device)[:, None]
        weight.register_hook(lambda grad: grad.masked_fill(fixed.to(grad.device), 0.0))  # no copy once moved
