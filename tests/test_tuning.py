"""--tune: search spaces are checked, trials never read the test split, and
the best validation setting is the one re-run with the seeds."""
from __future__ import annotations

import pytest

from recbole_attn import run
from recbole_attn.bench import tuning
from recbole_attn.bench.cli import main
from recbole_attn.bench.measure import run_row
from recbole_attn.bench.suite import plan_rows
from recbole_attn.errors import UsageError
from recbole_attn.hooks import TrainerHook


class CountEvaluations(TrainerHook):
    """How often the trainer evaluated, and how many of those were validations."""

    def __init__(self) -> None:
        self.evaluations = self.validations = 0

    def before_evaluate(self, trainer, eval_data) -> None:
        self.evaluations += 1

    def after_valid_epoch(self, trainer, score, result) -> None:
        self.validations += 1


@pytest.mark.parametrize("test", [True, False])
def test_a_run_without_test_evaluates_validation_only(pattern_root, tmp_path, test):
    counter = CountEvaluations()
    result = run("AttnSeq", "pattern", config_dict={
        "data_path": str(pattern_root), "epochs": 2, "state": "WARNING", "checkpoint_dir": str(tmp_path)},
        write_results=False, hooks=[counter], test=test)
    assert counter.validations == 2
    assert counter.evaluations == counter.validations + test  # the test is the one extra evaluation
    assert (result["test"] is None) == (not test) and result["best_valid"]["ndcg@10"] > 0


def test_tuning_trials_never_test_and_the_best_validation_setting_wins(pattern_root, tmp_path):
    spec = plan_rows("pattern", ["AttnSeq"], budget=None, epochs=1, data_path=str(pattern_root),
                     overrides=[f"--checkpoint_dir={tmp_path}", "--learning_rate=0.5"])[0]
    seen = []

    def run_trial(trial_spec):
        seen.append(trial_spec)
        return run_row(trial_spec)

    found = tuning.tune_row(spec, 3, run_trial, seed=1, echo=lambda _: None)
    assert len(found["trials"]) == 3 and all(trial_spec["test"] is False for trial_spec in seen)
    # trial 0 is the untuned row, command line included
    assert found["trials"][0]["settings"] == {} and "--learning_rate=0.5" in seen[0]["cmd_args"]
    # the tuned keys replace the command line's own value, in config_dict and in cmd_args
    assert all(set(trial["settings"]) == set(tuning.search_space("AttnSeq"))
               and trial_spec["config_dict"]["learning_rate"] == trial["settings"]["learning_rate"]
               and "--learning_rate=0.5" not in trial_spec["cmd_args"]
               for trial_spec, trial in zip(seen[1:], found["trials"][1:]))
    best = max(found["trials"], key=lambda trial: trial["valid_ndcg@10"])
    assert found["best"] == best["settings"] and found["best_valid_ndcg@10"] == best["valid_ndcg@10"]
    # the same seed draws the same settings
    again = tuning.tune_row(spec, 3, lambda s: {"best_valid": {"ndcg@10": 0.1}}, seed=1, echo=lambda _: None)
    assert [t["settings"] for t in again["trials"]] == [t["settings"] for t in found["trials"]]


def test_the_untuned_row_wins_when_no_drawn_setting_beats_it_on_validation(pattern_root):
    spec = plan_rows("pattern", ["AttnSeq"], data_path=str(pattern_root))[0]

    def score(trial_spec):  # the untuned row scores best
        return {"best_valid": {"ndcg@10": 0.3 if trial_spec["settings"] == {} else 0.1}}

    found = tuning.tune_row(spec, 4, score, seed=1, echo=lambda _: None)
    assert found["best"] == {} and found["best_valid_ndcg@10"] == 0.3 and len(found["trials"]) == 4
    assert [trial["trial"] for trial in found["trials"]] == [0, 1, 2, 3]
    assert all(trial["settings"] for trial in found["trials"][1:])
    [seeded] = plan_rows("pattern", ["AttnSeq"], data_path=str(pattern_root), settings={"AttnSeq": found["best"]})
    assert seeded == spec


def test_keys_the_row_fixes_are_not_tuned(pattern_root, tmp_path, monkeypatch):
    [spec] = plan_rows("pattern", ["AttnRNN[general]"], data_path=str(pattern_root))
    found = tuning.tune_row(spec, 3, lambda s: {"best_valid": {"ndcg@10": 0.1}}, echo=lambda _: None)
    assert all(trial["settings"] and "attention_type" not in trial["settings"] for trial in found["trials"][1:])
    (tmp_path / "AttnRNN.yaml").write_text("attention_type: {choice: [dot, general]}\n")
    monkeypatch.setattr(tuning, "SEARCH_DIR", tmp_path)
    with pytest.raises(UsageError, match=r"AttnRNN\[general\] fixes every key of .*AttnRNN.yaml"):
        tuning.row_space(spec)


def test_a_trial_that_reports_test_metrics_stops_tuning(pattern_root):
    spec = plan_rows("pattern", ["AttnSeq"], data_path=str(pattern_root))[0]
    with pytest.raises(RuntimeError, match="evaluated the test split"):
        tuning.tune_row(spec, 1, lambda s: {"best_valid": {"ndcg@10": 0.1}, "test": {"ndcg@10": 0.1}},
                        echo=lambda _: None)


def test_a_model_whose_every_trial_fails_gets_no_setting(pattern_root):
    spec = plan_rows("pattern", ["AttnSeq"], data_path=str(pattern_root))[0]
    failing = [{"status": "error", "error": "boom"}, {"best_valid": {"ndcg@10": float("nan")}}]
    found = tuning.tune_row(spec, 2, lambda s: failing.pop(0), echo=lambda _: None)
    assert found["best"] is None and found["error"] == "every trial failed" and len(found["trials"]) == 2


def test_a_benchmark_goes_on_without_the_model_whose_tuning_failed(pattern_root, tmp_path, monkeypatch):
    from recbole_attn.bench import measure, suite

    def run_or_fail(spec):
        if spec["model"] == "GRU4Rec":
            return {"label": spec["label"], "model": "GRU4Rec", "status": "error", "error": "boom"}
        return run_row(spec)

    monkeypatch.setattr(measure, "run_row", run_or_fail)
    record = suite.run_benchmark("pattern", ["AttnSeq", "GRU4Rec"], budget=None, epochs=1, tune=2,
                                 data_path=str(pattern_root), output_dir=tmp_path, isolated=False,
                                 overrides=[f"--checkpoint_dir={tmp_path}"], echo=lambda _: None)
    assert record["tuning"]["GRU4Rec"]["best"] is None and record["tuning"]["AttnSeq"]["best"] is not None
    assert "trial 0 the model's untuned settings" in open(record["files"]["markdown"]).read()
    assert [row["label"] for row in record["rows"]] == ["AttnSeq"] and record["finished"]


def test_a_model_whose_tuning_failed_makes_the_exit_code_1(monkeypatch, tmp_path, capsys):
    from recbole_attn.bench import suite

    record = {"rows": [], "files": {}, "tuning": {"GRU4Rec": {"best": None, "error": "every trial failed"}}}
    monkeypatch.setattr(suite, "run_benchmark", lambda **kwargs: record)
    assert main(["--models=GRU4Rec", "--tune=2", f"--output_dir={tmp_path}"]) == 1
    assert "every tuning trial failed for GRU4Rec" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("lr: {uniform: [1, 0]}", r"lr: uniform needs \[low, high\] with low < high"),
    ("lr: {log_uniform: [0, 1]}", r"and low > 0"),
    ("n: {int: [1, 2.5]}", r"integers"),
    ("x: {choice: []}", r"choice needs a non-empty list"),
    ("x: {normal: [0, 1]}", r"expected one of \{choice, uniform, log_uniform, int\}"),
    ("x: 3", r"expected one of"),
    ("epochs: {int: [10, 200]}", r"epochs is set by the benchmark's --epochs=N, not tuned"),
])
def test_bad_search_spaces_name_the_file_and_key(tmp_path, monkeypatch, text, message):
    (tmp_path / "AttnSeq.yaml").write_text(text + "\n")
    monkeypatch.setattr(tuning, "SEARCH_DIR", tmp_path)
    with pytest.raises(UsageError, match=message):
        tuning.search_space("AttnSeq")


def test_every_shipped_search_space_reads():
    assert {"AttnSeq", "AttnRNN", "SASRec", "GRU4Rec", "NARM"} <= set(tuning.available())
    for model in tuning.available():
        assert tuning.search_space(model)


@pytest.mark.parametrize("argv, message", [
    (["--models=AttnSeq,Caser", "--tune=2"], "no search space for Caser"),
    (["--tune=-1"], "tune must be 0 (no tuning) or >= 2 trials per model"),
    (["--tune=1"], "tune must be 0 (no tuning) or >= 2 trials per model (trial 0 is the untuned row), got 1"),
    (["--models=GRU4Rec", "--reference=AttnSeq"], "reference 'AttnSeq' is not among the models: GRU4Rec"),
    (["--seeds=1,2", "--seed=3"], "either as --seeds or as seed"),
    (["--seed=abc"], "seed must be an integer, got 'abc'"),
    (["--seed=1.7"], "seed must be an integer, got 1.7"),
    (["--topk=[5,20]", "--valid_metric=NDCG@5"], "metrics must include NDCG and topk 10, got metrics="),
    (["--metrics=['Hit','MRR']", "--valid_metric=MRR@10"], "metrics must include NDCG and topk 10, got metrics="),
])
def test_benchmark_options_fail_before_training(pattern_root, tmp_path, capsys, argv, message):
    code = main(["--dataset=pattern", f"--data_path={pattern_root}", f"--output_dir={tmp_path}", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("seeds", ["1,x", "1,1", ""])
def test_bad_seed_lists_exit_2(seeds, capsys):
    with pytest.raises(SystemExit) as stop:
        main([f"--seeds={seeds}"])
    assert stop.value.code == 2 and "seeds must be" in capsys.readouterr().err


def test_settings_never_override_the_rows_own_keys():
    """Trials and the seeded runs after them share one precedence: a row's
    NAME[...] keys and seed stay, a tuned key replaces the command line's."""
    [spec] = plan_rows("ml-100k", ["AttnRNN[general]"], seeds=[7], overrides=["--learning_rate=0.5"])
    tuned = tuning.apply_settings(spec, {"attention_type": "dot", "seed": 1, "learning_rate": 0.01})
    assert tuned["config_dict"]["attention_type"] == "general" and tuned["config_dict"]["seed"] == 7
    assert tuned["config_dict"]["learning_rate"] == 0.01 and "--learning_rate=0.5" not in tuned["cmd_args"]
    [planned] = plan_rows("ml-100k", ["AttnRNN[general]"], seeds=[7], overrides=["--learning_rate=0.5"],
                          settings={"AttnRNN[general]": {"attention_type": "dot", "seed": 1, "learning_rate": 0.01}})
    assert planned["config_dict"] == tuned["config_dict"] and planned["cmd_args"] == tuned["cmd_args"]
