"""Shared fixtures: tiny atomic datasets, and a scratch working directory for
every test (RecBole writes ``saved/`` and ``log_tensorboard/`` into cwd)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import recbole_attn  # noqa: F401  (applies the compat patches)
from recbole_attn.data.fixtures import write_ml100k_subset, write_sequential_pattern

# Tiny models run fastest on one thread, and a busy 2-core machine makes
# multi-threaded OpenMP spin; subprocesses (run.py) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_PY = REPO_ROOT / "run.py"

#: Settings that keep end-to-end runs to seconds (the pattern sequences have 20 items).
FAST = {
    "epochs": 2, "eval_step": 1, "stopping_step": 2, "show_progress": False, "state": "WARNING",
    "MAX_ITEM_LIST_LENGTH": 20, "hidden_size": 32, "embedding_size": 32, "inner_size": 64,
}


def benchmark_script(file_name: str) -> ModuleType:
    """``benchmarks/<file_name>`` imported as a module: the scripts are not a
    package, so their helpers are tested by loading the file itself."""
    spec = importlib.util.spec_from_file_location(Path(file_name).stem, REPO_ROOT / "benchmarks" / file_name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _scratch_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])  # RecBole must never see pytest's flags


@pytest.fixture(scope="session")
def pattern_root(tmp_path_factory) -> Path:
    """``data_path`` holding ``pattern/pattern.inter``: 300 users stepping
    through 60 items in strides of 1, 2 or 3."""
    root = tmp_path_factory.mktemp("pattern")
    write_sequential_pattern(root)
    return root


@pytest.fixture(scope="session")
def ml100k_root(tmp_path_factory) -> Path:
    """``data_path`` holding a 60-user cut of the embedded ml-100k."""
    root = tmp_path_factory.mktemp("ml100k")
    write_ml100k_subset(root, n_users=60)
    return root
