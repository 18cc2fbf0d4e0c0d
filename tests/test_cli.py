"""One command line: train (default) | recommend | explain | bench, --help, --version."""
from __future__ import annotations

import subprocess
import sys

import pytest

from recbole_attn import __version__
from recbole_attn.cli import main


def test_help_lists_every_command_under_the_name_it_was_started_by(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/recbole-attn"])
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: recbole-attn [train] --model=NAME")
    for command in ("train", "recommend", "explain", "bench"):
        assert f"\n  {command} " in out


def test_version_comes_from_the_package_metadata(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"recbole-attn {__version__}" and __version__ != "0+unknown"


def test_bench_is_a_subcommand(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["run.py"])
    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: python run.py bench")


def test_train_may_be_named_and_a_missing_model_is_said_in_one_line(capsys):
    assert main(["train", "--dataset=ml-100k"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model is required") and err.count("\n") == 1


@pytest.mark.slow
def test_python_dash_m_runs_the_same_command_line():
    done = subprocess.run([sys.executable, "-m", "recbole_attn", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m recbole_attn [train]")


def test_a_mistyped_command_names_the_valid_commands(capsys):
    assert main(["recomend", "--checkpoint=x.pth"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command 'recomend'. Did you mean 'recommend'?") and err.count("\n") == 1
    assert "Valid choices: bench, explain, export, help, recommend, train" in err
