"""Results: the JSON record of a run and the table printed for a person."""
from __future__ import annotations

import json
import math
import os
import platform
import time
import uuid
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

import torch

from recbole_attn.atomic import atomic_path
from recbole_attn.serialization import plain_data


def write_text_atomic(path: str | os.PathLike, text: str, exclusive: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :mod:`recbole_attn.atomic`),
    flushed to disk before the rename; ``exclusive``: never over an existing file."""
    with atomic_path(path, exclusive=exclusive) as tmp, open(tmp, "w", newline="") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    return Path(path)


def strict_json(data: Any) -> str:
    """``data`` as strict JSON: non-finite numbers are ``null`` (``NaN`` and
    ``Infinity`` are not JSON), checked by ``allow_nan=False``."""
    return json.dumps(finite_or_none(plain_data(data)), indent=2, allow_nan=False)


def finite_or_none(value: Any) -> Any:
    """Plain data with every NaN/inf float replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    return value


def write_json_atomic(path: str | os.PathLike, data: Any, exclusive: bool = False) -> Path:
    """:func:`write_text_atomic` of ``data`` as strict JSON (plain data only)."""
    return write_text_atomic(path, strict_json(data), exclusive=exclusive)


def unique_results_path(output_dir: str | os.PathLike, stem: str) -> Path:
    """A results file name no earlier run used: time stamp plus a random tag."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(output_dir) / f"{stem}-{stamp}-{uuid.uuid4().hex[:6]}.json"


def versions(model_class: type | None = None) -> dict[str, str]:
    """Versions of everything that changes the numbers: with ``model_class``
    from a third-party plugin, that plugin's distribution too."""
    found = {"python": platform.python_version()}
    packages = ["recbole-attn", "recbole", "torch", "numpy", "pandas", "scipy"]
    top = model_class.__module__.split(".")[0] if model_class is not None else "recbole"
    if top not in ("recbole", "recbole_attn"):
        packages += packages_distributions().get(top, [top])  # a module on the path only: "not installed"
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name. Two hosts of one cloud shape (same cores, memory
    and packages) can round floats differently and train other paths from one
    seed, and on Linux ``platform.processor()`` says only "x86_64"; so read the
    kernel's ``model name``, falling back to ``platform`` elsewhere."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Environment variables that swap or tune the C memory allocator.
ALLOCATOR_VARIABLES = ("LD_PRELOAD", "MALLOC_CONF")


def machine(device: Any) -> dict[str, Any]:
    """Where the run ran: CPU model, cores, accelerator."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    # a preloaded allocator changes CPU training speed (docs/benchmarks.md), so timings must say so
    allocator = {name: os.environ[name] for name in ALLOCATOR_VARIABLES if os.environ.get(name)}
    if allocator:
        info["allocator_env"] = allocator
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def format_results_table(result: dict[str, Any]) -> str:
    """Best-valid and test metrics side by side, then the times."""
    valid, test = result.get("best_valid") or {}, result.get("test") or {}
    metrics = list(dict.fromkeys([*valid, *test]))
    width = max([len(m) for m in metrics] + [10])
    lines = [
        f"{result['model']} on {result['dataset']}",
        f"{'metric':<{width}}  {'best valid':>10}  {'test':>10}",
    ]
    for metric in metrics:
        cells = [f"{d[metric]:>10.4f}" if metric in d else f"{'-':>10}" for d in (valid, test)]
        lines.append(f"{metric:<{width}}  {cells[0]}  {cells[1]}")
    times = result["times"]
    lines.append(
        f"best epoch {result['best_epoch']} of {result['epochs_run']}; "
        f"fit {times['fit_seconds']:.1f}s ({times['train_seconds_per_epoch']:.1f}s/epoch), "
        f"test {times['test_seconds']:.1f}s, total {times['total_seconds']:.1f}s"
    )
    return "\n".join(lines)
