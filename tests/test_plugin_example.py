"""The example plugin (examples/plugin) works as a third party would use it:
built and installed with pip into its own folder, found through its entry
point, trained by run.py, benchmarked, and served by recommend/explain."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, RUN_PY

PLUGIN = REPO_ROOT / "examples" / "plugin"
FAST = ["--epochs=1", "--state=WARNING", "--show_progress=False", "--MAX_ITEM_LIST_LENGTH=20"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """An environment whose Python sees the plugin, installed with pip into a folder of its own."""
    target, source = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("src") / "plugin"
    shutil.copytree(PLUGIN, source)  # pip builds in the source tree: keep the checkout clean
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(source)], check=True, capture_output=True, text=True)
    assert list(target.glob("attn_pool_plugin-*.dist-info"))  # the entry point travels in its metadata
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_the_example_plugin_trains_benchmarks_and_serves(plugin_env, ml100k_root, tmp_path):
    data = f"--data_path={ml100k_root}"
    trained = _run([str(RUN_PY), "--model=AttnPool", "--dataset=ml-100k", data, *FAST], plugin_env, tmp_path)
    assert "AttnPool on ml-100k" in trained.stdout
    [results] = (tmp_path / "results").glob("AttnPool-ml-100k-*.json")
    result = json.loads(results.read_text())
    assert result["config"]["train_mode"] == "all_positions" and result["config"]["hidden_size"] == 64  # its YAML
    assert 0 <= result["test"]["ndcg@10"] <= 1
    assert result["versions"]["attn-pool-plugin"] == "0.1.0"  # the plugin's version is part of the record

    # the base class's options (here the sampled-softmax loss) reach a plugin that does not list them
    _run(["-m", "recbole_attn", "bench", "--models=AttnPool", data, "--epochs=1", "--budget=none",
          "--output_dir=bench", "--in_process", "--MAX_ITEM_LIST_LENGTH=20", "--loss_type=SSM",
          "--num_negatives=16"], plugin_env, tmp_path)
    [record] = (tmp_path / "bench").glob("*.json")
    [row] = json.loads(record.read_text())["rows"]
    assert row["status"] == "ok" and row["result"]["config"]["num_negatives"] == 16

    checkpoint = result["checkpoint"]
    served = _run([str(RUN_PY), "recommend", f"--checkpoint={checkpoint}", "--user=1"], plugin_env, tmp_path)
    assert served.stdout.startswith("user 1") and len(served.stdout.splitlines()) == 12
    explained = _run([str(RUN_PY), "explain", f"--checkpoint={checkpoint}", "--user=1"], plugin_env, tmp_path)
    assert explained.stdout.splitlines()[0].endswith("head 1   head 2")  # one column per head
