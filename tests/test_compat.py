"""Each compat patch: the patched RecBole call works, and with RecBole's
original put back (``compat.ORIGINALS``, or plain numpy for a module's numpy
view) the same call fails."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import recbole_attn
from recbole_attn import compat
from recbole_attn.config import AttnConfig
from recbole_attn.data.fixtures import write_sequential_pattern
from tests.conftest import FAST


def test_apply_is_idempotent_and_leaves_global_numpy_alone():
    compat.apply()
    compat.apply()
    assert not hasattr(np, "float_") and "float" not in np.__dict__


def test_config_builds_on_numpy2():
    with pytest.raises(AttributeError):  # RecBole's own compatibility_settings: np.float_ is gone
        compat.ORIGINALS["Config.compatibility_settings"](None)
    assert AttnConfig("GRU4Rec", "ml-100k")["valid_metric"] == "NDCG@10"


def test_metrics_use_legacy_aliases(monkeypatch):
    import recbole.evaluator.metrics as metrics

    def ndcg() -> np.ndarray:
        pos_index, pos_len = np.array([[True, False], [False, True]]), np.array([1, 1])
        return metrics.NDCG({"metric_decimal_place": 4, "topk": [2]}).metric_info(pos_index, pos_len)

    assert ndcg()[:, 1] == pytest.approx([1.0, 1 / np.log2(3)])  # np.float inside
    monkeypatch.setattr(metrics, "np", np)
    with pytest.raises(AttributeError, match="float"):
        ndcg()


def test_interaction_accepts_python_floats(monkeypatch):
    import recbole.data.interaction as interaction

    assert interaction.Interaction({"x": [1.0, 2.0]})["x"].tolist() == [1.0, 2.0]  # isinstance(.., np.float)
    monkeypatch.setattr(interaction, "np", np)
    with pytest.raises(AttributeError, match="float"):
        interaction.Interaction({"x": [1.0, 2.0]})


def _genres_of_toy_story(ml100k_root: Path) -> list[str]:
    from recbole.data import create_dataset

    config = AttnConfig("GRU4Rec", "ml-100k", config_dict={"data_path": str(ml100k_root), "state": "WARNING"})
    dataset = create_dataset(config)
    first = dataset.field2token_id["item_id"]["1"]  # Toy Story: Animation Children's Comedy
    return [dataset.field2id_token["class"][g] for g in dataset.item_feat["class"][first].tolist() if g]


def test_token_seq_fields_remap_per_row(ml100k_root, monkeypatch):
    """pandas 3's Series.agg(len) breaks RecBole's token_seq remap."""
    from recbole.data.dataset.dataset import Dataset

    assert _genres_of_toy_story(ml100k_root) == ["Animation", "Children's", "Comedy"]
    for name in ("_remap", "_concat_remaped_tokens"):
        monkeypatch.setattr(Dataset, name, compat.ORIGINALS[f"Dataset.{name}"])
    try:
        genres = _genres_of_toy_story(ml100k_root)
    except Exception:  # noqa: BLE001 - a crash is one way to be wrong
        genres = None
    assert genres != ["Animation", "Children's", "Comedy"]


def _ratings_with_a_hole(root: Path) -> np.ndarray:
    from recbole.data import create_dataset

    folder = write_sequential_pattern(root, name="holes", n_users=20, n_items=10)
    lines = (folder / "holes.inter").read_text().splitlines()
    cells = lines[1].split("\t")
    lines[1] = "\t".join(cells[:2] + ["", cells[3]])  # missing rating
    (folder / "holes.inter").write_text("\n".join(lines) + "\n")
    config = AttnConfig("GRU4Rec", "holes", config_dict={
        "data_path": str(root), "state": "WARNING", "normalize_all": False,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]}})
    return np.asarray(create_dataset(config).inter_feat["rating"], dtype=float)


def test_missing_values_are_filled(tmp_path, monkeypatch):
    """pandas 3 turns RecBole's chained ``fillna(inplace=True)`` into no-ops."""
    from recbole.data.dataset.dataset import Dataset

    assert not np.isnan(_ratings_with_a_hole(tmp_path / "patched")).any()
    monkeypatch.setattr(Dataset, "_fill_nan", compat.ORIGINALS["Dataset._fill_nan"])
    assert np.isnan(_ratings_with_a_hole(tmp_path / "original")).any()


def test_best_model_reload_and_checkpoint_is_plain(pattern_root, monkeypatch):
    """torch >= 2.6 refuses RecBole's pickled Config in checkpoints."""
    from recbole.trainer.trainer import Trainer

    settings = {**FAST, "data_path": str(pattern_root), "epochs": 1}
    result = recbole_attn.run("GRU4Rec", "pattern", config_dict=settings, write_results=False)
    assert 0 <= result["test"]["ndcg@10"] <= 1
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    assert checkpoint["config"]["model"] == "GRU4Rec" and isinstance(checkpoint["config"], dict)
    monkeypatch.setattr(Trainer, "_save_checkpoint", compat.ORIGINALS["Trainer._save_checkpoint"])
    with pytest.raises(Exception, match="weights_only"):  # the best-model reload before the test
        recbole_attn.run("GRU4Rec", "pattern", config_dict=settings, write_results=False)


def test_a_field_over_128_kib_is_read(tmp_path):
    from recbole.data import create_dataset

    root = write_sequential_pattern(tmp_path, name="wide", n_users=10, n_items=5)
    (root / "wide.item").write_text(f"item_id:token\tdescription:token_seq\n1\t{'w' * 200_000}\n")
    config = AttnConfig("GRU4Rec", "wide", config_dict={"data_path": str(tmp_path), "state": "WARNING", "load_col": {
        "inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "description"]}})
    assert "description" in create_dataset(config).item_feat
    raised = csv.field_size_limit(compat.ORIGINALS["csv.field_size_limit"])
    try:
        with pytest.raises(Exception, match="field larger than field limit"):
            create_dataset(config)
    finally:
        csv.field_size_limit(raised)


def test_data_parallel_on_cpu_modules(tmp_path):
    import recbole.trainer.trainer as recbole_trainer
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        module = torch.nn.Linear(2, 2)
        wrapped = recbole_trainer.DistributedDataParallel(module, device_ids=[0])  # what RecBole's trainer passes
        assert wrapped.module is module
        with pytest.raises(ValueError, match="device_ids"):
            compat.ORIGINALS["recbole.trainer.trainer.DistributedDataParallel"](module, device_ids=[0])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_never_imports_ray_or_quick_start():
    code = "import recbole_attn, sys; print('ray' in sys.modules, 'recbole.quick_start' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.slow
def test_recbole_models_do_not_leave_anomaly_mode_on():
    """SINE's module turns autograd anomaly detection on at import (5x slower
    backward for every model in the process)."""
    code = ("import torch, recbole_attn; from recbole_attn import registry; "
            "registry.get_model_class('SASRec'); registry.get_model_class('SINE'); "
            "print(torch.is_anomaly_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    plain = subprocess.run([sys.executable, "-c", "import torch, recbole.model.sequential_recommender.sine; "
                            "print(torch.is_anomaly_enabled())"], capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == "True"  # what the patch undoes


def test_beyond_accuracy_metrics_collect(pattern_root, monkeypatch):
    """RecBole's collector called ``.cpu()`` on the item count (an int)."""
    from recbole.evaluator.collector import Collector, DataStruct

    collector = Collector.__new__(Collector)
    collector.data_struct = DataStruct()
    collector.data_struct.set("data.num_items", 61)
    collector.data_struct.set("rec.topk", torch.ones(2, 3))
    struct = collector.get_data_struct()
    assert struct.get("data.num_items") == 61 and "rec.topk" not in collector.data_struct
    collector.data_struct.set("rec.topk", torch.ones(2, 3))
    monkeypatch.setattr(Collector, "get_data_struct", compat.ORIGINALS["Collector.get_data_struct"])
    with pytest.raises(AttributeError, match="cpu"):
        collector.get_data_struct()
