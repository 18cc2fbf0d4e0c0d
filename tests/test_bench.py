"""``python -m recbole_attn.bench``: the writers on a fake result set, the
row planning, the command line, and one real two-model run."""
from __future__ import annotations

import _thread
import csv
import json
import math
import platform
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from recbole_attn.models.attnrnn import AttnRNN

from recbole_attn import results
from recbole_attn.bench import plots, report, suite, time_to_quality
from recbole_attn.bench.cli import budget_seconds, main
from recbole_attn.config import parse_cmd_args
from recbole_attn.errors import UsageError
from recbole_attn.values import parse_values
from recbole_attn.user_ranks import UserHits, save_user_hits

METRICS = [f"{name}@{k}" for name in ("recall", "mrr", "ndcg", "hit") for k in (5, 10, 20)]


def fake_row(label: str, ndcg: float, status: str = "ok", seconds: float = 1.5, **extra) -> dict:
    scores = {metric: ndcg for metric in METRICS}
    curve = [{"epoch": epoch, "elapsed_seconds": (epoch + 1) * seconds, "train_seconds": seconds,
              "valid_ndcg@10": ndcg * (epoch + 1) / 3} for epoch in range(3)]
    return {
        "label": label, "model": label.split("[")[0], "status": status,
        "stopped_by_budget": status == "budget", "test": scores, "best_valid": scores, "epochs_run": 3,
        "best_epoch": 2, "train_seconds_per_epoch": seconds, "fit_seconds": 3 * seconds,
        "seconds_to_best": 3 * seconds, "curve": curve, "train_targets": 1000,
        "train_targets_per_second": 1000 / seconds, "test_users": 60, "inference_users_per_second": 12345.6,
        "eval_users_per_second": 5000.0, "peak_rss_mb": 812.4, "device": "cpu", "wall_seconds": 10.0,
        "result": {"config": {"seed": 2020, "MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64}}, **extra,
    }


def fake_rows() -> list[dict]:
    return [
        fake_row("GRU4Rec", 0.05),
        fake_row("SASRec", 0.07, status="budget", seconds=120.0),
        {"label": "Caser", "model": "Caser", "status": "error", "error": "RuntimeError: boom | bad\nline 2"},
        fake_row("AttnRNN[general]", 0.09),
    ]


def fake_record(rows: list[dict]) -> dict:
    return {
        "command": "python -m recbole_attn.bench", "started": "2025-01-01 00:00:00", "finished": True,
        "wall_seconds": 200.0, "dataset": "ml-100k", "budget_seconds": 600.0, "epochs": 200,
        "machine": {"processor": "x86_64", "cpu_count": 2, "torch_threads": 1, "device": "cpu"},
        "git": {"commit": "abc123", "dirty": False}, "versions": {"torch": "2.13.0"}, "omp_num_threads": "1",
        "rows": rows,
    }


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| #")]


def test_markdown_table_sorts_flags_and_formats():
    lines = table_lines(report.markdown_table(fake_rows()))
    assert [line.split(" | ")[1] for line in lines] == ["AttnRNN[general]", "SASRec", "GRU4Rec", "Caser"]
    first, budget, _, failed = lines
    assert first.startswith("| 1 | AttnRNN[general] | ok | 0.0900 | 0.0900 |")
    assert "| 3 (2) | 1.50 | 4.50 | 4.50 | 667 | 12,346 | 812 |" in first
    assert "**budget-stopped**" in budget and "| 120 | 360 |" in budget
    assert "error: RuntimeError: boom \\| bad line 2 | - |" in failed  # one line, pipe escaped, no numbers
    assert "peak GPU MB" not in report.markdown_table(fake_rows())
    assert "| 2,048 |" in report.markdown_table([fake_row("AttnSeq", 0.1, peak_cuda_mb=2048.0)])


def test_beyond_accuracy_metrics_get_columns_when_computed():
    assert "ItemCoverage" not in report.markdown_table(fake_rows())
    row = fake_row("AttnSeq", 0.1)
    row["test"].update({"itemcoverage@10": 0.4321, "giniindex@10": 0.75})
    table = report.markdown_table([row, fake_row("GRU4Rec", 0.05)])
    header = table.splitlines()[0]
    assert "| test MRR@10 | test ItemCoverage@10 | test GiniIndex@10 | best valid NDCG@10 |" in header
    first, second = table_lines(table)
    assert "| 0.1000 | 0.4321 | 0.7500 | 0.1000 |" in first and "| 0.0500 | - | - | 0.0500 |" in second


def test_long_error_is_cut_to_one_table_cell():
    row = {"label": "X", "model": "X", "status": "error", "error": "E" * 500}
    [line] = table_lines(report.markdown_table([row]))
    assert "E" * 117 + "..." in line and "E" * 118 not in line


def test_csv_has_every_metric_in_table_order():
    rows = list(csv.DictReader(report.csv_text(fake_rows()).splitlines()))
    assert [row["model"] for row in rows] == ["AttnRNN[general]", "SASRec", "GRU4Rec", "Caser"]
    assert {f"{split}_{metric}" for split in ("test", "valid") for metric in METRICS} <= set(rows[0])
    assert float(rows[0]["test_ndcg@10"]) == 0.09 and float(rows[0]["train_targets_per_second"]) == 1000 / 1.5
    assert rows[1]["status"] == "budget" and rows[3]["status"] == "error" and rows[3]["test_ndcg@10"] == ""


def test_the_machine_is_named_by_its_cpu_model(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n")
    assert results.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Processor"
    assert results.cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())
    if Path("/proc/cpuinfo").is_file():  # Linux: "x86_64" alone cannot tell two hosts apart
        assert results.machine("cpu")["processor"] == results.cpu_model() != platform.machine()


def test_document_names_protocol_and_what_differs():
    rows = fake_rows()
    text = report.markdown_document(fake_record(rows))
    assert "budget 600 s of fitting, at most 200 epochs; seed 2020, MAX_ITEM_LIST_LENGTH 50" in text
    assert "Not identical" not in text
    rows[0]["result"]["config"].pop("hidden_size")  # a model without the key is no difference
    assert "Not identical" not in report.markdown_document(fake_record(rows))
    rows[0]["result"]["config"]["MAX_ITEM_LIST_LENGTH"] = 20
    text = report.markdown_document(fake_record(rows))
    assert "**Not identical across rows: MAX_ITEM_LIST_LENGTH**" in text


def test_tables_and_plots_are_written_under_fresh_names(tmp_path):
    paths = report.output_paths(tmp_path / "out", "ml-100k")
    assert paths != report.output_paths(tmp_path / "out", "ml-100k")
    record = fake_record(fake_rows())
    report.write_tables(record, paths)
    assert json.loads(paths["json"].read_text())["rows"][1]["label"] == "SASRec"
    assert "| 1 | AttnRNN[general] |" in paths["markdown"].read_text()
    assert len(paths["csv"].read_text().splitlines()) == 5
    pytest.importorskip("matplotlib")
    written = plots.write_plots(record["rows"], paths, "ml-100k")
    for kind in ("curves_png", "bars_png"):
        assert written[kind] == str(paths[kind]) and paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_plots_of_failed_rows_only_are_empty_charts(tmp_path):
    pytest.importorskip("matplotlib")
    paths = report.output_paths(tmp_path, "x")
    assert plots.write_plots([fake_rows()[2]], paths, "x") is not None
    assert paths["bars_png"].stat().st_size > 0


@pytest.mark.parametrize("models, types, expected", [
    (["AttnSeq", "AttnRNN"], [], [("AttnSeq", "AttnSeq", {}), ("AttnRNN", "AttnRNN", {})]),
    (["AttnRNN", "GRU4Rec"], ["general", "dot"], [
        ("AttnRNN[general]", "AttnRNN", {"attention_type": "general"}),
        ("AttnRNN[dot]", "AttnRNN", {"attention_type": "dot"}),
        ("GRU4Rec", "GRU4Rec", {}),
    ]),
    (["AttnRNN[linear]"], ["dot"], [("AttnRNN[linear]", "AttnRNN", {"attention_type": "linear"})]),
    (suite.split_list("AttnSeq, AttnSeq[user_features=[age, gender]]"), [], [
        ("AttnSeq", "AttnSeq", {}),
        ("AttnSeq[user_features=[age, gender]]", "AttnSeq", {"user_features": ["age", "gender"]})]),
    (["AttnSeq", "AttnSeq[readout=attention; n_layers=1]"], [], [
        ("AttnSeq", "AttnSeq", {}),
        ("AttnSeq[readout=attention; n_layers=1]", "AttnSeq", {"readout": "attention", "n_layers": 1})]),
])
def test_models_expand_to_rows(models, types, expected):
    assert suite.expand_models(models, types) == expected


def test_attention_types_expand_every_model_that_declares_them(monkeypatch):
    class PluginAttn:  # a plugin model with attention_type choices of its own
        option_choices = {"attention_type": ("dot", "general")}

    real = suite.registry.get_model_class
    monkeypatch.setattr(suite.registry, "get_model_class",
                        lambda name: PluginAttn if name == "PluginAttn" else real(name))
    assert suite.expand_models(["PluginAttn", "AttnSeq"], ["dot", "general"]) == [
        ("PluginAttn[dot]", "PluginAttn", {"attention_type": "dot"}),
        ("PluginAttn[general]", "PluginAttn", {"attention_type": "general"}), ("AttnSeq", "AttnSeq", {})]


@pytest.mark.parametrize("models", [["AttnSeq", "AttnSeq"], ["AttnRNN[general", "x"], ["AttnSeqq"], [],
                                    ["AttnSeq[=x]"], ["AttnSeq[readout=attention;oops]"]])
def test_bad_model_lists_fail_before_training(models):
    with pytest.raises(UsageError):
        suite.plan_rows("ml-100k", models)


def test_plan_shares_properties_and_lets_the_user_win(tmp_path):
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("hidden_size: 128\n")
    specs = suite.plan_rows("ml-100k", ["SASRec", "LightSANs", "AttnRNN[dot]"], budget=30, epochs=3,
                            config_files=[str(config_file)],
                            overrides=["--MAX_ITEM_LIST_LENGTH=20", "--attention_type=general"])
    sasrec, lightsans, attnrnn = (spec["config_dict"] for spec in specs)
    assert sasrec["seed"] == 2020 and sasrec["loss_type"] == "CE"
    assert attnrnn["embedding_size"] == 64 and "embedding_size" not in sasrec  # only models that declare it
    assert "hidden_size" not in sasrec  # the config file's 128 applies
    assert sasrec["epochs"] == 3 and sasrec["time_budget"] == 30
    assert lightsans["k_interests"] == 2  # 0.1 * MAX_ITEM_LIST_LENGTH
    assert attnrnn["attention_type"] == "dot" and "--attention_type=general" not in specs[2]["cmd_args"]
    assert specs[0]["cmd_args"] == ["--MAX_ITEM_LIST_LENGTH=20"]  # SASRec declares no attention_type
    unknown = suite.plan_rows("ml-100k", ["SASRec", "AttnRNN"], overrides=["--learning_rat=0.1"])
    assert all("--learning_rat=0.1" in spec["cmd_args"] for spec in unknown)  # reaches every model's warning
    assert "k_interests" not in suite.plan_rows("ml-100k", ["LightSANs"], overrides=["--k_interests=7"])[0][
        "config_dict"]
    [alone] = suite.plan_rows("ml-100k", ["AttnSeq"])  # no row declares embedding_size: none gets it
    assert "embedding_size" not in alone["config_dict"] and alone["config_dict"]["hidden_size"] == 64


def test_command_line_errors_exit_2(capsys, tmp_path):
    assert main(["--models=AttnSeq", "--epochs=1", "stray"]) == 2
    assert "stray" in capsys.readouterr().err
    assert main(["--models=GRU4Rec", "--dataset=nosuch", f"--data_path={tmp_path}"]) == 2  # before training
    assert "nosuch" in capsys.readouterr().err and not (tmp_path / "benchmarks").exists()
    with pytest.raises(SystemExit):
        main(["--budget=-1"])
    assert budget_seconds("none") is None and budget_seconds("2.5") == 2.5


@pytest.mark.parametrize("args, message", [
    (["--models=AttnSeq", "--time_budget=100"],
     "--time_budget=100: the benchmark sets time_budget with its own --budget"),
    (["--models=AttnSeq[epochs=3]"], "AttnSeq[epochs=3]: epochs=3: the benchmark sets epochs with its own --epochs"),
    (["--models=AttnSeq", "--eval_args={'split': {'RS': [0.8, 0.1, 0.1]}, 'order': 'TO', 'mode': 'full'}"],
     "needs a leave-one-out split"),
])
def test_settings_the_record_would_misstate_exit_2_before_training(args, message, capsys, tmp_path):
    """A budget or cap set beside ``--budget``/``--epochs`` would train
    under another value than the table states; a random split gives a user
    several test rows, which the per-user comparison cannot pair."""
    assert main([*args, f"--output_dir={tmp_path / 'out'}"]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_rows_not_yet_started_are_cancelled_when_a_row_cannot_be_recorded():
    trained = []

    def add_row(index, row):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        suite.run_rows([{"label": f"model {index}"} for index in range(3)], trained.append, 1, add_row,
                       echo=lambda _: None)
    assert len(trained) == 1


def test_ctrl_c_stops_a_row_running_in_this_process_at_once():
    """``--in_process`` rows train in the caller's thread: an interrupt
    (Ctrl-C) must not wait for the row, which may train for hours, to end."""
    def long_row(spec):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return {"label": spec["label"]}

    added = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever ran before
    try:
        threading.Timer(0.5, _thread.interrupt_main).start()
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            suite.run_rows([{"label": "AttnSeq"}, {"label": "GRU4Rec"}], long_row, 1,
                           lambda index, row: added.append(row), echo=lambda _: None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - began < 10 and added == []


def test_worker_deaths_are_said_in_words():
    assert "SIGKILL (out of memory?)" in suite.worker_failure(-9)
    assert "code 3" in suite.worker_failure(3)


def test_a_killed_worker_row_says_which_seed_died(monkeypatch):
    class KilledWorker(SimpleNamespace):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def wait(self):
            return -9

    monkeypatch.setattr(suite.subprocess, "Popen", lambda *args, **kwargs: KilledWorker())
    row = suite.run_isolated({"label": "AttnSeq", "model": "AttnSeq", "seed": 2021, "settings": {}})
    assert row["status"] == "error" and row["seed"] == 2021 and "SIGKILL" in row["error"]


def test_runs_of_one_model_get_a_bar_and_a_curve_each():
    rows = [fake_row("AttnSeq", 0.1, seed=1), fake_row("AttnSeq", 0.1, seed=2), fake_row("GRU4Rec", 0.05, seed=1)]
    assert plots.run_names(rows) == ["AttnSeq seed 1", "AttnSeq seed 2", "GRU4Rec"]


def test_crashing_model_gets_a_row_and_tables_need_no_matplotlib(ml100k_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(UsageError, match="unknown attention_type 'bogus'"):  # every row checked before training
        suite.run_benchmark(models=["AttnSeq", "AttnRNN[bogus]"], epochs=1, output_dir="out",
                            data_path=str(ml100k_root), isolated=False)
    assert not Path("out").exists()

    def crash(self, interaction):
        raise RuntimeError("model crashed")

    monkeypatch.setattr(AttnRNN, "calculate_loss", crash)
    said = []
    record = suite.run_benchmark(models=["AttnRNN"], epochs=1, output_dir="out",
                                 data_path=str(ml100k_root), isolated=False, echo=said.append)
    [row] = record["rows"]
    assert row["status"] == "error" and "model crashed" in row["error"] and "Traceback" in row["traceback"]
    assert any("matplotlib is not installed" in line for line in said)
    assert set(record["files"]) == {"json", "markdown", "csv"}
    assert "error: RuntimeError" in open(record["files"]["markdown"]).read()
    assert json.load(open(record["files"]["json"]))["finished"] is True


@pytest.mark.slow
def test_two_models_end_to_end(ml100k_root, capsys):
    code = main(["--models=AttnSeq,GRU4Rec", f"--data_path={ml100k_root}", "--epochs=2", "--budget=0",
                 "--output_dir=out", "--train_batch_size=512", "--jobs=2"])
    out = capsys.readouterr().out
    assert code == 0, out
    [json_file] = list(Path("out").glob("*.json"))
    record = json.loads(json_file.read_text())
    assert record["finished"] and record["isolated"] and record["git"]["commit"]
    assert record["machine"]["device"] == "cpu" and "torch" in record["versions"]
    assert [row["label"] for row in record["rows"]] == ["AttnSeq", "GRU4Rec"]  # given order, though run at once
    assert record["jobs"] == 2
    attnseq, gru4rec = record["rows"]
    # budget 0: AttnSeq's one batch of windows is its whole epoch; RecBole's prefix rows are cut after one batch
    assert attnseq["epochs_trained"] == 1 and 0 < gru4rec["epochs_trained"] < 1
    assert gru4rec["result"]["curve"][0]["batches"] == 1
    for row in record["rows"]:
        assert row["status"] == "budget" and row["stopped_by_budget"] and row["epochs_run"] == 1  # budget 0
        assert all(0 <= value <= 1 for value in [*row["test"].values(), *row["best_valid"].values()])
        assert set(row["test"]) == set(METRICS)
        for key in ("train_seconds_per_epoch", "fit_seconds", "seconds_to_best", "train_targets_per_second",
                    "inference_users_per_second", "eval_users_per_second", "peak_rss_mb"):
            assert row[key] > 0, key
        assert row["inference_users"] == row["test_users"] == 60
        assert row["peak_rss_mb"] >= row["rss_before_run_mb"] > 50  # the peak may predate training
        assert row["result"]["config"]["train_batch_size"] == 512  # the --key=value override reached run()
        assert len(row["curve"]) == 1 and row["curve"][0]["elapsed_seconds"] > 0
    markdown = open(record["files"]["markdown"]).read()
    assert markdown.count("**budget-stopped**") == 2 and "AttnSeq" in out and "GRU4Rec" in out
    assert "2 models trained at once" in markdown and f"| {gru4rec['epochs_trained']:.2f} (0) |" in markdown
    assert len(open(record["files"]["csv"]).read().splitlines()) == 3
    pytest.importorskip("matplotlib")
    for kind in ("curves_png", "bars_png"):
        assert open(record["files"][kind], "rb").read(4) == b"\x89PNG"


def test_jobs_must_be_positive_and_isolated(ml100k_root):
    for jobs, isolated in ((0, True), (2, False)):
        with pytest.raises(UsageError, match="jobs"):
            suite.run_benchmark(models=["AttnSeq"], data_path=str(ml100k_root), jobs=jobs, isolated=isolated)


@pytest.mark.slow
def test_seeds_give_mean_rows_and_comparisons_that_files_can_recompute(pattern_root, capsys, tmp_path):
    code = main(["--dataset=pattern", "--models=AttnSeq,GRU4Rec", f"--data_path={pattern_root}", "--epochs=1",
                 "--seeds=1,2", "--in_process", "--output_dir=out"])
    assert code == 0, capsys.readouterr().out
    [json_file] = list(Path("out").glob("*.json"))
    record = json.loads(json_file.read_text())
    assert [(row["label"], row["seed"]) for row in record["rows"]] == [
        ("AttnSeq", 1), ("AttnSeq", 2), ("GRU4Rec", 1), ("GRU4Rec", 2)]
    assert [row["result"]["config"]["seed"] for row in record["rows"]] == [1, 2, 1, 2]
    assert record["rows"][0]["test"] != record["rows"][1]["test"]  # the seeds really differ
    [comparison] = record["comparisons"]
    assert comparison["model"] == "GRU4Rec" and comparison["reference"] == "AttnSeq"
    assert comparison["seeds"] == [1, 2] and comparison["users"] == 300
    means = {label: sum(row["test"]["ndcg@10"] for row in record["rows"] if row["label"] == label) / 2
             for label in ("AttnSeq", "GRU4Rec")}
    assert comparison["mean_difference"] == pytest.approx(means["GRU4Rec"] - means["AttnSeq"], abs=1e-4)
    markdown = Path(record["files"]["markdown"]).read_text()
    assert "over seeds 1, 2" in markdown and "| AttnSeq | defaults | 2 |" in markdown
    # the folder moves; the comparison is recomputed from its files alone, against the other model
    moved = tmp_path / "moved"
    Path("out").rename(moved)
    assert main([f"--report={moved / json_file.name}", "--reference=GRU4Rec"]) == 0
    again = json.loads((moved / json_file.name).read_text())
    [reverse] = again["comparisons"]
    assert reverse["model"] == "AttnSeq" and reverse["mean_difference"] == pytest.approx(
        -comparison["mean_difference"])
    assert "vs GRU4Rec" in (moved / json_file.name.replace(".json", ".md")).read_text()


def test_the_protocol_line_names_only_keys_some_row_has():
    rows = [{"result": {"config": {"MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64}}},
            {"result": {"config": {"MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 32}}}]
    shared, differing = report.protocol(rows)
    assert shared == {"MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64} and differing == ["hidden_size"]


def test_the_summary_header_names_the_reference_or_says_there_is_none():
    row = {"label": "AttnSeq", "status": "ok", "test": {"ndcg@10": 0.05, "hit@10": 0.1},
           "best_valid": {"ndcg@10": 0.06}, "epochs_run": 3, "best_epoch": 2}
    assert "Δ NDCG@10 vs AttnSeq [95% CI]" in report.summary_table({"rows": [row], "reference": "AttnSeq"})
    assert "Δ NDCG@10 (no reference)" in report.summary_table({"rows": [row], "reference": None})


def test_the_summary_counts_a_budget_stopped_run_by_epochs_trained():
    """A run cut inside its 5th epoch trained 4.37 epochs: the summary says
    so, as the table of every run does, not the 5 epochs begun."""
    row = {"label": "AttnSeq", "status": "budget", "test": {"ndcg@10": 0.05, "hit@10": 0.1},
           "best_valid": {"ndcg@10": 0.06}, "epochs_run": 5, "epochs_trained": 4.37, "best_epoch": 3}
    summary = report.summary_table({"rows": [row], "reference": "AttnSeq"})
    assert summary.rstrip().endswith("| 4.37 (3) |") and report.format_epochs(row) == "4.37 (3)"


def curve_row(label: str, seed: int, points: list[tuple[float, float]]) -> dict:
    """A run whose validation curve is ``(elapsed seconds, valid NDCG@10)`` per epoch."""
    return {"label": label, "seed": seed, "curve": [
        {"epoch": epoch, "elapsed_seconds": seconds, "train_seconds": 1.0, "valid_ndcg@10": score}
        for epoch, (seconds, score) in enumerate(points)]}


def test_time_to_quality_is_the_references_time_to_each_models_best():
    rows = [
        curve_row("SASRec", 2020, [(100, 0.03), (200, 0.05), (300, 0.04)]),  # best 0.05 after 200 s
        curve_row("AttnSeq", 2020, [(10, 0.02), (20, 0.049), (30, 0.05), (40, 0.06)]),  # 0.05 after 30 s
        curve_row("SASRec", 2021, [(100, 0.07)]),  # better than the reference's run of 2021 ever gets
        curve_row("AttnSeq", 2021, [(10, 0.06)]),
        curve_row("NARM", 2022, [(50, 0.04)]),  # the reference has no run of 2022
    ]
    found = time_to_quality.times_to_best(rows, "AttnSeq")
    assert [(run.model, run.seed, run.score, run.model_seconds, run.reference_seconds) for run in found] == [
        ("SASRec", 2020, 0.05, 200, 30), ("SASRec", 2021, 0.07, 100, None)]
    assert found[0].ratio == pytest.approx(0.15) and found[1].ratio is None
    table = report.time_to_quality_table({"rows": rows, "reference": "AttnSeq"})
    assert table.splitlines()[0] == "| model | seed | its best valid NDCG@10 | s to it | AttnSeq: s to it | ratio |"
    assert table.splitlines()[2:] == ["| SASRec | 2020 | 0.0500 | 200 | 30.00 | 0.150 |",
                                      "| SASRec | 2021 | 0.0700 | 100 | not reached | - |"]
    assert report.time_to_quality_table({"rows": rows, "reference": None}) == ""


@pytest.mark.parametrize("filter_seen, heading", [
    (True, "Published on the same files (full ranking, history excluded):"),
    (False, "this table ranks it too (filter_seen off), so the two do not compare:"),
])
def test_published_anchors_say_whether_they_compare(filter_seen, heading):
    row = fake_row("AttnSeq", 0.05)
    row["result"]["config"]["filter_seen"] = filter_seen
    text = report.markdown_document({**fake_record([row]), "dataset": "amazon-beauty"})
    assert heading in text and "| ICLRec (Chen et al., WWW 2022) | 0.0403 | 0.0744 |" in text


def test_a_record_without_a_finished_run_claims_no_protocol():
    failed = {"label": "SASRec", "model": "SASRec", "seed": 2022, "settings": {}, "status": "error",
              "error": "worker process killed by SIGTERM"}
    text = report.markdown_document({**fake_record([failed]), "dataset": "amazon-beauty"})
    assert "no run finished, so the protocol is not recorded." in text
    assert "filter_seen off" not in text and "; ." not in text
    assert "no run here finished to compare:" in text


def test_the_document_has_the_time_to_quality_section_only_with_a_reference():
    rows = [fake_row("GRU4Rec", 0.05, seconds=100.0), fake_row("AttnSeq", 0.09)]
    record = fake_record(rows)
    assert "## Time to each model's best valid NDCG@10" not in report.markdown_document(record)
    text = report.markdown_document({**record, "reference": "AttnSeq"})
    assert "## Time to each model's best valid NDCG@10" in text
    # GRU4Rec's best (0.05) after 300 s; AttnSeq's curve (0.03, 0.06, 0.09 at 1.5 s steps) passes it at 3 s
    assert "| GRU4Rec | - | 0.0500 | 300 | 3.00 | 0.010 |" in text


def hits_at(rank: int, users: int = 4) -> UserHits:
    """Every one of ``users`` users has its one positive at ``rank``."""
    table = np.zeros((users, 10), dtype=np.uint8)
    table[:, rank - 1] = 1
    return UserHits(np.arange(1, users + 1), table, np.ones(users, dtype=np.int64))


def saved_record(folder: Path, seed: int, ranks: dict[str, int], received_by: set[str] | None = None,
                 **keys) -> Path:
    """A finished one-seed benchmark record in ``folder`` whose models rank
    every user's target at ``ranks[label]``, with its per-user hits; the
    ``overrides`` are in the run configs of the ``received_by`` models (all)."""
    folder.mkdir(parents=True)
    rows = []
    given = parse_values(parse_cmd_args(keys.get("overrides", [])))
    for label, rank in ranks.items():
        save_user_hits(folder / f"{label}-{seed}.ranks.npz", hits_at(rank))
        rows.append(fake_row(label, 0.1 / rank, seed=seed, ranks_file=f"{label}-{seed}.ranks.npz"))
        if received_by is None or label in received_by:
            rows[-1]["result"]["config"].update(given)
    record = {**fake_record(rows), "command": f"python -m recbole_attn.bench --seeds={seed}",
              "reference": "AttnSeq", **keys}
    path = folder / "bench.json"
    path.write_text(json.dumps(record))
    return path


def test_merged_seeds_pool_into_one_comparison_that_stands_alone(tmp_path, capsys):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1, "GRU4Rec": 2})
    second = saved_record(tmp_path / "b", 2, {"AttnSeq": 1, "GRU4Rec": 1})
    out = tmp_path / "merged"
    assert main([f"--merge={first},{second}", f"--output_dir={out}"]) == 0, capsys.readouterr().out
    [merged_file] = list(out.glob("*.json"))
    merged = json.loads(merged_file.read_text())
    assert merged["seeds"] == [1, 2] and len(merged["rows"]) == 4
    assert [source["command"] for source in merged["sources"]] == [
        "python -m recbole_attn.bench --seeds=1", "python -m recbole_attn.bench --seeds=2"]
    [comparison] = merged["comparisons"]
    # per user: seed 1 loses 1 - 1/log2(3) against the reference, seed 2 ties; seeds are averaged per user
    assert comparison["seeds"] == [1, 2]
    assert comparison["mean_difference"] == pytest.approx(-(1 - 1 / math.log2(3)) / 2)
    markdown = Path(merged["files"]["markdown"]).read_text()
    assert "Merged from 2 benchmarks:" in markdown and "--seeds=2`: Started" in markdown
    assert "| AttnSeq | defaults | 2 |" in markdown
    # the merged record keeps its own copies of the per-user hits
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "b")
    pytest.importorskip("matplotlib")
    Path(merged["files"]["bars_png"]).unlink()
    assert main([f"--report={merged_file}"]) == 0
    again = json.loads(merged_file.read_text())
    assert again["comparisons"] == merged["comparisons"]
    assert again["files"] == merged["files"] and Path(again["files"]["bars_png"]).is_file()  # plots redrawn


@pytest.mark.parametrize("second_keys, message", [
    ({"budget_seconds": 300.0}, "the records differ in budget_seconds"),
    ({"dataset": "ml-1m"}, "the records differ in dataset"),
    ({}, "AttnSeq seed 1 is in both"),
    ({"config_files": ["properties/sparse.yaml"]},
     "AttnSeq ran with 'no settings' in"),
    ({"overrides": ["--hidden_dropout_prob=0.5"]}, "but with '--hidden_dropout_prob=0.5' in"),
])
def test_merge_refuses_records_that_do_not_pool(tmp_path, capsys, second_keys, message):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1})
    second = saved_record(tmp_path / "b", 1 if not second_keys else 2, {"AttnSeq": 2}, **second_keys)
    out = tmp_path / "merged"
    assert main([f"--merge={first},{second}", f"--output_dir={out}"]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()  # nothing half-written


def test_merge_pools_a_resumed_run_with_its_other_seeds(tmp_path, capsys):
    """``--resume=auto`` (a run carried on after an interruption) trains the
    same model: its seeds pool; a real setting beside it still does not."""
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1})
    second = saved_record(tmp_path / "b", 2, {"AttnSeq": 2}, overrides=["--resume=auto", "--checkpoint_dir=ck"])
    assert main([f"--merge={first},{second}", f"--output_dir={tmp_path / 'merged'}"]) == 0
    third = saved_record(tmp_path / "c", 3, {"AttnSeq": 3}, overrides=["--resume=auto", "--n_layers=3"])
    assert main([f"--merge={first},{third}", f"--output_dir={tmp_path / 'refused'}"]) == 2
    assert "but with '--n_layers=3' in" in capsys.readouterr().err


def test_merge_pools_one_setting_written_two_ways(tmp_path, capsys):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1}, overrides=["--n_layers=3", "--hidden_dropout_prob=0.5"])
    second = saved_record(tmp_path / "b", 2, {"AttnSeq": 2}, overrides=["--hidden_dropout_prob=.5", "--n_layers=3"])
    assert main([f"--merge={first},{second}", f"--output_dir={tmp_path / 'merged'}"]) == 0, capsys.readouterr().err


def test_merge_refuses_records_run_under_two_protocols(tmp_path, capsys):
    """A model tested with the user's history filtered out of the ranking
    and one tested without were not measured alike."""
    files = [saved_record(tmp_path / name, seed, {label: 1}) for name, seed, label in [("a", 1, "AttnSeq"),
                                                                                       ("b", 1, "GRU4Rec")]]
    for path, filter_seen in zip(files, [True, False]):
        record = json.loads(path.read_text())
        record["rows"][0]["result"]["config"]["filter_seen"] = filter_seen
        path.write_text(json.dumps(record))
    assert main([f"--merge={files[0]},{files[1]}", f"--output_dir={tmp_path / 'merged'}"]) == 2
    error = capsys.readouterr().err
    assert "the records differ in filter_seen: true in" in error and "but false in" in error
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda result: result["config"].update(n_layers=1), "AttnSeq's settings differ between"),
    (lambda result: result.update(data_fingerprint="f2"), "(data_fingerprint: 'f1' -> 'f2')"),
    (lambda result: result.update(dataset_stats={"users": 945, "items": 1683}), "(users: 944 -> 945)"),
])
def test_merge_refuses_seeds_trained_with_other_defaults_or_on_other_data(tmp_path, capsys, edit, message):
    """The command lines can agree while a model's defaults changed between
    the commits the records ran on, or while ``data_path`` held other files
    of the same name: what each run recorded decides."""
    files = [saved_record(tmp_path / name, seed, {"AttnSeq": 1}) for name, seed in [("a", 1), ("b", 2)]]
    for path, is_second in zip(files, [False, True]):
        record = json.loads(path.read_text())
        result = record["rows"][0]["result"]
        result.update(data_fingerprint="f1", dataset_stats={"users": 944, "items": 1683})
        result["config"]["n_layers"] = 2
        if is_second:
            edit(result)
        path.write_text(json.dumps(record))
    assert main([f"--merge={files[0]},{files[1]}", f"--output_dir={tmp_path / 'merged'}"]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "merged").exists()


def test_merge_does_not_hold_a_setting_one_version_did_not_record_against_a_run(tmp_path, capsys):
    files = [saved_record(tmp_path / name, seed, {"AttnSeq": 1}) for name, seed in [("a", 1), ("b", 2)]]
    record = json.loads(files[1].read_text())
    record["rows"][0]["result"]["config"]["readout"] = "last"  # a later version's new setting
    record["rows"][0]["result"].update(data_fingerprint="f2", dataset_stats={"test_users": 60})
    files[1].write_text(json.dumps(record))
    assert main([f"--merge={files[0]},{files[1]}", f"--output_dir={tmp_path / 'merged'}"]) == 0, \
        capsys.readouterr().err


def test_a_difference_over_fewer_seeds_than_the_mean_names_them(tmp_path, capsys):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1, "GRU4Rec": 2})
    second = saved_record(tmp_path / "b", 2, {"GRU4Rec": 2})  # no AttnSeq run of seed 2 to pair with
    assert main([f"--merge={first},{second}", f"--output_dir={tmp_path / 'merged'}"]) == 0
    [markdown] = (tmp_path / "merged").glob("*.md")
    [line] = [line for line in markdown.read_text().splitlines() if line.startswith("| GRU4Rec | defaults | 2 |")]
    assert "(seed 1) |" in line


def test_a_difference_over_fewer_seeds_than_the_references_mean_names_them(tmp_path, capsys):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1, "GRU4Rec": 2})
    second = saved_record(tmp_path / "b", 2, {"AttnSeq": 2})  # GRU4Rec ran seed 1 only
    assert main([f"--merge={first},{second}", f"--output_dir={tmp_path / 'merged'}"]) == 0
    [markdown] = (tmp_path / "merged").glob("*.md")
    [line] = [line for line in markdown.read_text().splitlines() if line.startswith("| GRU4Rec | defaults | 1 |")]
    assert "(seed 1) |" in line


def test_the_settings_column_names_the_files_and_settings_each_model_ran_with(tmp_path, capsys):
    sparse = saved_record(tmp_path / "a", 1, {"AttnSeq": 1}, config_files=["properties/sparse.yaml"],
                          overrides=["--resume=auto", "--n_layers=3", "--filter_seen=True"])
    plain = saved_record(tmp_path / "b", 1, {"GRU4Rec": 2})
    assert main([f"--report={sparse}"]) == 0
    [markdown] = (tmp_path / "a").glob("*.md")
    assert "| AttnSeq | properties/sparse.yaml, n_layers=3 | 1 |" in markdown.read_text()
    assert main([f"--merge={sparse},{plain}", f"--output_dir={tmp_path / 'merged'}"]) == 0, capsys.readouterr().err
    [markdown] = (tmp_path / "merged").glob("*.md")
    text = markdown.read_text()
    assert "| AttnSeq | properties/sparse.yaml, n_layers=3 | 1 |" in text and "| GRU4Rec | defaults | 1 |" in text


def test_the_settings_column_leaves_out_a_setting_the_model_never_received(tmp_path, capsys):
    """``--num_negatives=64`` reaches the models that declare it; GRU4Rec's
    row must not read as if it had trained with it."""
    path = saved_record(tmp_path / "a", 1, {"AttnSeq": 1, "GRU4Rec": 2}, received_by={"AttnSeq"},
                        overrides=["--num_negatives=64"])
    assert main([f"--report={path}"]) == 0, capsys.readouterr().err
    [markdown] = (tmp_path / "a").glob("*.md")
    text = markdown.read_text()
    assert "| AttnSeq | num_negatives=64 | 1 |" in text and "| GRU4Rec | defaults | 1 |" in text


def test_a_tuned_value_replaces_the_command_lines_in_the_settings_column(tmp_path, capsys):
    tuned = saved_record(tmp_path / "a", 1, {"AttnSeq": 1}, overrides=["--learning_rate=0.01", "--n_layers=3"],
                         tuning={"AttnSeq": {"best": {"learning_rate": 0.003}, "defaults_trial": True}},
                         tune_trials=4)
    assert main([f"--report={tuned}"]) == 0, capsys.readouterr().err
    [markdown] = (tmp_path / "a").glob("*.md")
    assert "| AttnSeq | n_layers=3, learning_rate=0.003 | 1 |" in markdown.read_text()


def test_merge_refuses_tunings_with_and_without_the_untuned_trial(tmp_path, capsys):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1}, tune_trials=4,
                         tuning={"AttnSeq": {"best": {}, "defaults_trial": True}})
    second = saved_record(tmp_path / "b", 2, {"GRU4Rec": 1}, tune_trials=4,
                          tuning={"GRU4Rec": {"best": {"learning_rate": 0.003}}})
    assert main([f"--merge={first},{second}", f"--output_dir={tmp_path / 'merged'}"]) == 2
    error = capsys.readouterr().err
    assert f"only '{first}' tuned with the untuned row as trial 0" in error
    assert not (tmp_path / "merged").exists()


def test_a_tuning_that_failed_in_one_record_and_found_a_setting_in_another_merges(tmp_path, capsys):
    failed = saved_record(tmp_path / "a", 1, {"AttnSeq": 1}, tune_trials=4, tuning={
        "AttnSeq": {"best": {}, "defaults_trial": True},
        "GRU4Rec": {"best": None, "error": "every trial failed", "defaults_trial": True}})
    repeated = saved_record(tmp_path / "b", 1, {"GRU4Rec": 2}, tune_trials=4,
                            tuning={"GRU4Rec": {"best": {"learning_rate": 0.003}, "defaults_trial": True}})
    out = tmp_path / "merged"
    assert main([f"--merge={failed},{repeated}", f"--output_dir={out}"]) == 0, capsys.readouterr().err
    [merged] = [json.loads(path.read_text()) for path in out.glob("*.json")]
    assert merged["tuning"]["GRU4Rec"]["best"] == {"learning_rate": 0.003} and merged["tuning"]["AttnSeq"]["best"] == {}
    twice = saved_record(tmp_path / "c", 2, {"GRU4Rec": 2}, tune_trials=4,
                         tuning={"GRU4Rec": {"best": {"learning_rate": 0.001}, "defaults_trial": True}})
    assert main([f"--merge={repeated},{twice}", f"--output_dir={tmp_path / 'again'}"]) == 2
    assert "GRU4Rec was tuned in both" in capsys.readouterr().err


def test_merge_pools_benchmarks_run_with_one_seed_each(tmp_path, capsys):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1}, overrides=["--seed=1", "--filter_seen=True"])
    second = saved_record(tmp_path / "b", 2, {"AttnSeq": 2}, overrides=["--seed=2", "--filter_seen=True"])
    assert main([f"--merge={first},{second}", f"--output_dir={tmp_path / 'merged'}"]) == 0, capsys.readouterr().err


def test_a_merged_record_merges_again_only_with_the_same_settings(tmp_path, capsys):
    sparse = ["--hidden_dropout_prob=0.5"]
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1}, overrides=sparse)
    second = saved_record(tmp_path / "b", 2, {"AttnSeq": 2}, overrides=sparse)
    assert main([f"--merge={first},{second}", f"--output_dir={tmp_path / 'ab'}"]) == 0
    [merged] = (tmp_path / "ab").glob("*.json")
    plain = saved_record(tmp_path / "c", 3, {"AttnSeq": 3})
    assert main([f"--merge={merged},{plain}", f"--output_dir={tmp_path / 'refused'}"]) == 2
    assert "AttnSeq ran with '--hidden_dropout_prob=0.5' in" in capsys.readouterr().err
    same = saved_record(tmp_path / "d", 3, {"AttnSeq": 3}, overrides=sparse)
    assert main([f"--merge={merged},{same}", f"--output_dir={tmp_path / 'abd'}"]) == 0
    [again] = (tmp_path / "abd").glob("*.json")
    again_record = json.loads(again.read_text())
    assert again_record["seeds"] == [1, 2, 3]
    # each benchmark stays a source of its own: its command, commit and machine survive merging again
    assert [source["command"] for source in again_record["sources"]] == [
        f"python -m recbole_attn.bench --seeds={seed}" for seed in (1, 2, 3)]


def test_a_run_that_failed_in_one_record_and_finished_in_another_is_kept_finished(tmp_path, capsys):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1})
    record = json.loads(first.read_text())
    record["rows"].append({"label": "AttnSeq", "model": "AttnSeq", "seed": 2, "status": "error",
                           "error": "worker process killed by SIGKILL (out of memory?)"})
    first.write_text(json.dumps(record))
    second = saved_record(tmp_path / "b", 2, {"AttnSeq": 2})
    assert main([f"--merge={first},{second}", f"--output_dir={tmp_path / 'merged'}"]) == 0, capsys.readouterr().err
    [merged] = (tmp_path / "merged").glob("*.json")
    rows = json.loads(merged.read_text())["rows"]
    assert [(row["seed"], row["status"]) for row in rows] == [(1, "ok"), (2, "ok")]


def test_a_merge_that_fails_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    """A mistyped reference, or a failure while drawing the figures, must not
    leave per-user hits without the record that names them."""
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1, "GRU4Rec": 2})
    second = saved_record(tmp_path / "b", 2, {"AttnSeq": 1, "GRU4Rec": 1})
    out = tmp_path / "merged"
    out.mkdir()
    assert main([f"--merge={first},{second}", "--reference=SASRec", f"--output_dir={out}"]) == 2
    assert "SASRec" in capsys.readouterr().err
    assert list(out.iterdir()) == []

    def broken_plots(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(plots, "add_plots", broken_plots)
    with pytest.raises(RuntimeError, match="no display"):
        main([f"--merge={first},{second}", f"--output_dir={out}"])
    assert list(out.iterdir()) == []


def test_merge_needs_two_records_and_excludes_report(tmp_path, capsys):
    first = saved_record(tmp_path / "a", 1, {"AttnSeq": 1})
    assert main([f"--merge={first}", f"--output_dir={tmp_path / 'out'}"]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main([f"--merge={first},{first}", f"--report={first}"]) == 2
    assert "--report and --merge exclude each other" in capsys.readouterr().err
    assert main([f"--merge={first},{tmp_path / 'missing.json'}", f"--output_dir={tmp_path / 'out'}"]) == 2
    assert "cannot read the benchmark record" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (tmp_path / "list.json").write_text("[1, 2]")
    assert main([f"--report={tmp_path / 'list.json'}"]) == 2
    assert "is not a benchmark record" in capsys.readouterr().err


def test_a_preloaded_allocator_is_recorded_and_shown_beside_the_timings(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    assert "allocator_env" not in results.machine("cpu")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    monkeypatch.setenv("MALLOC_CONF", "retain:true")
    host = results.machine("cpu")
    assert host["allocator_env"] == {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2", "MALLOC_CONF": "retain:true"}
    text = report.markdown_document({**fake_record([fake_row("AttnSeq", 0.05)]), "machine": host})
    assert "OMP_NUM_THREADS=1, LD_PRELOAD=/usr/lib/libjemalloc.so.2, MALLOC_CONF=retain:true, device cpu" in text
