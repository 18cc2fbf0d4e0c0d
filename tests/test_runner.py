"""End to end through the library function, the CLI and run.py itself."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import recbole_attn
from recbole_attn.cli import main
from tests.conftest import FAST, RUN_PY


def _result_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.exists() else []


@pytest.mark.slow
def test_run_py_trains_and_writes_results(ml100k_root, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(RUN_PY), "--model=AttnSeq", "--dataset=ml-100k", f"--data_path={ml100k_root}",
           "--epochs=2", f"--output_dir={out}", "--state=WARNING"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ndcg@10" in done.stdout and "best valid" in done.stdout
    [path] = _result_files(out)
    result = json.loads(path.read_text())
    assert result["model"] == "AttnSeq" and result["dataset"] == "ml-100k"
    assert result["dataset_stats"]["users"] == 61  # 60 users + padding id
    inter_file = Path(ml100k_root) / "ml-100k" / "ml-100k.inter"
    ratings = len(inter_file.read_text().splitlines()) - 1  # minus the header
    assert result["dataset_stats"]["interactions"] == ratings  # the ratings read, not RecBole's prefix rows
    assert result["dataset_stats"]["train_rows"] == ratings - 3 * 60  # each user: first item, valid, test
    assert set(result["test"]) >= {"ndcg@10", "hit@10", "recall@20", "mrr@5"}
    assert all(0 <= value <= 1 for value in result["test"].values())
    assert result["config"]["valid_metric"] == "NDCG@10"
    assert result["epochs_run"] == 2 and result["times"]["fit_seconds"] > 0
    assert {"recbole", "torch", "numpy"} <= set(result["versions"])
    assert not list(out.glob(".tmp-*"))


def test_recbole_baseline_runs_through_the_same_runner(pattern_root):
    result = recbole_attn.run("GRU4Rec", "pattern", config_dict={**FAST, "data_path": str(pattern_root)},
                              write_results=False)
    assert result["model"] == "GRU4Rec" and len(result["curve"]) == 2
    assert result["curve"][0]["train_seconds"] > 0 and "valid_score" in result["curve"][0]


def test_results_path_is_new_for_every_run(pattern_root, tmp_path):
    settings = {**FAST, "epochs": 1, "data_path": str(pattern_root), "output_dir": str(tmp_path / "r")}
    first = recbole_attn.run("AttnSeq", "pattern", config_dict=settings)
    second = recbole_attn.run("AttnSeq", "pattern", config_dict=settings)
    assert first["results_file"] != second["results_file"]
    assert len(_result_files(tmp_path / "r")) == 2


def _cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_unknown_model_exits_2_naming_choices(capsys, tmp_path):
    code, err = _cli(["--model=AttnSeqq", "--dataset=ml-100k", f"--output_dir={tmp_path}/o"], capsys)
    assert code == 2 and "'AttnSeqq'" in err and "Did you mean 'AttnSeq'?" in err and "SASRec" in err
    assert not _result_files(tmp_path / "o")


def test_dataset_without_files_exits_2(capsys, tmp_path):
    code, err = _cli(["--model=AttnSeq", "--dataset=nowhere", f"--data_path={tmp_path}"], capsys)
    assert code == 2 and "nowhere" in err and "nowhere.inter" in err


def test_atomic_file_without_item_column_exits_2(capsys, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken.inter").write_text("user_id:token\tmovie:token\ttimestamp:float\n1\t2\t3\n")
    code, err = _cli(["--model=AttnSeq", "--dataset=broken", f"--data_path={tmp_path}",
                      f"--output_dir={tmp_path}/o"], capsys)
    assert code == 2 and "'item_id'" in err and "user_id, movie, timestamp" in err
    assert not _result_files(tmp_path / "o")


@pytest.mark.parametrize("option, needle", [
    ("--hidden_size=-8", "hidden_size"),
    ("--n_heads=3", "n_heads"),
    ("--loss_type=XE", "'XE'"),
    ("--train_mode=sometimes", "train_mode"),
    ("--hidden_dropout_prob=1.5", "hidden_dropout_prob"),
])
def test_invalid_values_exit_2(option, needle, capsys, pattern_root, tmp_path):
    code, err = _cli(["--model=AttnSeq", "--dataset=pattern", f"--data_path={pattern_root}", option,
                      f"--output_dir={tmp_path}/o", "--epochs=1"], capsys)
    assert code == 2, err
    assert needle in err and err.count("\n") == 1  # one line, no traceback
    assert not _result_files(tmp_path / "o")


def test_missing_model_flag_exits_2(capsys):
    code, err = _cli(["--dataset=ml-100k"], capsys)
    assert code == 2 and "--model" in err


@pytest.mark.parametrize("model, batch_size", [("AttnSeq", 4), ("GRU4Rec", 64)])
def test_budget_cuts_the_running_epoch(pattern_root, model, batch_size):
    """A budget of 0 s: one batch, then the epoch ends, is validated and
    tested, and the run says it was cut (our trainer and RecBole's alike)."""
    settings = {**FAST, "epochs": 3, "time_budget": 0, "train_batch_size": batch_size,
                "data_path": str(pattern_root)}
    result = recbole_attn.run(model, "pattern", config_dict=settings, write_results=False)
    [entry] = result["curve"]
    assert entry["batches"] == 1 and 0 < entry["epoch_fraction"] < 1
    assert result["stopped_by_budget"] and result["epochs_run"] == 1
    assert result["epochs_trained"] == pytest.approx(entry["epoch_fraction"])
    assert "valid_score" in entry and result["best_epoch"] == 0 and 0 <= result["test"]["ndcg@10"] <= 1
    # seconds per whole epoch: the cut epoch's time scaled up by its fraction
    assert result["times"]["train_seconds_per_epoch"] == pytest.approx(entry["train_seconds"] / entry["epoch_fraction"])


@pytest.mark.parametrize("model, batch_size", [("AttnSeq", 4), ("GRU4Rec", 64)])
def test_budget_validates_an_epoch_that_eval_step_skips(pattern_root, model, batch_size):
    """eval_step 3 would validate after epoch 2 only; a budget that ends
    epoch 0 still leaves that epoch validated, saved and tested."""
    settings = {**FAST, "epochs": 3, "eval_step": 3, "time_budget": 0, "train_batch_size": batch_size,
                "data_path": str(pattern_root)}
    result = recbole_attn.run(model, "pattern", config_dict=settings, write_results=False)
    [entry] = result["curve"]
    assert result["stopped_by_budget"] and "valid_score" in entry and result["best_epoch"] == 0
    assert result["best_valid_score"] == pytest.approx(entry["valid_score"])
    assert 0 <= result["test"]["ndcg@10"] <= 1


def test_budget_leaves_whole_epochs_whole(pattern_root):
    result = recbole_attn.run("AttnSeq", "pattern", write_results=False,
                              config_dict={**FAST, "time_budget": 3600, "data_path": str(pattern_root)})
    assert not result["stopped_by_budget"] and result["epochs_trained"] == result["epochs_run"] == 2
    assert all(entry["epoch_fraction"] == 1.0 and "batches" not in entry for entry in result["curve"])


def test_a_run_logs_as_recbole_does_without_colour_codes_off_a_terminal(pattern_root, capfd):
    settings = [f"--{key}={value}" for key, value in {**FAST, "epochs": 1, "state": "INFO"}.items()]
    assert main(["--model=GRU4Rec", "--dataset=pattern", f"--data_path={pattern_root}", *settings]) == 0
    err = capfd.readouterr().err
    [log] = Path("log/GRU4Rec").glob("GRU4Rec-pattern-*.log")
    text = log.read_text()
    assert "General Hyper Parameters" in text and "The number of users: 301" in text  # config and data summaries
    assert "\x1b[" not in text and "\x1b[" not in err and "epoch 0 training" in err
    assert "General Hyper Parameters" not in err  # the summaries are for the file
    assert [p.name for p in Path("log_tensorboard").iterdir()] == [log.stem]  # named after model and dataset
    [results] = Path("results").glob("*.json")
    assert json.loads(results.read_text())["log_file"] == str(log)


@pytest.mark.slow
def test_recboles_warnings_are_silenced_at_their_source(pattern_root, tmp_path):
    """torch's "NumPy array is not writable" and the GradScaler deprecation,
    which a plain RecBole run prints (filtered in recbole_attn.compat)."""
    done = subprocess.run([sys.executable, str(RUN_PY), "--model=GRU4Rec", "--dataset=pattern",
                           f"--data_path={pattern_root}", "--epochs=1", "--state=WARNING", "--show_progress=False"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr[-2000:]
