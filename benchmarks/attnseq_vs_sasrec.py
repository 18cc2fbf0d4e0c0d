"""AttnSeq against RecBole's SASRec: training throughput, time to quality and
accuracy, in one process, on the same data with the same model size.

    python benchmarks/attnseq_vs_sasrec.py --dataset ml-100k --sasrec_budget 1800

Prints a table and writes ``<output>.json`` and ``<output>.md`` atomically.
Throughput counts supervised target items per second of training: one per
RecBole prefix row for SASRec, one per non-padding position for AttnSeq.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import recbole_attn
from recbole_attn.bench.time_to_quality import first_seconds_reaching
from recbole_attn.results import machine, versions, write_json_atomic, write_text_atomic

#: The model size both models share: hidden 64, 2 layers, 2 heads, length 50.
SHARED = {
    "hidden_size": 64, "n_layers": 2, "n_heads": 2, "inner_size": 256, "MAX_ITEM_LIST_LENGTH": 50,
    "loss_type": "CE", "seed": 2020, "show_progress": False, "state": "WARNING",
}


def summarize(result: dict[str, Any], model: str) -> dict[str, Any]:
    per_epoch = result["times"]["train_seconds_per_epoch"]
    return {
        "model": model,
        "filter_seen": result["config"]["filter_seen"],
        "test_ndcg@10": result["test"]["ndcg@10"],
        "test_hit@10": result["test"]["hit@10"],
        "best_valid_ndcg@10": result["best_valid_score"],
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "stopped_by_budget": result["stopped_by_budget"],
        "train_seconds_per_epoch": per_epoch,
        "targets_per_epoch": result["train_targets"],
        "targets_per_second": result["train_targets"] / per_epoch,
        "fit_seconds": result["times"]["fit_seconds"],
    }


def markdown(rows: list[dict[str, Any]], ratios: dict[str, Any], header: str) -> str:
    lines = [header, "", "| model | filter_seen | test NDCG@10 | test Hit@10 | best valid NDCG@10 | best/run epochs "
             "| s/epoch | targets/epoch | targets/s | fit s | budget-stopped |", "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['filter_seen']} | {r['test_ndcg@10']:.4f} | {r['test_hit@10']:.4f} "
            f"| {r['best_valid_ndcg@10']:.4f} | {r['best_epoch']}/{r['epochs_run']} "
            f"| {r['train_seconds_per_epoch']:.1f} | {r['targets_per_epoch']} | {r['targets_per_second']:.0f} "
            f"| {r['fit_seconds']:.0f} | {r['stopped_by_budget']} |"
        )
    lines += ["", *(f"- {key}: {value}" for key, value in ratios.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (ml-100k: embedded copy)")
    parser.add_argument("--sasrec_budget", type=float, default=1800, help="seconds of SASRec fitting")
    parser.add_argument("--sasrec_epochs", type=int, default=200)
    parser.add_argument("--attnseq_epochs", type=int, default=200)
    parser.add_argument("--filter_seen", choices=["off", "on", "both"], default="both",
                        help="evaluate AttnSeq without/with seen-item filtering (SASRec: off)")
    parser.add_argument("--output", default="docs/results/attnseq_vs_sasrec")
    parser.add_argument("--attnseq_results", default="",
                        help="comma-separated results JSONs of earlier AttnSeq runs (same settings) to reuse")
    parser.add_argument("--sasrec_results", default="",
                        help="results JSON of an earlier SASRec run (same data and size) to reuse")
    args = parser.parse_args()

    common = dict(SHARED)
    if args.data_path:
        common["data_path"] = args.data_path
    began = time.strftime("%Y-%m-%d %H:%M:%S")
    runs = [("AttnSeq", {"epochs": args.attnseq_epochs, "filter_seen": seen})
            for seen in {"off": [False], "on": [True], "both": [False, True]}[args.filter_seen]]
    reused = [json.loads(Path(p).read_text()) for p in args.attnseq_results.split(",") if p]
    if reused:
        runs = runs[len(reused):]
    # SASRec keeps RecBole's own defaults (dropout 0.5) beyond the shared size
    sasrec_reused = json.loads(Path(args.sasrec_results).read_text()) if args.sasrec_results else None
    if sasrec_reused is None:
        runs.append(("SASRec", {"epochs": args.sasrec_epochs, "time_budget": args.sasrec_budget}))
    rows = [summarize(result, "AttnSeq") for result in reused]
    results = list(reused)
    for model, extra in runs:
        print(f"== {model} {extra}", flush=True)
        result = recbole_attn.run(model, args.dataset, config_dict={**common, **extra})
        print(f"   results file: {result['results_file']}", flush=True)
        results.append(result)
        rows.append(summarize(result, model))
        print(rows[-1], flush=True)

    if sasrec_reused is not None:
        results.append(sasrec_reused)
        rows.append(summarize(sasrec_reused, "SASRec"))
    rows.insert(0, rows.pop())  # SASRec first in the table
    sasrec, attnseq = results[-1], results[0]
    sasrec_best = sasrec["best_valid_score"]
    sasrec_time = first_seconds_reaching(sasrec["curve"], sasrec_best, key="valid_score")
    attnseq_time = first_seconds_reaching(attnseq["curve"], sasrec_best, key="valid_score")
    ratios = {
        "training throughput AttnSeq / SASRec (targets per second)":
            f"{rows[1]['targets_per_second'] / rows[0]['targets_per_second']:.1f}x",
        "SASRec best valid NDCG@10 (within its budget)": f"{sasrec_best:.4f}, reached after {sasrec_time:.0f}s",
        "AttnSeq time to reach it": "never" if attnseq_time is None else
            f"{attnseq_time:.0f}s = {attnseq_time / sasrec_time:.3f} of SASRec's time",
        "test NDCG@10 AttnSeq vs SASRec (filter_seen off)":
            f"{rows[1]['test_ndcg@10']:.4f} vs {rows[0]['test_ndcg@10']:.4f} "
            f"({100 * (rows[1]['test_ndcg@10'] / rows[0]['test_ndcg@10'] - 1):+.1f}%)",
    }
    reuse_note = "".join(f"\nReused AttnSeq run: `{r['results_file']}`." for r in reused)
    if sasrec_reused is not None:
        reuse_note += f"\nReused SASRec run: `{sasrec_reused['results_file']}`."
    header = (f"## AttnSeq vs RecBole SASRec on {args.dataset}\n\nStarted {began}; machine: "
              f"{machine(attnseq['config']['device'])}; versions: {versions()}.\n"
              f"Command: `{shlex.join(['python', 'benchmarks/attnseq_vs_sasrec.py', *sys.argv[1:]])}`{reuse_note}")
    text = markdown(rows, ratios, header)
    print(text)
    output = Path(args.output)
    write_json_atomic(output.with_suffix(".json"), {"rows": rows, "ratios": ratios, "runs": results})
    write_text_atomic(output.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
