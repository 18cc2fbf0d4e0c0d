from __future__ import annotations

import sys
import textwrap

import pytest

from recbole_attn import registry
from recbole_attn.config import AttnConfig
from recbole_attn.errors import UsageError


def test_plugins_come_from_entry_points_and_recbole_models_follow():
    assert {"AttnSeq", "AttnRNN"} <= set(registry.plugin_entry_points())
    assert registry.get_model_class("AttnSeq").__name__ == "AttnSeq"
    assert registry.get_model_class("SASRec").__module__ == "recbole.model.sequential_recommender.sasrec"
    assert {"SASRec", "GRU4Rec", "NARM", "BERT4Rec", "BPR"} <= set(registry.available_models())


def test_unknown_model_lists_choices_and_suggests_closest():
    with pytest.raises(UsageError) as caught:
        registry.get_model_class("SASrec")
    message = str(caught.value)
    assert "'SASrec'" in message and "Did you mean 'SASRec'?" in message
    assert "AttnSeq" in message and "GRU4Rec" in message


def test_third_party_plugin_is_found_with_its_yaml(tmp_path, monkeypatch):
    package = tmp_path / "toy_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        from pathlib import Path
        from recbole.model.sequential_recommender.gru4rec import GRU4Rec

        class ToyRec(GRU4Rec):
            properties_file = Path(__file__).with_name("ToyRec.yaml")
    """))
    (package / "ToyRec.yaml").write_text("embedding_size: 24\nhidden_size: 24\nnum_layers: 1\nloss_type: CE\n")
    dist = tmp_path / "toy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[recbole_attn.models]\nToyRec = toy_plugin:ToyRec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.plugin_entry_points.cache_clear()
    try:
        assert registry.get_model_class("ToyRec").__name__ == "ToyRec"
        config = AttnConfig("ToyRec", "ml-100k")
        assert config["hidden_size"] == 24 and config["valid_metric"] == "NDCG@10"
    finally:
        sys.modules.pop("toy_plugin", None)
        registry.plugin_entry_points.cache_clear()


def test_model_yaml_ships_with_the_package():
    for name in ("AttnSeq", "AttnRNN"):
        path = registry.model_properties_file(registry.get_model_class(name))
        assert path.is_file() and "recbole_attn" in str(path)


@pytest.mark.parametrize("use_recboles_trainer", [False, True])
def test_recboles_own_api_trains_our_models_on_all_positions(pattern_root, use_recboles_trainer):
    """RecBole's Config + get_model + get_trainer flow, after ``import recbole_attn``."""
    import warnings

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, get_trainer, init_seed

    from recbole_attn.trainer import AttnTrainer

    config = Config(model="AttnSeq", dataset="pattern", config_dict={
        "data_path": str(pattern_root), "epochs": 1, "state": "WARNING", "show_progress": False,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}})
    assert config["train_mode"] == "all_positions" and config["window_overlap"] == 0.5  # AttnSeq.yaml layered
    init_seed(config["seed"], config["reproducibility"])
    train, valid, _ = data_preparation(config, create_dataset(config))
    model = get_model(config["model"])(config, train.dataset)
    trainer_class = Trainer if use_recboles_trainer else get_trainer(config["MODEL_TYPE"], config["model"])
    assert use_recboles_trainer or trainer_class is AttnTrainer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_class(config, model).fit(train, valid, saved=False)
    fell_back = [w for w in caught if "trained on prefix rows" in str(w.message)]
    assert len(fell_back) == (1 if use_recboles_trainer else 0)  # never silently
