"""The installed package, run from outside the repository, finds every model
and its default properties (CI installs a wheel, not an editable copy)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
import recbole_attn
from recbole_attn import registry
from recbole_attn.config import AttnConfig, project_properties_dir
print(recbole_attn.__file__)
print(project_properties_dir())
for name in ("AttnSeq", "AttnRNN"):
    assert registry.model_properties_file(registry.get_model_class(name)).is_file(), name
config = AttnConfig("AttnSeq", "ml-100k")
assert config["valid_metric"] == "NDCG@10" and config["train_mode"] == "all_positions"
print("ok")
"""


@pytest.mark.slow
def test_installed_package_works_from_any_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    package_file, properties_dir, status = done.stdout.split()
    assert status == "ok"
    assert os.path.isfile(os.path.join(properties_dir, "overall.yaml"))
    assert os.path.isfile(os.path.join(properties_dir, "dataset", "ml-1m.yaml"))
