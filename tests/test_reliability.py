"""Reliability: plain checkpoints, exact resume after SIGKILL, unreadable
checkpoints, same-seed reproducibility, bad data and faults (NaN loss, full
disk). All on the tiny pattern dataset, CPU, one thread."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from recbole.trainer import Trainer

import recbole_attn
from recbole_attn import results as results_module
from recbole_attn.budget import BudgetExhausted, EpochClock, validate_last_epoch
from recbole_attn.checkpoint import load_checkpoint
from recbole_attn.cli import main
from recbole_attn.serialization import atomic_torch_save
from recbole_attn.errors import UsageError
from recbole_attn.trainer import AttnTrainer, NonFiniteLossError
from tests.conftest import FAST, RUN_PY

#: Long enough to be killed mid-run, short enough for a test.
RESUMABLE = {**FAST, "epochs": 5, "stopping_step": 10, "train_batch_size": 32}


def _settings(root: Path, **more) -> dict:
    return {**RESUMABLE, "data_path": str(root), **more}


def _same_outcome(first: dict, second: dict) -> None:
    assert first["best_epoch"] == second["best_epoch"]
    assert first["test"] == second["test"]
    assert first["best_valid"] == second["best_valid"]
    assert [e["valid_result"] for e in first["curve"]] == [e["valid_result"] for e in second["curve"]]


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("model", ["AttnSeq", "GRU4Rec"])  # our trainer and RecBole's
def test_last_and_best_checkpoints_are_plain_data(model, pattern_root):
    settings = _settings(pattern_root, epochs=2, train_batch_size=512)
    result = recbole_attn.run(model, "pattern", config_dict=settings, write_results=False)
    last = torch.load(result["last_checkpoint"], weights_only=True)
    assert last["epoch"] == 1 and last["finished"] and last["best_model_file"] == result["checkpoint"]
    assert isinstance(last["config"], dict) and last["config"]["model"] == model
    assert set(last["rng"]) == {"torch", "cuda", "numpy", "random"} and last["loader_rng"] is not None
    assert last["best_valid_result"] == result["best_valid"]
    assert len(last["extra"]["curve"]) == 2
    torch.load(result["checkpoint"], weights_only=True)  # the best model, too


def _wait_for_last_checkpoint(child: subprocess.Popen, folder: Path, min_epoch: int, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.glob("*-last.pth"):
            try:
                if torch.load(path, weights_only=True)["epoch"] >= min_epoch:
                    return path
            except Exception:  # being renamed into place right now
                pass
        if child.poll() is not None:
            raise AssertionError(f"run.py ended (code {child.returncode}) before epoch {min_epoch}: "
                                 f"{child.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError("no last checkpoint appeared")


@pytest.mark.slow
def test_resume_after_sigkill_ends_like_an_uninterrupted_run(pattern_root, tmp_path):
    settings = _settings(pattern_root)
    saved = tmp_path / "killed"
    args = [f"--{key}={value}" for key, value in settings.items()]
    child = subprocess.Popen(
        [sys.executable, str(RUN_PY), "--model=AttnSeq", "--dataset=pattern", *args,
         f"--checkpoint_dir={saved}", f"--output_dir={tmp_path / 'r'}"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        last = _wait_for_last_checkpoint(child, saved, min_epoch=1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    state = load_checkpoint(last)
    assert not state["finished"] and state["epoch"] < settings["epochs"] - 1  # really cut short

    resumed = recbole_attn.run("AttnSeq", "pattern", config_dict=settings, cmd_args=[f"--resume={last}"],
                               write_results=False)
    uninterrupted = recbole_attn.run("AttnSeq", "pattern", config_dict=settings, write_results=False)
    assert resumed["resumed_from"] == str(last) and resumed["epochs_run"] == settings["epochs"]
    _same_outcome(resumed, uninterrupted)


class Killed(Exception):
    """Stands in for SIGKILL inside the test process."""


def _killed_then_resumed(settings: dict, monkeypatch, train_epoch) -> dict:
    """GRU4Rec trained with ``train_epoch`` (which raises :class:`Killed`
    part way) in place of RecBole's, then resumed with ``resume=auto``."""
    original = Trainer._train_epoch

    def patched(self, *args, **kwargs):
        return train_epoch(original, self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", patched)
    with pytest.raises(Killed):
        recbole_attn.run("GRU4Rec", "pattern", config_dict=settings, write_results=False)
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    return recbole_attn.run("GRU4Rec", "pattern", config_dict={**settings, "resume": "auto"}, write_results=False)


def test_resume_restores_recbole_loader_shuffling(pattern_root, tmp_path, monkeypatch):
    """GRU4Rec trains on RecBole's prefix loader, shuffled by the loader's own
    torch.Generator (not the global RNG): resume must put that back too."""
    settings = _settings(pattern_root, epochs=4, train_batch_size=512, checkpoint_dir=str(tmp_path / "s"))
    uninterrupted = recbole_attn.run("GRU4Rec", "pattern", config_dict=settings, write_results=False)

    def dies_in_epoch_2(original, self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 2:
            torch.rand(7), np.random.rand(3)  # a half-done epoch draws random numbers
            raise Killed
        return original(self, train_data, epoch_idx, *args, **kwargs)

    resumed = _killed_then_resumed(settings, monkeypatch, dies_in_epoch_2)
    assert resumed["resumed_from"] and load_checkpoint(resumed["resumed_from"])["finished"]
    _same_outcome(resumed, uninterrupted)


def test_a_resumed_run_counts_the_time_of_the_epochs_before_it(pattern_root, tmp_path, monkeypatch):
    """Seconds to the best epoch and fit seconds cover the whole run, so a
    row trained over several sittings reads like an uninterrupted one."""
    settings = _settings(pattern_root, epochs=4, train_batch_size=512, checkpoint_dir=str(tmp_path / "s"))

    def slow_then_dies(original, self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 2:
            raise Killed
        time.sleep(0.5)  # the first process's epochs are slow: 1 s of its fitting in all
        return original(self, train_data, epoch_idx, *args, **kwargs)

    resumed = _killed_then_resumed(settings, monkeypatch, slow_then_dies)
    elapsed = [entry["elapsed_seconds"] for entry in resumed["curve"]]
    assert len(elapsed) == 4 and elapsed[1] >= 1.0
    assert elapsed == sorted(elapsed)  # the resumed epochs go on from the first process's clock
    assert resumed["times"]["fit_seconds"] >= elapsed[-1] - 0.5 >= 0.5


def test_a_resumed_run_spends_what_is_left_of_its_budget():
    clock = EpochClock(budget=10.0)
    clock.carry_on([{"epoch": 0, "train_seconds": 6.0, "valid_seconds": 1.0, "elapsed_seconds": 7.5},
                    {"epoch": 1, "train_seconds": 3.0}])  # no validation: its seconds still count
    assert clock.carried_seconds == pytest.approx(10.5)
    with pytest.raises(BudgetExhausted):
        clock.before_train_epoch(trainer=None, epoch_idx=2)
    roomy = EpochClock(budget=60.0)
    roomy.carry_on(clock.curve)
    roomy.before_train_epoch(trainer=None, epoch_idx=2)  # 49.5 s left: trains on


def test_best_epoch_is_the_model_recbole_keeps_on_a_tie():
    """RecBole saves a new best model on ``>=`` (scores rounded to 4
    decimals), so of two tied epochs the later one is tested."""
    clock = EpochClock()
    clock.curve = [{"epoch": epoch, "valid_score": score} for epoch, score in enumerate([0.1, 0.2, 0.2, 0.15])]
    assert clock.best_epoch(bigger_is_better=True) == 2
    assert clock.best_epoch(bigger_is_better=False) == 0
    clock.curve.append({"epoch": 4, "train_seconds": 1.0})  # cut by the budget, not validated
    assert clock.best_epoch(bigger_is_better=True) == 2


def test_a_budget_cut_epoch_that_ties_the_best_becomes_the_tested_model():
    saved = []
    tied = (0.2, {"ndcg@10": 0.2})
    trainer = SimpleNamespace(eval_step=2, best_valid_score=0.2, best_valid_result={"ndcg@10": 0.2},
                              valid_metric_bigger=True, _valid_epoch=lambda data, show_progress: tied,
                              _save_checkpoint=saved.append)
    clock = EpochClock()
    clock.curve = [{"epoch": 0, "valid_score": 0.2}, {"epoch": 1, "train_seconds": 1.0, "epoch_fraction": 0.5}]
    validate_last_epoch(trainer, valid_data=[1], clock=clock)
    assert saved == [1]


def _checkpoint_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.pth"
    atomic_torch_save({"config": {"model": "AttnSeq"}, "epoch": 0, "state_dict": {"w": torch.ones(64, 64)}}, path)
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing", "not_a_checkpoint", "pickled_object"])
def test_unreadable_checkpoint_is_a_usage_error_naming_it(damage, tmp_path):
    path = _checkpoint_file(tmp_path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing":
        path.unlink()
    elif damage == "not_a_checkpoint":
        torch.save([1, 2, 3], path)
    else:  # an arbitrary pickled object: refused by weights_only=True
        torch.save({"config": Path("x"), "epoch": 0, "state_dict": {}}, path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "\x1b" not in message
    assert "trust the source" not in message  # torch's advice to load unsafely is not passed on
    if damage in ("truncated", "garbage", "empty"):
        assert "corrupt or truncated" in message


def test_resume_from_a_truncated_checkpoint_exits_2_in_one_line(pattern_root, tmp_path, capsys):
    path = _checkpoint_file(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    code = main(["--model=AttnSeq", "--dataset=pattern", f"--data_path={pattern_root}", "--epochs=1",
                 f"--resume={path}", f"--output_dir={tmp_path / 'r'}", "--state=WARNING"])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and "corrupt or truncated" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- reproducibility

def test_same_seed_gives_identical_metrics_on_cpu(pattern_root):
    first, second = (recbole_attn.run("AttnSeq", "pattern", config_dict=_settings(pattern_root, epochs=2),
                                      write_results=False) for _ in range(2))
    _same_outcome(first, second)


# ----------------------------------------------------------------------------- bad data

def test_users_with_a_single_interaction_do_not_break_a_run(pattern_root, tmp_path):
    folder = tmp_path / "lonely"
    folder.mkdir()
    lines = (pattern_root / "pattern" / "pattern.inter").read_text().splitlines()
    singles = [f"{1000 + user}\t{user % 60 + 1}\t1\t0" for user in range(25)]
    (folder / "lonely.inter").write_text("\n".join(lines + singles) + "\n")
    result = recbole_attn.run("AttnSeq", "lonely", config_dict=_settings(tmp_path, epochs=1), write_results=False)
    assert result["dataset_stats"]["users"] == 300 + 25 + 1
    assert result["dataset_stats"]["test_users"] == 300  # one interaction: nothing to test
    assert all(np.isfinite(value) for value in result["test"].values())


def test_dataset_emptied_by_filtering_exits_2_naming_the_filter(pattern_root, tmp_path, capsys):
    with pytest.raises(UsageError, match="no interactions left after filtering.*user_inter_num_interval"):
        settings = _settings(pattern_root, user_inter_num_interval="[1000,inf)")
        recbole_attn.run("AttnSeq", "pattern", config_dict=settings)
    code = main(["--model=AttnSeq", "--dataset=pattern", f"--data_path={pattern_root}",
                 "--user_inter_num_interval=[1000,inf)", f"--output_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 2 and "'pattern'" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- faults

def _diverge_in_epoch_2(monkeypatch, trainer_class):
    original = trainer_class._train_epoch

    def train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if epoch_idx == 2:
            loss_func = lambda batch: self.model.calculate_loss(batch) * float("nan")  # noqa: E731
        return original(self, train_data, epoch_idx, loss_func, show_progress)

    monkeypatch.setattr(trainer_class, "_train_epoch", train_epoch)


@pytest.mark.parametrize("model, trainer_class", [("AttnSeq", AttnTrainer), ("GRU4Rec", Trainer)])
def test_nan_loss_keeps_the_last_good_checkpoint(model, trainer_class, pattern_root, monkeypatch):
    _diverge_in_epoch_2(monkeypatch, trainer_class)
    with pytest.raises(NonFiniteLossError) as info:
        recbole_attn.run(model, "pattern", config_dict=_settings(pattern_root, epochs=3, train_batch_size=512),
                         write_results=False)
    message = str(info.value)
    assert "epoch 2" in message and "last good checkpoint (epoch 1)" in message and "\n" not in message
    path = message.split("is intact: ")[1].split(" ")[0]
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and all(torch.isfinite(p).all() for p in state["state_dict"].values())


def test_nan_loss_exits_1_from_the_cli(pattern_root, tmp_path, monkeypatch, capsys):
    _diverge_in_epoch_2(monkeypatch, AttnTrainer)
    args = [f"--{key}={value}" for key, value in _settings(pattern_root, epochs=3).items()]
    code = main(["--model=AttnSeq", "--dataset=pattern", *args, f"--output_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 1 and "last good checkpoint (epoch 1) is intact" in err
    assert err.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "r").exists()


def _disk_full_for(suffix: str, monkeypatch) -> None:
    """The final rename (or, for files created exclusively, link) into ``*suffix`` fails."""
    for name in ("replace", "link"):
        real = getattr(os, name)

        def fail_into(src, dst, *args, real=real, **kwargs):
            if str(dst).endswith(suffix):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, fail_into)


def test_full_disk_while_writing_results_is_clear_and_harmless(pattern_root, tmp_path, monkeypatch):
    out = tmp_path / "r"
    earlier = results_module.write_json_atomic(out / "earlier.json", {"test": {"ndcg@10": 0.5}})
    _disk_full_for(".json", monkeypatch)
    with pytest.raises(OSError) as info:
        recbole_attn.run("AttnSeq", "pattern", config_dict=_settings(pattern_root, epochs=1, output_dir=str(out)))
    assert info.value.errno == errno.ENOSPC
    assert "could not write the results file" in str(info.value) and "ndcg@10" in str(info.value)
    with pytest.raises(OSError):  # overwriting in place fails too, leaving the old file whole
        results_module.write_json_atomic(earlier, {"test": "new"})
    assert json.loads(earlier.read_text()) == {"test": {"ndcg@10": 0.5}}
    assert [p.name for p in out.iterdir()] == ["earlier.json"]  # no temp files left


def test_full_disk_while_writing_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    path = _checkpoint_file(tmp_path)
    before = path.read_bytes()
    _disk_full_for(".pth", monkeypatch)
    with pytest.raises(OSError):
        atomic_torch_save({"config": {}, "epoch": 1, "state_dict": {}}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["good.pth"]
