"""Export: the ONNX history encoder and the item table give the same top-10
as ``recommend``, run by onnxruntime with no torch model at all."""
from __future__ import annotations

import json

import numpy as np
import pytest

import recbole_attn
from recbole_attn.cli import main
from recbole_attn.errors import UsageError
from recbole_attn.serve import load, recommend
from recbole_attn.serve.export import export_model
from recbole_attn.serve.queries import tail_windows
from tests.conftest import FAST

ort = pytest.importorskip("onnxruntime")  # the optional extra 'export'; CI installs it


@pytest.fixture(scope="module", params=[("AttnSeq", {}), ("AttnRNN", {}), ("AttnSeq", {"readout": "attention"})],
                ids=["AttnSeq", "AttnRNN", "AttnSeq-readout-attention"])
def exported(request, pattern_root, tmp_path_factory):
    model, options = request.param
    folder = tmp_path_factory.mktemp(model)
    settings = {**FAST, "epochs": 2, "data_path": str(pattern_root), "checkpoint_dir": str(folder / "saved"),
                **options}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = recbole_attn.run(model, "pattern", config_dict=settings, write_results=False)
    loaded = load(result["checkpoint"], device="cpu")
    return loaded, export_model(loaded, folder / "export")


def test_onnx_encoder_and_item_table_give_recommends_top_10(exported):
    loaded, folder = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    session = ort.InferenceSession(str(folder / manifest["encoder"]["file"]))
    items = np.load(folder / manifest["items"]["file"])
    tokens = (folder / manifest["item_tokens"]["file"]).read_text().split("\n")[:-1]
    users = [str(u) for u in range(1, 41)]
    ids = np.array(loaded.user_ids(users))
    import torch

    rows = torch.as_tensor(ids)
    item_seq, lengths = tail_windows(loaded.history_indptr, loaded.history_items, rows, manifest["max_length"])
    user = session.run(None, {"item_seq": item_seq.numpy(), "item_seq_len": lengths.numpy()})[0]
    scores = user @ items.T
    scores[:, 0] = -np.inf
    for row, uid in enumerate(ids):  # the whole history, as recommend's exclude_seen
        scores[row, loaded.history_items[loaded.history_indptr[uid]:loaded.history_indptr[uid + 1]].numpy()] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    expected = recommend(loaded, users=users, k=10)
    assert [[tokens[i] for i in row] for row in top] == expected.items.tolist()


def test_export_never_writes_over_a_folder_and_names_the_format(exported, capsys):
    loaded, folder = exported
    with pytest.raises(UsageError, match="exists already"):
        export_model(loaded, folder)
    with pytest.raises(UsageError, match="unknown export format 'tflite'"):
        export_model(loaded, folder.parent / "other", fmt="tflite")
    assert not (folder.parent / "other").exists()
    assert main(["export", f"--checkpoint={loaded.checkpoint}", f"--out={folder}"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_a_model_whose_scores_are_not_user_times_items_is_refused(pattern_root, tmp_path):
    """RecBole's BERT4Rec scores with an output bias and takes no lengths: the
    exported files would rank differently, so there is no export."""
    settings = {**FAST, "epochs": 1, "data_path": str(pattern_root), "checkpoint_dir": str(tmp_path / "saved")}
    result = recbole_attn.run("BERT4Rec", "pattern", config_dict=settings, write_results=False)
    with pytest.raises(UsageError, match="BERT4Rec cannot be exported: its scores are not"):
        export_model(load(result["checkpoint"], device="cpu"), tmp_path / "export")
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".export-*"))
