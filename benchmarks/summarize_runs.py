"""Table of many ``run.py`` results, grouped over seeds.

    python benchmarks/summarize_runs.py RUN_DIR... --output docs/results/some_table --title "..."

Each RUN_DIR holds the results JSON of one ``run.py`` call (its
``--output_dir``); its folder name is the row label, and labels ending in
``_<seed>`` are grouped into one mean row, because on ml-100k (943 test
users, one held-out item each) one seed's test NDCG@10 moves by about
+-0.006 between seeds: single runs cannot separate models that close.
Writes ``<output>.md`` (per-run rows, then group means +- sample std) and a
condensed ``<output>.json`` (metrics, times and each run's valid curve)
atomically.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from recbole_attn.results import write_json_atomic, write_text_atomic

SEED_SUFFIX = re.compile(r"_(\d+)$")


def load_run(folder: Path) -> dict[str, Any]:
    files = sorted(folder.glob("*.json"))
    if len(files) != 1:
        raise SystemExit(f"{folder}: expected one results JSON, found {len(files)}")
    result = json.loads(files[0].read_text())
    config = result["config"]
    return {
        "label": folder.name,
        "group": SEED_SUFFIX.sub("", folder.name),
        "model": result["model"],
        "seed": config["seed"],
        "device": config["device"],
        "valid_ndcg@10": result["best_valid_score"],
        "test_ndcg@10": result["test"]["ndcg@10"],
        "test_hit@10": result["test"]["hit@10"],
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "train_seconds_per_epoch": result["times"]["train_seconds_per_epoch"],
        "fit_seconds": result["times"]["fit_seconds"],
        "curve": [[round(e["elapsed_seconds"], 2), e["valid_score"]] for e in result["curve"] if "valid_score" in e],
        "results_file": files[0].name,
    }


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}"


def markdown(runs: list[dict[str, Any]], title: str, command: str) -> str:
    lines = [f"## {title}", "", f"Command: {command}" if command else "", "",
             "| run | model | seed | best valid NDCG@10 | test NDCG@10 | test Hit@10 | best/run epochs | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['label']} | {r['model']} | {r['seed']} | {r['valid_ndcg@10']:.4f} "
                     f"| {r['test_ndcg@10']:.4f} | {r['test_hit@10']:.4f} | {r['best_epoch']}/{r['epochs_run']} "
                     f"| {r['train_seconds_per_epoch']:.2f} |")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[r["group"]].append(r)
    lines += ["", "Mean over seeds (+- sample std), sorted by mean test NDCG@10:", "",
              "| group | runs | valid NDCG@10 | test NDCG@10 | test Hit@10 |", "|---|---|---|---|---|"]
    order = sorted(groups.items(), key=lambda kv: -statistics.mean(r["test_ndcg@10"] for r in kv[1]))
    for name, members in order:
        lines.append(f"| {name} | {len(members)} | {mean_std([r['valid_ndcg@10'] for r in members])} "
                     f"| {mean_std([r['test_ndcg@10'] for r in members])} "
                     f"| {mean_std([r['test_hit@10'] for r in members])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="folders, one results JSON each")
    parser.add_argument("--output", required=True, help="path stem of the .md and .json")
    parser.add_argument("--title", default="Runs")
    parser.add_argument("--command", default="", help="how the runs were made (recorded in the table)")
    args = parser.parse_args()
    runs = [load_run(folder) for folder in args.runs]
    text = markdown(runs, args.title, args.command)
    print(text)
    output = Path(args.output)
    write_text_atomic(output.with_suffix(".md"), text)
    write_json_atomic(output.with_suffix(".json"), {"title": args.title, "command": args.command, "runs": runs})


if __name__ == "__main__":
    main()
