"""Each compat patch: the patched RecBole call works, and (where the original
can still be called) it fails without the patch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import recbole_attn
from recbole_attn import compat
from recbole_attn.config import AttnConfig
from recbole_attn.testdata import write_sequential_pattern
from tests.conftest import FAST


def test_apply_is_idempotent_and_leaves_global_numpy_alone():
    compat.apply()
    compat.apply()
    assert not hasattr(np, "float_") and "float" not in np.__dict__


def test_config_builds_on_numpy2():
    # RecBole's own compatibility_settings dies on numpy 2 (np.float_ is gone)
    with pytest.raises(AttributeError):
        compat.ORIGINALS["Config.compatibility_settings"](None)
    config = AttnConfig("GRU4Rec", "ml-100k")
    assert config["valid_metric"] == "NDCG@10"


def test_metrics_use_legacy_aliases():
    from recbole.evaluator.metrics import NDCG, GAUC

    config = {"metric_decimal_place": 4, "topk": [2]}
    pos_index = np.array([[True, False], [False, True]])
    pos_len = np.array([1, 1])
    ndcg = NDCG(config).metric_info(pos_index, pos_len)  # np.float inside
    assert ndcg[:, 1] == pytest.approx([1.0, 1 / np.log2(3)])
    gauc = GAUC({"metric_decimal_place": 4})  # np.bool inside
    assert gauc.metric_info(np.array([1, 2]), np.array([3, 3]), np.array([1, 1])) == pytest.approx(0.75)


def test_interaction_accepts_python_floats():
    from recbole.data.interaction import Interaction

    batch = Interaction({"x": torch.tensor([1.0, 2.0])})
    assert batch["x"].tolist() == [1.0, 2.0]


def test_token_seq_fields_remap_per_row(ml100k_root):
    """pandas 3's Series.agg(len) breaks RecBole's token_seq remap."""
    from recbole.data import create_dataset

    config = AttnConfig("GRU4Rec", "ml-100k", config_dict={"data_path": str(ml100k_root), "state": "WARNING"})
    dataset = create_dataset(config)
    genres = dataset.item_feat["class"]
    first = dataset.field2token_id["item_id"]["1"]  # Toy Story: Animation Children's Comedy
    tokens = [dataset.field2id_token["class"][g] for g in genres[first].tolist() if g]
    assert tokens == ["Animation", "Children's", "Comedy"]


def test_missing_values_are_filled(tmp_path):
    """pandas 3 turns RecBole's chained ``fillna(inplace=True)`` into no-ops."""
    from recbole.data import create_dataset

    folder = write_sequential_pattern(tmp_path, name="holes", n_users=20, n_items=10)
    lines = (folder / "holes.inter").read_text().splitlines()
    cells = lines[1].split("\t")
    lines[1] = "\t".join(cells[:2] + ["", cells[3]])  # missing rating
    (folder / "holes.inter").write_text("\n".join(lines) + "\n")
    genres = ["item_id:token\tgenre:token_seq"] + [f"{i}\t{'' if i == 1 else 'a b'}" for i in range(1, 11)]
    (folder / "holes.item").write_text("\n".join(genres) + "\n")  # item 1 has no genre
    config = AttnConfig("GRU4Rec", "holes", config_dict={
        "data_path": str(tmp_path), "state": "WARNING", "normalize_all": False,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "genre"]}})
    dataset = create_dataset(config)
    assert not np.isnan(np.asarray(dataset.inter_feat["rating"], dtype=float)).any()
    item_1 = dataset.field2token_id["item_id"]["1"]
    assert list(dataset.item_feat["genre"][item_1]) in ([], [0, 0])


def test_best_model_reload_and_checkpoint_is_plain(pattern_root):
    """torch >= 2.6 refuses RecBole's pickled Config in checkpoints."""
    result = recbole_attn.run("GRU4Rec", "pattern", config_dict={
        **FAST, "data_path": str(pattern_root), "epochs": 1}, write_results=False)
    assert 0 <= result["test"]["ndcg@10"] <= 1
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    assert checkpoint["config"]["model"] == "GRU4Rec" and isinstance(checkpoint["config"], dict)
    with pytest.raises(Exception):
        state = dict(checkpoint, config=AttnConfig("GRU4Rec", "pattern", config_dict={"data_path": "x"}))
        torch.save(state, "pickled.pth")  # what unpatched RecBole writes
        torch.load("pickled.pth", weights_only=True)


def test_never_imports_ray_or_quick_start():
    code = "import recbole_attn, sys; print('ray' in sys.modules, 'recbole.quick_start' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_pandas_is_the_new_stack():
    assert int(pd.__version__.split(".")[0]) >= 2


def test_recbole_models_do_not_leave_anomaly_mode_on():
    """SINE's module turns autograd anomaly detection on at import (5x slower
    backward for every model in the process)."""
    code = ("import torch, recbole_attn; from recbole_attn import registry; "
            "registry.get_model_class('SASRec'); registry.get_model_class('SINE'); "
            "print(torch.is_anomaly_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
