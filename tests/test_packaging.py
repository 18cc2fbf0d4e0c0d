"""The installed package, run from outside the repository, finds every model
and its default properties (CI installs a wheel, not an editable copy)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SEARCH_DIR = Path(__file__).resolve().parents[1] / "recbole_attn" / "properties" / "search"

CHECK = """
import recbole_attn
from recbole_attn import registry
from recbole_attn.config import AttnConfig, project_properties_dir
print(recbole_attn.__file__)
print(project_properties_dir())
for name in ("AttnSeq", "AttnRNN"):
    assert len(registry.model_properties_files(registry.get_model_class(name))) == 2, name
from recbole_attn.bench import tuning
assert tuning.available() == sorted(SEARCH_SPACES), tuning.available()  # --tune needs them installed
config = AttnConfig("AttnSeq", "ml-100k")
assert config["valid_metric"] == "NDCG@10" and config["train_mode"] == "all_positions"
print("ok")
"""


@pytest.mark.slow
def test_installed_package_works_from_any_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    shipped = sorted(path.stem for path in SEARCH_DIR.glob("*.yaml"))
    check = f"SEARCH_SPACES = {shipped!r}\n{CHECK}"
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    package_file, properties_dir, status = done.stdout.split()
    assert status == "ok"
    assert os.path.isfile(os.path.join(properties_dir, "overall.yaml"))
    assert os.path.isfile(os.path.join(properties_dir, "dataset", "ml-1m.yaml"))
