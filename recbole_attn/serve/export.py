"""Export a trained model for serving without this package: the history
encoder (item ids -> user vector) as ONNX, the item table as a ``.npy``
array, the id -> token vocabulary, and a manifest that says how they fit.

A client scores ``user @ items.T`` and ranks row 0 (padding) and the
history's own items last, which is what :func:`recbole_attn.serve.recommend`
does; the test in ``tests/test_export.py`` checks that both give the same
top-10. Only ONNX is offered: ``torch.jit.trace`` mis-traced AttnSeq's
last-position gather (``docs/serving.md``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.data.interaction import Interaction
from torch import nn

from recbole_attn.atomic import check_writable_dir
from recbole_attn.errors import UsageError, check_choice
from recbole_attn.serve.load import LoadedModel
from recbole_attn.serve.queries import tail_windows

FORMATS = ("onnx",)
INSTALL_HINT = "pip install 'recbole-attn[export]' (onnx, onnxruntime)"


class HistoryEncoder(nn.Module):
    """``(item_seq (B, L) int64 right-padded with 0, item_seq_len (B,) int64)
    -> (B, D)`` user vectors: the model's own ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        return self.model(item_seq, item_seq_len)


def _example_input(loaded: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real histories from the dataset, as the encoder receives them."""
    with_history = torch.nonzero(loaded.history_indptr[1:] > loaded.history_indptr[:-1]).flatten()[:2]
    return tail_windows(loaded.history_indptr, loaded.history_items, with_history, loaded.max_length)


def _scores_are_user_times_items(loaded: LoadedModel, table: nn.Embedding, example: tuple[torch.Tensor, ...]) -> bool:
    """Whether the model's full-sort scores of the ``example`` histories are
    its ``forward`` times the item table, as a client of the export computes
    them (RecBole's BERT4Rec adds a bias, Caser needs the user id, ...)."""
    model: Any = loaded.model
    item_seq, lengths = (t.to(loaded.device) for t in example)
    try:
        with torch.no_grad():
            user = model(item_seq, lengths)
            expected = model.full_sort_predict(Interaction({model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: lengths}))
            served = user @ table.weight.T
    except Exception:  # another forward signature or input: not this model's contract
        return False
    return served.shape == expected.shape and torch.allclose(served, expected, rtol=1e-4, atol=1e-5)


def export_model(loaded: LoadedModel, out_dir: str | os.PathLike, fmt: str = "onnx") -> Path:
    """Write ``out_dir`` (a new folder): ``history_encoder.onnx``, ``items.npy``,
    ``item_tokens.txt`` and ``manifest.json``. It appears whole or not at all."""
    check_choice("export format", fmt, FORMATS)
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise UsageError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}") from None
    if getattr(loaded.model, "user_token", None) is not None:
        raise UsageError("export of a model with user_features is not supported: the ONNX encoder takes "
                         "item histories only")
    table = getattr(loaded.model, "item_embedding", None)
    example = _example_input(loaded)  # two real histories: the check's and the ONNX trace's input
    if not isinstance(table, nn.Embedding) or not _scores_are_user_times_items(loaded, table, example):
        raise UsageError(f"model {loaded.config['model']} cannot be exported: its scores are not "
                         f"forward(item_seq, item_seq_len) @ item_embedding.T, which the exported files compute "
                         f"(AttnSeq, AttnRNN and RecBole's SASRec, GRU4Rec, NARM are)")
    target = Path(out_dir)
    if target.exists():
        raise UsageError(f"export folder {str(target)!r} exists already; choose a new one")
    check_writable_dir(target.parent, "export folder's parent")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        encoder = HistoryEncoder(loaded.model).eval().to("cpu")
        item_seq, lengths = example
        with torch.no_grad():
            torch.onnx.export(
                encoder, (item_seq, lengths), str(staging / "history_encoder.onnx"),
                input_names=["item_seq", "item_seq_len"], output_names=["user"], opset_version=17,
                dynamic_axes={"item_seq": {0: "batch"}, "item_seq_len": {0: "batch"}, "user": {0: "batch"}},
                dynamo=False,
            )
        np.save(staging / "items.npy", table.weight.detach().float().cpu().numpy())
        (staging / "item_tokens.txt").write_text("\n".join(str(token) for token in loaded.item_tokens) + "\n")
        (staging / "manifest.json").write_text(json.dumps(_manifest(loaded, table), indent=2))
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        loaded.model.to(loaded.device)
    return target


def _manifest(loaded: LoadedModel, table: nn.Embedding) -> dict[str, Any]:
    return {
        "format": "onnx",
        "model": loaded.config["model"],
        "dataset": loaded.config["dataset"],
        "checkpoint": str(loaded.checkpoint),
        "encoder": {
            "file": "history_encoder.onnx",
            "inputs": {"item_seq": f"int64 (batch, {loaded.max_length}): the most recent item ids, oldest "
                                   f"first, right-padded with 0",
                       "item_seq_len": "int64 (batch,): how many ids of each row are items"},
            "output": {"user": f"float32 (batch, {table.embedding_dim})"},
        },
        "items": {"file": "items.npy", "shape": [table.num_embeddings, table.embedding_dim],
                  "note": "row i is item id i; row 0 is padding"},
        "item_tokens": {"file": "item_tokens.txt", "note": "line i is the raw token of item id i"},
        "max_length": loaded.max_length,
        "score": "user @ items.T; rank id 0 and the history's own items last",
    }
