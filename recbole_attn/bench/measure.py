"""One benchmark row, measured inside the process that trains it: the run's
metrics and times, training and inference throughput, peak memory.

Throughput definitions (also in ``docs/benchmarks_howto.md``):

* ``train_targets_per_second``: supervised target items per second of
  training, ``result["train_targets"] / train_seconds_per_epoch`` (one target
  per prefix row for RecBole's models, one per non-padding position for
  ``train_mode: all_positions``);
* ``inference_users_per_second``: test users per second of one timed pass of
  the best model's ``full_sort_predict`` over the test loader (eval mode, no
  grad, batches of ``eval_batch_size``; batch assembly and host-to-device
  copies included, ranking and metrics excluded);
* ``eval_users_per_second``: test users per second of the whole final
  ``trainer.evaluate`` (checkpoint load, scoring, top-k, metrics).
"""
from __future__ import annotations

import sys
import time
import traceback
from typing import Any

import torch

from recbole_attn import runner
from recbole_attn.hooks import Capture
from recbole_attn.user_ranks import UserRanks

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

#: The metric the curves, time-to-best and the table's sort order use.
CURVE_METRIC = "ndcg@10"


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_full_sort(model: Any, loader: Any, device: torch.device) -> tuple[int, float]:
    """(users, seconds) of one ``full_sort_predict`` pass over ``loader``."""
    model.eval()
    users = 0
    _synchronize(device)
    began = time.perf_counter()
    for batch in loader:
        interaction = batch[0] if isinstance(batch, tuple) else batch
        model.full_sort_predict(interaction.to(device))
        users += len(interaction)
    _synchronize(device)
    return users, time.perf_counter() - began


def valid_curve(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Valid NDCG@10 against wall seconds since the fit began, one point per
    evaluated epoch (``valid_score`` when another valid_metric left no NDCG@10)."""
    points = []
    for entry in result["curve"]:
        if "valid_score" not in entry:
            continue
        score = (entry.get("valid_result") or {}).get(CURVE_METRIC, entry["valid_score"])
        points.append({"epoch": entry["epoch"], "elapsed_seconds": entry["elapsed_seconds"],
                       "train_seconds": entry["train_seconds"], "valid_ndcg@10": score})
    return points


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The row fields that come straight from :func:`recbole_attn.run`'s result."""
    times = result["times"]
    per_epoch = times["train_seconds_per_epoch"]
    curve = valid_curve(result)
    best = max(curve, key=lambda point: point["valid_ndcg@10"]) if curve else None
    test_users = result["dataset_stats"]["test_users"]
    test_seconds = times["test_seconds"] if result["test"] is not None else 0.0
    return {
        "status": "budget" if result["stopped_by_budget"] else "ok",
        "stopped_by_budget": result["stopped_by_budget"],
        "test": result["test"],
        "best_valid": result["best_valid"],
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "epochs_trained": result.get("epochs_trained", result["epochs_run"]),
        "train_seconds_per_epoch": per_epoch,
        "fit_seconds": times["fit_seconds"],
        "test_seconds": times["test_seconds"],
        "seconds_to_best": best["elapsed_seconds"] if best else None,
        "curve": curve,
        "train_targets": result["train_targets"],
        "train_targets_per_second": result["train_targets"] / per_epoch if per_epoch > 0 else None,
        "test_users": test_users,
        "eval_users_per_second": test_users / test_seconds if test_seconds > 0 else None,
        "device": result["machine"]["device"],
    }


def inference_throughput(captured: Capture) -> dict[str, Any]:
    """Time the captured trainer's model over the captured test loader."""
    trainer, loader = captured.trainer, captured.eval_data
    if trainer is None or loader is None:
        return {"inference_error": "trainer or test loader not captured"}
    try:
        users, seconds = time_full_sort(trainer.model, loader, trainer.device)
    except Exception as error:  # the row keeps its metrics either way
        return {"inference_error": f"{type(error).__name__}: {error}"}
    return {"inference_users": users, "inference_seconds": seconds,
            "inference_users_per_second": users / seconds if seconds > 0 else None}


def row_identity(spec: dict[str, Any]) -> dict[str, Any]:
    """The seed and settings that tell a row's run apart, failed or not."""
    return {key: spec[key] for key in ("seed", "settings") if key in spec}


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and measure one planned row (see :func:`recbole_attn.bench.suite.plan_rows`).
    Never raises for a failing model: the row then has ``status: error``."""
    row: dict[str, Any] = {"label": spec["label"], "model": spec["model"]}
    began = time.perf_counter()
    rss_before = peak_rss_mb()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    row.update(row_identity(spec))
    test = spec.get("test", True)
    try:
        captured, ranks = Capture(), UserRanks()
        result = runner.run(spec["model"], spec["dataset"], config_files=spec["config_files"],
                            config_dict=spec["config_dict"], cmd_args=spec["cmd_args"],
                            write_results=False, hooks=[captured, ranks], test=test)
        row.update(summarize(result))
        if test:
            row.update(inference_throughput(captured))
        if test and spec.get("ranks_file") and ranks.save(spec["ranks_file"], captured.eval_data.dataset):
            row["ranks_file"] = spec["ranks_file"]
        row["result"] = result
    except Exception as error:
        row.update(status="error", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    row["wall_seconds"] = time.perf_counter() - began
    row["peak_rss_mb"], row["rss_before_run_mb"] = peak_rss_mb(), rss_before
    device = str(row.get("device", ""))
    if device.startswith("cuda"):
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return row
