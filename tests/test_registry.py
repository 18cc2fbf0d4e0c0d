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
        paths = registry.model_properties_files(registry.get_model_class(name))
        assert [path.name for path in paths] == ["AttnSequentialRecommender.yaml", f"{name}.yaml"]
        assert all(path.is_file() and "recbole_attn" in str(path) for path in paths)


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


def _install_plugin(root, monkeypatch, module_code: str, entry_points: dict[str, str], dist: str = "toy_plugin",
                    files: dict[str, str] | None = None) -> None:
    """A plugin distribution ``dist`` made visible on ``sys.path``: package
    ``dist`` holding ``module_code`` (and ``files``), and ``entry_points``."""
    package = root / dist
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(module_code))
    for name, text in (files or {}).items():
        (package / name).write_text(text)
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[recbole_attn.models]\n{lines}")
    monkeypatch.syspath_prepend(str(root))
    registry.plugin_entry_points.cache_clear()


@pytest.fixture
def clean_registry():
    """Forget the test's plugins: entry points and imported modules."""
    yield
    for name in ("toy_plugin", "one_plugin", "two_plugin"):
        sys.modules.pop(name, None)
    registry.plugin_entry_points.cache_clear()


BROKEN_PLUGINS = """
from recbole.model.sequential_recommender.gru4rec import GRU4Rec

def not_a_class():
    pass

class Renamed(GRU4Rec):
    pass

class SASRec(GRU4Rec):
    pass
"""


@pytest.mark.parametrize("name, target, message", [
    ("Gone", "no_such_module_here:Gone", "model 'Gone': its plugin no_such_module_here:Gone cannot be loaded "
                                         "(ModuleNotFoundError: No module named 'no_such_module_here')"),
    ("Missing", "toy_plugin:Missing", "cannot be loaded (AttributeError: module 'toy_plugin' has no attribute"),
    ("not_a_class", "toy_plugin:not_a_class", "its plugin toy_plugin:not_a_class is not a RecBole model class"),
    ("Alias", "toy_plugin:Renamed", "is class Renamed; RecBole names a model by its class, so the entry point "
                                    "must be named Renamed"),
    ("SASRec", "toy_plugin:SASRec", "has the name of RecBole's own SASRec"),
])
def test_a_broken_plugin_is_one_line_naming_it(tmp_path, monkeypatch, clean_registry, name, target, message):
    _install_plugin(tmp_path, monkeypatch, BROKEN_PLUGINS, {name: target})
    with pytest.raises(UsageError) as caught:
        registry.get_model_class(name)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_two_plugins_of_one_name_are_refused(tmp_path, monkeypatch, clean_registry):
    code = "from recbole.model.sequential_recommender.gru4rec import GRU4Rec\n\nclass DupRec(GRU4Rec):\n    pass\n"
    _install_plugin(tmp_path, monkeypatch, code, {"DupRec": "one_plugin:DupRec"}, dist="one_plugin")
    _install_plugin(tmp_path, monkeypatch, code, {"DupRec": "two_plugin:DupRec"}, dist="two_plugin")
    with pytest.raises(UsageError, match=r"'DupRec' is declared by 2 plugins \(.*plugin:DupRec, .*plugin:DupRec\)"):
        registry.get_model_class("DupRec")


def test_one_target_declared_twice_is_one_model(tmp_path, monkeypatch, clean_registry):
    """Two distributions declaring the same target (a package renamed, its
    old distribution still installed) name one model, not two plugins."""
    code = "from recbole.model.sequential_recommender.gru4rec import GRU4Rec\n\nclass DupRec(GRU4Rec):\n    pass\n"
    _install_plugin(tmp_path, monkeypatch, code, {"DupRec": "one_plugin:DupRec"}, dist="one_plugin")
    _install_plugin(tmp_path, monkeypatch, "", {"DupRec": "one_plugin:DupRec"}, dist="two_plugin")
    assert len(registry.plugin_entry_points()["DupRec"]) == 1
    assert registry.get_model_class("DupRec").__name__ == "DupRec"


PLUGIN_FAMILY = """
from pathlib import Path
from recbole_attn.models.attnseq import AttnSeq
from recbole_attn.models.base import AttnSequentialRecommender

class SubSeq(AttnSeq):
    pass

class BareRec(AttnSequentialRecommender):
    properties_file = Path(__file__).with_name("BareRec.yaml")

class TypoRec(AttnSequentialRecommender):
    properties_file = Path(__file__).with_name("Typo.yaml")

class BrokenYamlRec(AttnSequentialRecommender):
    properties_file = Path(__file__).with_name("Broken.yaml")
"""


def test_a_plugin_gets_the_defaults_of_its_class_tree(tmp_path, monkeypatch, clean_registry, caplog):
    """A subclass of AttnSeq runs on AttnSeq's defaults; a plugin on the base
    class gets the base's options (losses, negatives, user token) as known
    keys with their defaults, though its own file names none of them."""
    _install_plugin(tmp_path, monkeypatch, PLUGIN_FAMILY, {name: f"toy_plugin:{name}" for name in (
        "SubSeq", "BareRec", "TypoRec", "BrokenYamlRec")},
        files={"BareRec.yaml": "hidden_size: 32\n", "Broken.yaml": "hidden_size: [32\n"})
    sub = AttnConfig("SubSeq", "ml-100k")
    assert (sub["hidden_size"], sub["n_layers"], sub["loss_type"], sub["window_overlap"]) == (64, 2, "CE", 0.5)
    bare = AttnConfig("BareRec", "ml-100k", cmd_args=["--num_negatives=64", "--strict_keys=True",
                                                      "--negative_sampler=popularity"])
    assert (bare["hidden_size"], bare["loss_type"], bare["num_negatives"]) == (32, "CE", 64)
    with pytest.raises(UsageError, match=r"TypoRec.properties_file .*Typo.yaml does not exist"):
        AttnConfig("TypoRec", "ml-100k")
    with pytest.raises(UsageError, match=r"config file '.*Broken.yaml' line 2"):
        AttnConfig("BrokenYamlRec", "ml-100k")


def test_a_plugins_own_option_choices_keep_the_base_classes():
    from recbole_attn.config import model_option_choices
    from recbole_attn.models.base import AttnSequentialRecommender

    class OwnChoices(AttnSequentialRecommender):
        option_choices = {"my_mode": ("fast", "slow")}  # replaces the attribute, not the base's check

    choices = model_option_choices(OwnChoices)
    assert choices["my_mode"] == ("fast", "slow") and choices["loss_type"] == ("CE", "BPR", "SSM")
