"""Every bad input a user can give: exit 2, one line naming the bad value,
no results or checkpoint file, no traceback; values are data, never code.
The table here is the one in docs/reliability.md ("Bad input")."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import recbole_attn
from recbole_attn import checkpoint as checkpoint_module
from recbole_attn import runner
from recbole_attn.atomic import atomic_path
from recbole_attn.bench import suite
from recbole_attn.checkpoint import find_last_checkpoint, last_checkpoint_path, resume_obstacle, training_is_over
from recbole_attn.cli import main
from recbole_attn.config import AttnConfig, parse_cmd_args
from recbole_attn.data.checks import check_dataset_files
from recbole_attn.errors import UsageError
from recbole_attn.hooks import TrainerHook
from recbole_attn.results import strict_json
from recbole_attn.run_claim import claim, lock_path
from tests.test_run_claim import in_use
from recbole_attn.serialization import atomic_npz_save
from recbole_attn.trainer import NONFINITE_CHECK_STEPS, AttnTrainer, NonFiniteLossError
from recbole_attn.values import parse_value
from tests.conftest import FAST

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
EVIL = "__import__('os').system('touch marker')"


def _inter_rows(users: int = 30, per_user: int = 6) -> list[str]:
    return [f"{u}\t{(u + t) % 40 + 1}\t1\t{t}" for u in range(1, users + 1) for t in range(per_user)]


def _write_dataset(root: Path, name: str, lines: list[str], header: str = HEADER) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("\n".join([header, *lines]) + "\n")
    return root


def _good_args(root: Path, tmp: Path, extra: list[str] = ()) -> list[str]:
    """A run that trains (``test_a_good_row_of_the_table_trains``), its files
    under ``tmp``, with ``extra`` ``--key=value`` on top."""
    settings = {"model": "AttnSeq", "dataset": "edge", "data_path": root, **FAST, "epochs": 1,
                "output_dir": tmp / "results", "checkpoint_dir": tmp / "saved"}
    settings.pop("embedding_size")  # AttnSeq has none: no unknown-key warning line in these runs
    settings.update(parse_cmd_args(extra))
    return [f"--{key}={value}" for key, value in settings.items()]


def _attnseq_settings(checkpoint_dir: Path, **extra) -> dict:
    """FAST settings for AttnSeq (which has no ``embedding_size``: no
    unknown-key warning) with its checkpoints in ``checkpoint_dir``."""
    settings = {**FAST, "checkpoint_dir": str(checkpoint_dir), **extra}
    settings.pop("embedding_size")
    return settings


@pytest.fixture(scope="module")
def edge_root(tmp_path_factory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("edge"), "edge", _inter_rows())


def _bad_yaml(tmp: Path) -> list[str]:
    path = tmp / "bad.yaml"
    path.write_text("epochs: 3\nlearning_rate: [0.1\n")
    return [f"--config_files={path}"]


def _yaml_bomb(tmp: Path) -> list[str]:
    """Nine lines whose aliases expand to 9**9 values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return [f"--config_files={path}"]


def _under_a_file(key: str):
    def args(tmp: Path) -> list[str]:
        (tmp / "plain_file").write_text("x")
        return [f"--{key}={tmp / 'plain_file' / 'sub'}"]
    return args


def _data(lines: list[str], header: str = HEADER):
    def args(tmp: Path) -> list[str]:
        _write_dataset(tmp / "data", "broken", lines, header)
        return [f"--data_path={tmp / 'data'}", "--dataset=broken"]
    return args


_ROWS = _inter_rows()
#: (id, extra arguments (or a function of a scratch folder giving them), text the one line must hold)
BAD_INPUTS = [
    ("length 0", ["--MAX_ITEM_LIST_LENGTH=0"], "MAX_ITEM_LIST_LENGTH must be an integer >= 1, got 0"),
    ("negative lr", ["--learning_rate=-1"], "learning_rate must be a finite number > 0, got -1"),
    ("nan lr", ["--learning_rate=nan"], "learning_rate must be a finite number > 0, got nan"),
    ("train batch 0", ["--train_batch_size=0"], "train_batch_size must be an integer >= 1, got 0"),
    ("eval batch 0", ["--eval_batch_size=0"], "eval_batch_size must be an integer >= 1, got 0"),
    ("topk 0", ["--topk=0"], "topk must be an integer >= 1"),
    ("topk text", ["--topk=[5,'x']"], "topk must be an integer >= 1"),
    ("unknown metric", ["--metrics=['Foo']"], "unknown metric 'Foo' in metrics. Valid choices: AUC"),
    ("valid metric", ["--valid_metric=foo@10"], "valid_metric 'foo@10' is not among"),
    ("valid metric k", ["--valid_metric=NDCG@7"], "Valid choices: recall@5"),
    ("seed text", ["--seed=abc"], "seed must be an integer, got 'abc'"),
    ("epochs float", ["--epochs=1.5"], "epochs must be an integer >= 1, got 1.5"),
    ("epochs 0", ["--epochs=0"], "epochs must be an integer >= 1, got 0"),
    ("epochs -1", ["--epochs=-1"], "epochs must be an integer >= 1, got -1"),
    ("budget text", ["--time_budget=abc"], "time_budget must be a finite number >= 0 or None, got 'abc'"),
    ("budget -1", ["--time_budget=-1"], "time_budget must be a finite number >= 0 or None, got -1"),
    ("stopping -1", ["--stopping_step=-1"], "stopping_step must be an integer >= 1, got -1"),
    ("eval step 0", ["--eval_step=0"], "eval_step must be an integer >= 1, got 0"),
    ("plateau patience -1", ["--lr_plateau_patience=-1"], "lr_plateau_patience must be an integer >= 0, got -1"),
    ("plateau patience past stopping", ["--lr_plateau_patience=4", "--stopping_step=3"],
     "lr_plateau_patience must be 0 (off) to stopping_step=3, got 4"),
    ("plateau factor 1", ["--lr_plateau_factor=1"], "lr_plateau_factor must be a number in (0, 1), got 1"),
    ("plateau factor text", ["--lr_plateau_factor=half"], "lr_plateau_factor must be a number in (0, 1), got 'half'"),
    ("dropout 1.5", ["--hidden_dropout_prob=1.5"], "hidden_dropout_prob must be a number in [0, 1), got 1.5"),
    ("heads 0", ["--n_heads=0"], "n_heads must be an integer >= 1, got 0"),
    ("filter_seen", ["--filter_seen=maybe"], "filter_seen must be True or False, got 'maybe'"),
    ("compile", ["--compile=no"], "compile must be True or False, got 'no'"),
    ("selected twice", ["--selected_features=[genre,genre]"], "selected_features names 'genre' more than once"),
    ("state", ["--state=loud"], "unknown state 'loud'"),
    ("device", ["--device=abc"], "invalid device 'abc'"),
    ("train_mode", ["--train_mode=everything"], "unknown train_mode 'everything'"),
    ("eval_args", ["--eval_args=5"], "eval_args must be a dict"),
    ("eval_args mode", ["--eval_args={'mode':'uni'}"], "eval_args mode must be full, labeled, uniN or popN"),
    ("eval_args split", ["--eval_args={'split':{'RS':[0.8,0.1]}}"], "eval_args split must be"),
    ("eval_args valid_only", ["--eval_args={'split':{'LS':'valid_only'}}"],
     "{'LS': 'valid_and_test'} (a run validates every epoch and tests the best one), got {'LS': 'valid_only'}"),
    ("eval_args order", ["--eval_args={'order':'XX'}"], "unknown eval_args order 'XX'"),
    ("random order", ["--eval_args={'order':'RO'}"], "eval_args order 'RO' does not fit a sequential model"),
    ("eval_args part", ["--eval_args={'modes':'full'}"], "eval_args has unknown part 'modes'"),
    ("load_col", ["--load_col=5"], "load_col must be a dict or None, got 5"),
    ("clip_grad_norm", ["--clip_grad_norm=5"], "clip_grad_norm must be a dict or None, got 5"),
    ("num_negatives", ["--num_negatives=-3"], "num_negatives must be an integer >= 0, got -3"),
    ("interval", ["--user_inter_num_interval=abc"], "user_inter_num_interval must be an interval"),
    ("time field not loaded", ["--TIME_FIELD=rating"], "load_col leaves out 'rating' (TIME_FIELD)"),
    ("loss_type", ["--loss_type=MSE"], "unknown loss_type 'MSE'"),
    ("feature_fusion", ["--feature_fusion=mean"], "unknown feature_fusion 'mean'"),
    ("attention_type", ["--model=AttnRNN", "--attention_type=bahdanau"], "unknown attention_type 'bahdanau'"),
    ("window_overlap", ["--window_overlap=1"], "window_overlap must be a number in [0, 1), got 1"),
    ("pack_windows word", ["--pack_windows=yes"], "pack_windows must be True or False, got 'yes'"),
    ("pack_windows AttnRNN", ["--model=AttnRNN", "--pack_windows=True"],
     "pack_windows: True needs train_mode: all_positions and a model that takes packed rows (AttnSeq), not AttnRNN"),
    ("pack_windows readout", ["--pack_windows=True", "--readout=attention"],
     "pack_windows: True needs readout: last and no user_features"),
    ("all_positions SASRec", ["--model=SASRec", "--train_mode=all_positions"],
     "train_mode: all_positions is not available for SASRec; use train_mode: prefix"),
    ("user_features SASRec", ["--model=SASRec", "--user_features=[age]"],
     "user_features: SASRec does not take user features, got ['age']"),
    ("readout", ["--readout=pooled"], "unknown readout 'pooled'. Valid choices: attention, last"),
    ("item_init", ["--item_init=glove"], "unknown item_init 'glove'. Valid choices: random, word2vec"),
    ("item_init_freeze", ["--item_init_freeze=maybe"], "item_init_freeze must be True or False, got 'maybe'"),
    ("save_user_ranks", ["--save_user_ranks=2"], "save_user_ranks must be True or False, got 2"),
    ("freeze random items", ["--item_init_freeze=True"], "with item_init: random there are none"),
    ("user_features", ["--user_features=[age]"], "user_features: 'age' is not a user feature of edge"),
    ("user_features type", ["--user_features=5"], "user_features must be a list of field names, got 5"),
    ("user_features twice", ["--user_features=[age,age]"], "user_features names 'age' more than once"),
    ("nproc", ["--nproc=0"], "nproc must be an integer > 0, got 0"),
    ("teacher", ["--model=KD_DAGFM", f"--teacher={EVIL}"], "unknown teacher \"__import__('os')"),
    ("learner", ["--learner=adamm"], "unknown learner 'adamm'. Did you mean 'adam'?"),
    ("shuffle word", ["--shuffle=no"], "shuffle must be True or False, got 'no'"),
    ("amp word", ["--enable_amp=off"], "enable_amp must be True or False, got 'off'"),
    ("mixed metrics", ["--metrics=['Recall','AUC']", "--valid_metric=AUC"],
     "metrics mixes ranking metrics (Recall) and value metrics (AUC)"),
    ("value metric, full ranking", ["--metrics=AUC", "--valid_metric=AUC"],
     "metrics AUC score labeled pairs, not a full ranking"),
    ("device mps", ["--device=mps"], "invalid device 'mps': expected cpu, cuda or cuda:N"),
    ("device meta", ["--device=meta"], "invalid device 'meta'"),
    ("empty dataset", ["--dataset="], "dataset name '' must be a plain name"),
    ("typo, strict", ["--learning_rat=0.1", "--strict_keys=True"], "unknown option 'learning_rat'"),
    ("malformed yaml", _bad_yaml, "bad.yaml' line 3"),
    ("yaml aliases", _yaml_bomb, "bomb.yaml' line 2: aliases (*name) are not allowed in property files"),
    ("missing yaml", lambda tmp: [f"--config_files={tmp / 'nope.yaml'}"], "nope.yaml"),
    ("dataset path", ["--dataset=d/../../x"], "dataset name 'd/../../x' must be a plain name"),
    ("model path", ["--model=../AttnSeq"], "model name '../AttnSeq' must be a plain name"),
    ("unknown model", ["--model=AttnSeqq"], "Did you mean 'AttnSeq'?"),
    ("output_dir", _under_a_file("output_dir"), "output_dir"),
    ("checkpoint_dir", _under_a_file("checkpoint_dir"), "checkpoint_dir"),
    ("resume missing", lambda tmp: [f"--resume={tmp / 'gone-last.pth'}"], "gone-last.pth does not exist"),
    ("text timestamp", _data([*_ROWS[:7], "3\t5\t1\tyesterday", *_ROWS[7:]]),
     "column 'timestamp' line 9: 'yesterday' is not a number"),
    ("nan timestamp", _data([*_ROWS[:4], "1\t5\t1\tnan", *_ROWS[4:]]), "column 'timestamp': 1 rows have no value"),
    ("missing user", _data([*_ROWS, "\t5\t1\t3", "\t6\t1\t4"]), "column 'user_id': 2 rows have no value"),
    ("missing item", _data([*_ROWS[:2], "1\t\t1\t3", *_ROWS[2:]]), "(first at line 4)"),
    ("short row", _data([*_ROWS[:2], "1\t4", *_ROWS[2:]]), "column 'timestamp': 1 rows have no value"),
    ("long row", _data([*_ROWS[:2], "1\t4\t1\t5\t9\t9", *_ROWS[2:]]), "cannot be read"),
    ("header type", _data(_ROWS, "user_id:token\titem_id:tokn\trating:float\ttimestamp:float"),
     "column 'item_id:tokn' must be NAME:TYPE"),
    ("two per user", _data(_inter_rows(per_user=2)), "leaves validation empty"),
    ("one per user", _data(_inter_rows(per_user=1)), "leaves training empty"),
    ("float_seq text", lambda tmp: [*_data([f"{row}\t1.0 2.5" for row in _ROWS[:5]] + [f"{_ROWS[5]}\t1.0 abc"],
                                           f"{HEADER}\tvec:float_seq")(tmp), "--load_col=None"],
     "column 'vec' line 7: '1.0 abc' is not a list of numbers separated by ' '"),
    ("separator regex", lambda tmp: [*_data([row.replace("\t", "((") for row in _ROWS],
                                            HEADER.replace("\t", "(("))(tmp), "--field_separator=(("],
     "field_separator '((': RecBole reads a separator longer than one character as a regular expression"),
    ("no item column", _data(_ROWS, "user_id:token\tproduct:token\trating:float\ttimestamp:float"),
     "no 'item_id' column"),
]


@pytest.mark.parametrize("extra, needle", [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_exits_2_in_one_line_and_writes_nothing(extra, needle, edge_root, tmp_path, capsys):
    extra = extra(tmp_path) if callable(extra) else extra
    out, saved = tmp_path / "results", tmp_path / "saved"
    args = _good_args(edge_root, tmp_path, extra)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not saved.exists()
    assert not (tmp_path / "marker").exists()


def test_a_good_row_of_the_table_trains(edge_root, tmp_path, capsys):
    """The table's baseline arguments are good: each row fails for its own value."""
    out = tmp_path / "results"
    assert main(_good_args(edge_root, tmp_path)) == 0
    [results] = out.glob("*.json")
    json.loads(results.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in results JSON"))


def test_duplicated_rows_are_counted_in_a_warning(tmp_path, caplog):
    root = _write_dataset(tmp_path, "dups", [*_ROWS, _ROWS[0], _ROWS[1], _ROWS[1]])
    config = AttnConfig("AttnSeq", "dups", config_dict={"data_path": str(root)})
    with caplog.at_level(logging.WARNING):
        check_dataset_files(config)
    assert "3 rows repeat an earlier row exactly" in caplog.text


def test_load_col_star_loads_every_column_as_in_recbole(tmp_path):
    root = _write_dataset(tmp_path, "star", [*_ROWS[:3], "1\t4\t1\tyesterday", *_ROWS[3:]])
    config = AttnConfig("AttnSeq", "star", config_dict={"data_path": str(root), "load_col": {"inter": "*"}})
    with pytest.raises(UsageError, match="column 'timestamp' line 5: 'yesterday' is not a number"):
        check_dataset_files(config)


def test_an_unknown_key_warns_naming_the_closest_known_key(caplog):
    with caplog.at_level(logging.WARNING):
        config = AttnConfig("AttnSeq", "ml-100k", cmd_args=["--learning_rat=0.1"])
    assert "unknown option 'learning_rat'" in caplog.text and "did you mean 'learning_rate'" in caplog.text
    assert config["learning_rat"] == 0.1
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # keys a user YAML declares are known
        AttnConfig("AttnSeq", "ml-100k", cmd_args=["--learning_rate=0.1", "--n_layers=1"])
    assert "unknown option" not in caplog.text


def test_a_field_over_the_csv_limit_loads(tmp_path):
    lines = [*_ROWS[:1], f"1\t{'x' * 200_000}\t1\t1", *_ROWS[1:]]
    root = _write_dataset(tmp_path, "wide", lines)
    result = recbole_attn.run("AttnSeq", "wide", config_dict={**FAST, "epochs": 1, "data_path": str(root)},
                              write_results=False)
    assert result["dataset_stats"]["items"] == len({line.split("\t")[1] for line in lines}) + 1  # + padding


# ----------------------------------------------------------------------------- values are data

def test_a_command_line_value_is_never_run(tmp_path):
    config = AttnConfig("AttnSeq", "ml-100k", cmd_args=[f"--note={EVIL}", "--topk=[5,10]",
                                                        "--eval_args={'mode': 'full'}", "--time_budget=None"])
    assert config["note"] == EVIL and not (tmp_path / "marker").exists()
    assert config["topk"] == [5, 10] and config["time_budget"] is None
    assert config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}  # a partial eval_args keeps the project's split


def test_the_benchmark_never_runs_an_override(tmp_path):
    specs = suite.plan_rows("ml-100k", ["AttnSeq"], overrides=[f"--note={EVIL}"])
    suite.preflight(specs)
    assert f"--note={EVIL}" in specs[0]["cmd_args"] and not (tmp_path / "marker").exists()


def test_object_arrays_are_never_pickled_into_an_npz(tmp_path):
    with pytest.raises(ValueError, match="object arrays would need pickle to load: bad"):
        atomic_npz_save(tmp_path / "ranks.npz", good=np.arange(3), bad=np.array([{"a": 1}], dtype=object))
    assert not list(tmp_path.iterdir())


def test_yaml_tags_are_not_constructed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("note: !!python/object/apply:os.system ['touch marker']\n")
    with pytest.raises(UsageError, match="evil.yaml"):
        AttnConfig("AttnSeq", "ml-100k", [str(path)])
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("text, value", [
    ("5", 5), ("1e-3", 1e-3), ("[5, 10]", [5, 10]), ("{'mode': 'full'}", {"mode": "full"}), ("True", True),
    ("false", False), ("None", None), ("~", None), ("null", None), ("none", "none"), ("inf", math.inf),
    ("-inf", -math.inf), ("abc", "abc"), ("", ""), (EVIL, EVIL), ("(1,", "(1,"), ("[" * 200, "[" * 200),
    ("[age, gender]", ["age", "gender"]), ("[genre]", ["genre"]), ("[a, 3, true]", ["a", 3, True]),
    ("[]", []), ("[os.system]", ["os.system"]), ("[a b]", "[a b]"), ("[__import__('os')]", "[__import__('os')]"),
])
def test_parse_value_reads_literals_only(text, value):
    assert parse_value(text) == value


@pytest.fixture(scope="module")
def trained(edge_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    settings = _attnseq_settings(folder / "saved", epochs=1, data_path=str(edge_root))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return recbole_attn.run("AttnSeq", "edge", config_dict=settings, write_results=False)


def _edited_checkpoint(source: str, target: Path, **config_changes) -> Path:
    state = torch.load(source, weights_only=True)
    state["config"].update(config_changes)
    with atomic_path(target) as tmp:
        torch.save(state, tmp)
    return target


def test_an_evil_checkpoint_config_is_served_as_plain_data(trained, tmp_path, capsys):
    evil = _edited_checkpoint(trained["checkpoint"], tmp_path / "evil.pth", note=EVIL, checkpoint_dir=EVIL)
    torch.load(evil, weights_only=True)  # plain data: passes torch's safe loader
    assert main(["recommend", "--checkpoint", str(evil), "--user", "1"]) == 0
    assert "rank" in capsys.readouterr().out and not (tmp_path / "marker").exists()
    loaded = recbole_attn.load(evil)
    assert loaded.config["note"] == EVIL and not (tmp_path / "marker").exists()


def test_a_checkpoint_that_does_not_fit_its_config_exits_2(trained, tmp_path, capsys):
    bent = _edited_checkpoint(trained["checkpoint"], tmp_path / "bent.pth", hidden_size=48)
    assert main(["recommend", "--checkpoint", str(bent), "--user", "1"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this model's settings" in err and err.count("\n") == 1


@pytest.mark.parametrize("changes, needle", [
    ({"model": "KD_DAGFM", "teacher": EVIL}, "unknown teacher"),  # RecBole's KD_DAGFM eval()s it
    ({"data_path": None}, "names no data_path in its config"),
    ({"data_path": 5}, "names no data_path in its config"),
])
def test_a_checkpoint_config_that_would_run_code_or_names_no_data_exits_2(changes, needle, trained, tmp_path,
                                                                         capsys):
    bad = _edited_checkpoint(trained["checkpoint"], tmp_path / "bad.pth", **changes)
    assert main(["recommend", "--checkpoint", str(bad), "--user", "1"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and not (tmp_path / "marker").exists()


def test_serving_refuses_other_or_broken_data_of_the_same_name(trained, tmp_path, capsys):
    """``--data_path`` says where the data moved; data that changed is refused
    (here the same users and items, histories reversed: the weights would load
    and serve other items), and broken files are named, as in training."""
    reversed_rows = [f"{u}\t{(u + t) % 40 + 1}\t1\t{5 - t}" for u in range(1, 31) for t in range(6)]
    other = _write_dataset(tmp_path / "other", "edge", reversed_rows)
    args = ["recommend", "--checkpoint", trained["checkpoint"], "--user", "1"]
    assert main([*args, "--data_path", str(other)]) == 2
    assert "was trained on other data than" in capsys.readouterr().err
    broken = _write_dataset(tmp_path / "broken", "edge", [*_ROWS[:3], "1\t5\t1\tyesterday", *_ROWS[3:]])
    assert main([*args, "--data_path", str(broken)]) == 2
    assert "'yesterday' is not a number" in capsys.readouterr().err
    assert main([*args, "--data_path", str(Path(trained["checkpoint"]).parent.parent)]) == 2  # no edge/ there
    capsys.readouterr()


def test_a_checkpoint_with_a_bad_stored_value_exits_2(trained, tmp_path, capsys):
    bad = _edited_checkpoint(trained["checkpoint"], tmp_path / "bad.pth", epochs=0)
    assert main(["recommend", "--checkpoint", str(bad), "--user", "1"]) == 2
    assert "epochs must be an integer >= 1, got 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resume matches its run

class PlainConfig(dict):
    """Just enough of a config for :func:`find_last_checkpoint`."""

    @property
    def final_config_dict(self) -> dict:
        return dict(self)


def test_resume_auto_names_the_unreadable_checkpoints_it_skips(tmp_path, caplog):
    (tmp_path / "AttnSeq-broken-last.pth").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        assert find_last_checkpoint(tmp_path, PlainConfig(model="AttnSeq", dataset="edge")) is None
    assert "skipping" in caplog.text and "AttnSeq-broken-last.pth" in caplog.text

def test_resume_skips_or_refuses_a_checkpoint_of_other_settings(trained, edge_root, tmp_path, caplog):
    saved = Path(trained["last_checkpoint"]).parent
    base = {**FAST, "epochs": 1, "data_path": str(edge_root), "checkpoint_dir": str(saved)}
    base.pop("embedding_size")
    with caplog.at_level(logging.WARNING):
        other = recbole_attn.run("AttnSeq", "edge", config_dict={**base, "learning_rate": 0.01, "resume": "auto"},
                                 write_results=False)
    assert other["resumed_from"] is None and "skipping" in caplog.text and "learning_rate: 0.001 -> 0.01" in caplog.text
    with pytest.raises(UsageError, match=r"other settings \(learning_rate: 0.001 -> 0.01\)"):
        recbole_attn.run("AttnSeq", "edge", write_results=False,
                         config_dict={**base, "learning_rate": 0.01, "resume": trained["last_checkpoint"]})
    same = recbole_attn.run("AttnSeq", "edge", config_dict={**base, "epochs": 2, "resume": "auto"},
                            write_results=False)
    assert same["resumed_from"] == trained["last_checkpoint"]  # epochs may change on resume


def test_a_checkpoint_of_another_run_is_refused_before_anything_is_written(trained, edge_root, tmp_path, capsys):
    args = _good_args(edge_root, tmp_path, ["--learning_rate=0.01", f"--resume={trained['last_checkpoint']}"])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "other settings (learning_rate: 0.001 -> 0.01)" in err and err.count("\n") == 1
    assert not (tmp_path / "saved").exists() and not (tmp_path / "results").exists()
    assert not (tmp_path / "log").exists()  # the refused run's log file is removed, and its folders


def test_resume_goes_on_past_a_smaller_cap_and_never_from_past_the_cap(edge_root, tmp_path, caplog, monkeypatch):
    """A run the epoch cap ended goes on under a larger cap; a checkpoint
    trained past the cap is never tested as if it were this run's."""
    monkeypatch.chdir(tmp_path)
    settings = _attnseq_settings(tmp_path / "saved", data_path=str(edge_root), stopping_step=5)
    capped = recbole_attn.run("AttnSeq", "edge", config_dict={**settings, "epochs": 1}, write_results=False)
    longer = recbole_attn.run("AttnSeq", "edge", config_dict={**settings, "epochs": 2, "resume": "auto"},
                              write_results=False)
    assert longer["resumed_from"] == capped["last_checkpoint"] and longer["epochs_run"] == 2
    with caplog.at_level(logging.WARNING):
        shorter = recbole_attn.run("AttnSeq", "edge", config_dict={**settings, "epochs": 1, "resume": "auto"},
                                   write_results=False)
    assert shorter["resumed_from"] is None and "it has trained 2 epochs, more than epochs=1" in caplog.text
    with pytest.raises(UsageError, match="cannot go on from checkpoint .* more than epochs=1"):
        recbole_attn.run("AttnSeq", "edge", write_results=False,
                         config_dict={**settings, "epochs": 1, "resume": capped["last_checkpoint"]})


def test_resume_reads_its_checkpoint_once(edge_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = _attnseq_settings(tmp_path / "saved", data_path=str(edge_root))
    first = recbole_attn.run("AttnSeq", "edge", config_dict={**settings, "epochs": 1}, write_results=False)
    reads: list[str] = []
    real_load = torch.load

    def counted_load(path, *args, **kwargs):
        reads.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted_load)
    for epochs, resume in ((2, first["last_checkpoint"]), (3, "auto")):
        reads.clear()
        resumed = recbole_attn.run("AttnSeq", "edge", config_dict={**settings, "epochs": epochs, "resume": resume},
                                   write_results=False)
        assert resumed["resumed_from"] == first["last_checkpoint"]
        assert reads.count(first["last_checkpoint"]) == 1


class _LockSeen(TrainerHook):
    """Records, after each training epoch, whether the run's last checkpoint is claimed."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def after_train_epoch(self, trainer, epoch_idx, train_data, loss) -> None:
        self.seen.append(in_use(last_checkpoint_path(trainer.saved_model_file)))


def test_a_run_holds_its_last_checkpoint_until_it_has_tested(edge_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = _attnseq_settings(tmp_path / "saved", epochs=2, data_path=str(edge_root))
    seen = _LockSeen()
    real_test = runner._test

    def test_seeing_the_lock(trainer, test_data):
        seen.seen.append(in_use(last_checkpoint_path(trainer.saved_model_file)))
        return real_test(trainer, test_data)

    monkeypatch.setattr(runner, "_test", test_seeing_the_lock)
    first = recbole_attn.run("AttnSeq", "edge", config_dict=settings, write_results=False, hooks=[seen])
    assert seen.seen == [True, True, True]  # both epochs and the test
    assert not in_use(first["last_checkpoint"]) and not os.path.exists(lock_path(first["last_checkpoint"]))
    resumed_seen = _LockSeen()
    resumed = recbole_attn.run("AttnSeq", "edge", config_dict={**settings, "epochs": 3, "resume": "auto"},
                               write_results=False, hooks=[resumed_seen])
    assert resumed["resumed_from"] == first["last_checkpoint"] and resumed_seen.seen == [True]
    assert not os.path.exists(lock_path(first["last_checkpoint"]))


def test_resume_skips_or_refuses_a_checkpoint_another_run_is_training_from(edge_root, tmp_path, monkeypatch,
                                                                           caplog):
    """Two runs going on from one last checkpoint at once would write over
    each other's checkpoints and test each other's best model."""
    monkeypatch.chdir(tmp_path)
    settings = _attnseq_settings(tmp_path / "saved", epochs=1, data_path=str(edge_root))
    first = recbole_attn.run("AttnSeq", "edge", config_dict=settings, write_results=False)
    longer = {**settings, "epochs": 2}
    with claim(first["last_checkpoint"]) as running:
        assert running is not None
        with caplog.at_level(logging.WARNING):
            fresh = recbole_attn.run("AttnSeq", "edge", config_dict={**longer, "resume": "auto"}, write_results=False)
        assert fresh["resumed_from"] is None and "another run is training from it" in caplog.text
        with pytest.raises(UsageError, match="is in use: another run is training from it"):
            recbole_attn.run("AttnSeq", "edge", config_dict={**longer, "resume": first["last_checkpoint"]},
                             write_results=False)
    again = recbole_attn.run("AttnSeq", "edge", config_dict={**longer, "resume": first["last_checkpoint"]},
                             write_results=False)
    assert again["resumed_from"] == first["last_checkpoint"]


def test_a_resumed_checkpoint_is_claimed_before_it_is_read(edge_root, tmp_path, monkeypatch):
    """Read before the claim, the state could be an older copy of what the
    run that held it wrote since, and the resumed run would write over it."""
    monkeypatch.chdir(tmp_path)
    settings = _attnseq_settings(tmp_path / "saved", epochs=1, data_path=str(edge_root))
    first = recbole_attn.run("AttnSeq", "edge", config_dict=settings, write_results=False)
    claimed_when_read: list[bool] = []
    real_load = checkpoint_module.load_checkpoint

    def load_seeing_the_claim(path, *args, **kwargs):
        claimed_when_read.append(in_use(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", load_seeing_the_claim)
    monkeypatch.setattr(runner, "load_checkpoint", load_seeing_the_claim)
    for resume in (first["last_checkpoint"], "auto"):
        claimed_when_read.clear()
        recbole_attn.run("AttnSeq", "edge", config_dict={**settings, "epochs": 2, "resume": resume},
                         write_results=False)
        assert claimed_when_read and all(claimed_when_read), resume


def test_resume_skips_or_refuses_a_checkpoint_of_other_data_of_the_same_name(edge_root, tmp_path, caplog):
    """``data_path`` is not a training setting (a data folder may move), so
    the checkpoint's data fingerprint must tell another ``edge`` apart: here
    the same users and items, each history in reverse order, so that the
    weights would load."""
    reversed_rows = [f"{u}\t{(u + t) % 40 + 1}\t1\t{5 - t}" for u in range(1, 31) for t in range(6)]
    other_root = _write_dataset(tmp_path / "other", "edge", reversed_rows)
    settings = _attnseq_settings(tmp_path / "saved", epochs=1)
    trained = recbole_attn.run("AttnSeq", "edge", config_dict={**settings, "data_path": str(edge_root)},
                               write_results=False)
    on_other = {**settings, "data_path": str(other_root), "epochs": 2}
    with caplog.at_level(logging.WARNING):
        fresh = recbole_attn.run("AttnSeq", "edge", config_dict={**on_other, "resume": "auto"}, write_results=False)
    assert fresh["resumed_from"] is None and "it was trained on other data named 'edge'" in caplog.text
    with pytest.raises(UsageError, match="was trained on other data named 'edge'"):
        recbole_attn.run("AttnSeq", "edge", write_results=False,
                         config_dict={**on_other, "resume": trained["last_checkpoint"]})
    same = recbole_attn.run("AttnSeq", "edge", write_results=False,
                            config_dict={**settings, "data_path": str(edge_root), "epochs": 2, "resume": "auto"})
    assert same["resumed_from"] == trained["last_checkpoint"]


def _last_state(epoch: int, curve: list[dict], time_budget: float | None, cur_step: int = 0) -> dict:
    return {"epoch": epoch, "cur_step": cur_step, "config": {"time_budget": time_budget}, "extra": {"curve": curve}}


def test_resume_refuses_a_checkpoint_that_fitted_for_longer_than_this_runs_budget():
    whole = [{"epoch": 0, "train_seconds": 400.0, "valid_seconds": 10.0, "elapsed_seconds": 410.0},
             {"epoch": 1, "train_seconds": 400.0, "valid_seconds": 10.0, "elapsed_seconds": 820.0}]
    uncapped = _last_state(1, whole, None)
    assert resume_obstacle(uncapped, epochs=45, time_budget=None) is None
    assert resume_obstacle(uncapped, epochs=45, time_budget=1000) is None  # 820 s spent: within it
    assert resume_obstacle(uncapped, epochs=45, time_budget=600) == "it has fitted for 820 s, more than time_budget=600"
    cut = _last_state(1, [whole[0], {**whole[1], "epoch_fraction": 0.4}], 800)
    assert resume_obstacle(cut, epochs=45, time_budget=800) is None  # the same run: its budget is spent, it tests
    assert resume_obstacle(cut, epochs=45, time_budget=None) is None  # more time: it trains on


def test_training_is_over_after_early_stopping_or_at_the_cap_only():
    assert training_is_over(_last_state(9, [], None, cur_step=3), epochs=45, stopping_step=2)  # early-stopped
    assert not training_is_over(_last_state(44, [], None, cur_step=1), epochs=200, stopping_step=2)  # cap 45 ended it
    assert training_is_over(_last_state(44, [], None, cur_step=1), epochs=45, stopping_step=2)


# ----------------------------------------------------------------------------- results

def test_results_are_strict_json_and_never_overwrite(tmp_path):
    assert strict_json({"best": -math.inf, "curve": [math.nan, 1.5]}) == strict_json({"best": None,
                                                                                      "curve": [None, 1.5]})
    target = tmp_path / "r.json"
    with atomic_path(target, exclusive=True) as tmp:
        Path(tmp).write_text("{}")
    with pytest.raises(FileExistsError), atomic_path(target, exclusive=True) as tmp:
        Path(tmp).write_text("[1]")
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


# ----------------------------------------------------------------------------- properties

_OPTION_KEYS = ["epochs", "learning_rate", "topk", "metrics", "valid_metric", "seed", "time_budget",
                "MAX_ITEM_LIST_LENGTH", "train_batch_size", "eval_args", "filter_seen", "window_overlap",
                "hidden_dropout_prob", "state", "eval_item_chunk_size", "nproc", "train_mode", "loss_type"]
_VALUE_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "-1", "1.5", "nan", "inf", "None", "[]", "[0]", "{}", "{'mode': 5}", "[5,'x']",
                     "NDCG@10", "['NDCG']", "True", "'a'", "(1,)", "1e400", "-0.0"]),
    st.integers(-3, 3).map(str),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(_OPTION_KEYS), text=_VALUE_TEXT)
def test_any_option_value_gives_a_config_or_a_usage_error(key, text):
    try:
        AttnConfig("AttnSeq", "ml-100k", cmd_args=[f"--{key}={text}"])
    except UsageError as error:
        assert "\n" not in str(error)


_CELL = st.one_of(st.text(alphabet="ab1 .-\t\"'", max_size=5), st.sampled_from(["", "nan", "1", "2.5", "x"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.lists(st.sampled_from(["user_id:token", "item_id:token", "timestamp:float", "rating:float",
                                        "tags:token_seq", "x", "item_id:int", ""]), min_size=1, max_size=5),
       rows=st.lists(st.lists(_CELL, min_size=0, max_size=6), max_size=8))
def test_any_atomic_file_passes_the_checks_or_is_a_usage_error(header, rows, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    lines = ["\t".join(cells) for cells in rows]
    _write_dataset(root, "fuzz", lines, "\t".join(header))
    try:
        config = AttnConfig("AttnSeq", "fuzz", config_dict={"data_path": str(root)})
        check_dataset_files(config)
    except UsageError as error:
        assert "\n" not in str(error)


# ----------------------------------------------------------------------------- divergence

def test_a_nan_loss_stops_training_within_the_check_interval(pattern_root, monkeypatch):
    steps = []
    original = AttnTrainer._train_epoch

    def diverging_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        def nan_loss(batch):
            steps.append(epoch_idx)
            return self.model.calculate_loss(batch) * float("nan")
        return original(self, train_data, epoch_idx, nan_loss, show_progress)

    monkeypatch.setattr(AttnTrainer, "_train_epoch", diverging_epoch)
    settings = {**FAST, "epochs": 1, "data_path": str(pattern_root), "train_batch_size": 4}
    with pytest.raises(NonFiniteLossError, match=f"epoch 0 by step {NONFINITE_CHECK_STEPS}"):
        recbole_attn.run("AttnSeq", "pattern", config_dict=settings, write_results=False)
    assert len(steps) == NONFINITE_CHECK_STEPS  # an epoch here has 75 steps


def test_recboles_interval_forms_are_accepted():
    config = AttnConfig("AttnSeq", "ml-100k", cmd_args=["--user_inter_num_interval=(0,1];[3,inf)"])
    assert config["user_inter_num_interval"] == "(0,1];[3,inf)"


def test_explain_refuses_one_string_as_a_history(trained):
    loaded = recbole_attn.load(trained["checkpoint"])
    with pytest.raises(UsageError, match="history must be a list of item tokens"):
        recbole_attn.explain(loaded, history="50")
