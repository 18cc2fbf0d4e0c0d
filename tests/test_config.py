from __future__ import annotations

import sys
from pathlib import Path

import pytest
import recbole

from recbole_attn.config import AttnConfig, parse_cmd_args
from recbole_attn.errors import UsageError


def test_project_defaults_apply_to_recbole_models():
    config = AttnConfig("SASRec", "ml-100k")
    assert config["valid_metric"] == "NDCG@10"
    assert config["topk"] == [5, 10, 20]
    assert config["metrics"] == ["Recall", "MRR", "NDCG", "Hit"]
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"
    assert config["n_layers"] == 2  # RecBole's own SASRec.yaml still applies


def test_the_sparse_property_file_raises_both_dropouts():
    """Shipped beside overall.yaml (installed too), read only when named."""
    from recbole_attn.config import project_properties_dir

    sparse = project_properties_dir() / "sparse.yaml"
    config = AttnConfig("AttnSeq", "ml-100k", config_file_list=[str(sparse)], config_dict={"strict_keys": True})
    assert config["hidden_dropout_prob"] == config["attn_dropout_prob"] == 0.5
    assert AttnConfig("AttnSeq", "ml-100k")["hidden_dropout_prob"] == 0.2


def test_precedence_cmd_over_dict_over_files_over_model_over_project(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("hidden_size: 32\nlearning_rate: 0.01\nepochs: 7\n")
    second.write_text("learning_rate: 0.02\n")
    config = AttnConfig(
        "AttnSeq", "ml-100k", [str(first), str(second)],
        config_dict={"learning_rate": 0.03, "epochs": 9}, cmd_args=["--epochs=11"],
    )
    assert config["hidden_size"] == 32  # file > model default (64)
    assert config["learning_rate"] == 0.03  # dict > files (later file > earlier)
    assert config["epochs"] == 11  # command line > dict
    assert config["train_batch_size"] == 32  # model default > project default (2048)
    assert config["stopping_step"] == 10  # project default > RecBole default
    later_file_wins = AttnConfig("AttnSeq", "ml-100k", [str(first), str(second)])
    assert later_file_wins["learning_rate"] == 0.02


def test_sys_argv_is_never_read(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=999", "--maxfail=1"])
    assert AttnConfig("AttnSeq", "ml-100k")["epochs"] != 999


def test_ml100k_defaults_to_the_copy_in_recbole_and_honours_data_path(tmp_path):
    embedded = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    assert Path(AttnConfig("AttnSeq", "ml-100k")["data_path"]).resolve() == embedded.resolve()
    mine = AttnConfig("AttnSeq", "ml-100k", config_dict={"data_path": str(tmp_path)})
    assert Path(mine["data_path"]) == tmp_path / "ml-100k"


def test_bpr_gets_a_negative_sampler():
    config = AttnConfig("AttnSeq", "ml-100k", cmd_args=["--loss_type=BPR"])
    assert config["train_neg_sample_args"]["distribution"] == "uniform"
    assert config["train_neg_sample_args"]["sample_num"] == 1


def test_device_can_be_forced():
    assert str(AttnConfig("AttnSeq", "ml-100k", cmd_args=["--device=cpu"])["device"]) == "cpu"


@pytest.mark.parametrize("args, needle", [
    (["--train_mode=everything"], "'everything'"),
    (["--filter_seen=maybe"], "maybe"),
    (["-epochs=3"], "-epochs=3"),
    (["--epochs=3", "--epochs=4"], "--epochs"),
])
def test_bad_options_are_named(args, needle):
    with pytest.raises(UsageError, match=needle):
        AttnConfig("AttnSeq", "ml-100k", cmd_args=args)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(UsageError, match="nope.yaml"):
        AttnConfig("AttnSeq", "ml-100k", [str(tmp_path / "nope.yaml")])


def test_parse_cmd_args_keeps_values_with_equals():
    assert parse_cmd_args(["--a=1", "--b=x=y"]) == {"a": "1", "b": "x=y"}
