"""Serving throughput: :func:`recbole_attn.recommend` against RecBole's own
full-ranking paths, for the same model, in one process, on CPU.

    OMP_NUM_THREADS=1 python benchmarks/recommend_throughput.py --epochs 3

Trains AttnSeq briefly on the embedded ml-100k (or loads ``--checkpoint``),
then times top-10 over the full catalog for a batch of ``--users`` users
(drawn with replacement from the dataset's users) by:

* ``recommend``: ours (token lookup, whole histories, padded batch, one
  ``full_sort_predict`` per chunk, seen items masked, ``torch.topk``, tokens
  back), with and without ``exclude_seen``;
* RecBole ``full_sort_topk``: ``recbole.utils.case_study``, RecBole's own
  "top-k for these users" helper (internal ids in, internal ids out);
* ``full_sort_predict`` alone on a prebuilt padded batch of the same users:
  the model's share of every path above;
* RecBole test loader: iterating RecBole's full-sort test dataloader with
  ``model.full_sort_predict``, its history mask and ``torch.topk``, as its
  evaluation does (all users, ``eval_batch_size`` per batch).

Prints a table and writes ``<output>.json`` and a block of ``docs/serving.md``
(between its ``recommend_throughput`` markers), with the command, the machine
and what else was running.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recbole.utils.case_study import full_sort_topk

import recbole_attn
from recbole_attn.results import machine, versions, write_json_atomic, write_text_atomic
from recbole_attn.serve.queries import model_input, resolve_queries, tail_windows

BEGIN, END = "<!-- recommend_throughput:begin -->", "<!-- recommend_throughput:end -->"


def timed_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds (this process) per function over
    ``repeats`` rounds that call each function once, after a warm-up round.
    Interleaving spreads load from other processes over every path alike; CPU
    time, with one thread, is the work itself, whatever else runs."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if round_:
                times[name]["wall"].append(time.perf_counter() - wall)
                times[name]["cpu"].append(time.process_time() - cpu)
    return {name: {kind: statistics.median(v) for kind, v in kinds.items()} for name, kinds in times.items()}


def recbole_loader_pass(model: Any, test_data: Any, k: int) -> int:
    """One pass of RecBole's full-sort test loader: scores, mask, top-k."""
    users = 0
    with torch.no_grad():
        for interaction, history_index, _, _ in test_data:
            scores = model.full_sort_predict(interaction).view(len(interaction), -1)
            scores[:, 0] = -torch.inf
            if history_index is not None:
                scores[history_index] = -torch.inf
            torch.topk(scores, k, dim=1)
            users += len(interaction)
    return users


def other_processes(limit: int = 5) -> list[str]:
    """The busiest other processes (``ps``), to record what shared the CPU."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.stdout.splitlines()[1:]:
        pid, cpu, *args = line.split(None, 2)
        if int(pid) != os.getpid() and float(cpu) >= 1.0:
            rows.append(f"{float(cpu):.0f}% {' '.join(args)[:150]}")
    return rows[:limit]


def write_markdown_block(path: Path, block: str) -> None:
    """Replace the text between the markers in ``path`` (append if absent)."""
    text = path.read_text() if path.exists() else ""
    section = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    write_text_atomic(path, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="serve this checkpoint instead of training one")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (no --checkpoint)")
    parser.add_argument("--users", type=int, default=1000, help="users per recommend call")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", default="docs/results/recommend_throughput")
    parser.add_argument("--doc", default="docs/serving.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()

    checkpoint, train_seconds = args.checkpoint, None
    if checkpoint is None:
        result = recbole_attn.run("AttnSeq", "ml-100k", write_results=False, config_dict={
            "epochs": args.epochs, "device": "cpu", "state": "WARNING", "show_progress": False,
        })
        checkpoint, train_seconds = result["checkpoint"], result["times"]["fit_seconds"]
        ndcg = result["test"]["ndcg@10"]
        print(f"trained {result['epochs_run']} epochs in {train_seconds:.0f}s, test NDCG@10 {ndcg:.4f}")
    loaded = recbole_attn.load(checkpoint, device="cpu")
    model, test_data = loaded.model, loaded.loaders[2]
    rng = np.random.default_rng(0)
    user_ids = rng.integers(1, loaded.dataset.user_num, size=args.users)
    tokens = loaded.user_tokens[user_ids].tolist()

    queries = resolve_queries(loaded, tokens, None, "error")
    batch = model_input(loaded, *tail_windows(queries.indptr, queries.indices, queries.rows, loaded.max_length),
                        queries.user_ids)

    def model_only() -> None:  # the floor: the model's forward and scoring, nothing else
        with torch.inference_mode():
            model.full_sort_predict(batch)

    runs = {
        "recommend (exclude_seen)": (lambda: recbole_attn.recommend(loaded, users=tokens, k=args.k), args.users),
        "recommend (all items)": (
            lambda: recbole_attn.recommend(loaded, users=tokens, k=args.k, exclude_seen=False), args.users),
        "RecBole full_sort_topk": (lambda: full_sort_topk(user_ids, model, test_data, args.k), args.users),
        "full_sort_predict alone (prebuilt batch)": (model_only, args.users),
        "RecBole test loader + full_sort_predict": (
            lambda: recbole_loader_pass(model, test_data, args.k), recbole_loader_pass(model, test_data, args.k)),
    }
    medians = timed_interleaved({name: fn for name, (fn, _) in runs.items()}, args.repeats)
    rows = []
    for name, (_, users) in runs.items():
        wall, cpu = medians[name]["wall"], medians[name]["cpu"]
        rows.append({"path": name, "users": users, "wall_seconds": wall, "cpu_seconds": cpu,
                     "users_per_cpu_second": users / cpu, "users_per_wall_second": users / wall})
        print(f"{name:<42} {users:>5} users  cpu {cpu * 1000:7.1f} ms {users / cpu:7.0f} users/s   "
              f"wall {wall * 1000:7.1f} ms {users / wall:7.0f} users/s")
    overhead = medians["recommend (exclude_seen)"]["cpu"] - medians["full_sort_predict alone (prebuilt batch)"]["cpu"]
    share = overhead / medians["recommend (exclude_seen)"]["cpu"]
    print(f"recommend's own work (ids, windows, seen mask, top-k, tokens): {overhead * 1000:.1f} ms CPU ({share:.0%})")

    command = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python " + " ".join(sys.argv)
    record = {
        "command": command,
        "checkpoint": str(checkpoint),
        "trained_epochs": None if args.checkpoint else args.epochs,
        "train_seconds": train_seconds,
        "dataset": {"name": loaded.config["dataset"], "users": loaded.dataset.user_num - 1,
                    "items": loaded.n_items - 1, "max_length": loaded.max_length},
        "k": args.k,
        "repeats": args.repeats,
        "results": rows,
        "recommend_overhead_cpu_seconds": overhead,
        "machine": machine("cpu"),
        "load_average": os.getloadavg(),
        "other_processes": other_processes(),
        "versions": versions(),
        "wall_seconds": time.perf_counter() - began,
    }
    write_json_atomic(f"{args.output}.json", record)

    info = record["machine"]
    lines = [
        f"`{command}`",
        "",
        f"{info['processor']}, {info['cpu_count']} CPUs, torch threads {info['torch_threads']}, device cpu; "
        f"AttnSeq ({record['trained_epochs'] or '?'} epochs) on {record['dataset']['name']} "
        f"({record['dataset']['users']} users, {record['dataset']['items']} items, window {loaded.max_length}); "
        f"top-{args.k} over the full catalog; median of {args.repeats} interleaved rounds after a warm-up round.",
        "",
        "| path | users | CPU ms per call | users per CPU second | wall ms per call | users per wall second |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['path']} | {r['users']} | {r['cpu_seconds'] * 1000:.1f} | {r['users_per_cpu_second']:,.0f} "
            f"| {r['wall_seconds'] * 1000:.1f} | {r['users_per_wall_second']:,.0f} |"
            for r in rows
        ),
        "",
        f"`recommend` (exclude_seen) minus `full_sort_predict` alone: {overhead * 1000:.1f} ms of CPU per "
        f"{args.users} users ({share:.0%} of the call). CPU time is this process's (one thread), so it holds "
        f"whatever else runs; wall time also counts waiting for the shared cores.",
        "",
        f"Load average at the end: {', '.join(f'{x:.2f}' for x in record['load_average'])}. "
        "Also running (`ps` %CPU, averaged over each process's life):",
        "",
        *(f"* `{p}`" for p in record["other_processes"] or ["nothing above 1% CPU"]),
    ]
    write_markdown_block(Path(args.doc), "\n".join(lines))
    print(f"wrote {args.output}.json and {args.doc}")


if __name__ == "__main__":
    main()
