"""AttnRNN against RecBole's NARM and GRU4Rec under identical properties,
then AttnRNN's attention_type sweep.

Every run goes through :func:`recbole_attn.run` with the same seed, history
window, embedding/hidden size, loss (full-softmax CE), batch size, learning
rate and epoch cap; each model keeps its own default dropout
(``--attnrnn_option`` overrides AttnRNN's defaults, for tuning). After each run
the side-by-side table is printed and ``OUTPUT.json`` / ``OUTPUT.md`` are
rewritten atomically, so an interrupted benchmark keeps what it finished.

    OMP_NUM_THREADS=1 python benchmarks/attnrnn_vs_baselines.py --dataset ml-100k \\
        --epochs 14 --sweep_epochs 14 --output docs/results/attnrnn_benchmark

Results and the exact commands measured: docs/attnrnn.md.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import recbole_attn
from recbole_attn.results import machine, versions, write_json_atomic, write_text_atomic

#: Config keys that may differ between two runs that are otherwise the same
#: (RecBole rewrites data_path and train_neg_sample_args in the final config).
NOT_COMPARED = ("device", "state", "show_progress", "data_path", "train_neg_sample_args")
COLUMNS = ("run", "epochs", "best epoch", "train s/epoch", "valid NDCG@10", "test NDCG@10", "test Hit@10",
           "test MRR@10")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="folder holding DATASET/; default: RecBole's copy")
    parser.add_argument("--models", default="AttnRNN,NARM,GRU4Rec", help="comma-separated; '' skips")
    parser.add_argument("--epochs", type=int, default=15, help="epoch cap of the model comparison")
    parser.add_argument("--attention_types", default="additive,general,dot,linear,none",
                        help="AttnRNN attention_type sweep, comma-separated; '' skips")
    parser.add_argument("--sweep_epochs", type=int, default=None,
                        help="epoch cap of the sweep (default: --epochs)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--max_len", type=int, default=50, help="MAX_ITEM_LIST_LENGTH")
    parser.add_argument("--size", type=int, default=64, help="embedding_size and hidden_size of every model")
    parser.add_argument("--train_batch_size", type=int, default=2048)
    parser.add_argument("--learning_rate", type=float, default=0.001)
    parser.add_argument("--attnrnn_option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra AttnRNN option for every AttnRNN run (repeatable), e.g. dropout_prob=0.3")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="docs/results/attnrnn_benchmark", help="path stem of the .json and .md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def shared_properties(args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    """What every run has in common."""
    properties = {
        "seed": args.seed,
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "embedding_size": args.size,
        "hidden_size": args.size,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "train_batch_size": args.train_batch_size,
        "learning_rate": args.learning_rate,
        "epochs": epochs,
        "device": args.device,
        "state": "WARNING",
        "show_progress": False,
    }
    if args.data_path:
        properties["data_path"] = args.data_path
    return properties


def attnrnn_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--attnrnn_option KEY=VALUE`` pairs, values read as YAML scalars."""
    options = {}
    for option in args.attnrnn_option:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise SystemExit(f"--attnrnn_option {option!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    return options


def planned_runs(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, model, config_dict) of every run, comparison first."""
    sweep_epochs = args.sweep_epochs or args.epochs
    extra = attnrnn_options(args)
    runs = [
        (model, model, {**shared_properties(args, args.epochs), **(extra if model == "AttnRNN" else {})})
        for model in split_list(args.models)
    ]
    for attention_type in split_list(args.attention_types):
        config = {**shared_properties(args, sweep_epochs), **extra, "attention_type": attention_type}
        runs.append((f"AttnRNN[{attention_type}]", "AttnRNN", config))
    return runs


def reusable(done: dict[str, dict[str, Any]], model: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """A finished run of ``model`` whose final config already has every
    value of ``config`` (e.g. the sweep's default attention_type)."""
    for result in done.values():
        final = result["config"]
        if result["model"] == model and all(
            final.get(key) == value for key, value in config.items() if key not in NOT_COMPARED
        ):
            return result
    return None


def table_row(label: str, result: dict[str, Any]) -> list[str]:
    valid, test = result["best_valid"], result["test"]
    return [
        label,
        str(result["epochs_run"]),
        str(result["best_epoch"]),
        f"{result['times']['train_seconds_per_epoch']:.1f}",
        f"{valid['ndcg@10']:.4f}",
        f"{test['ndcg@10']:.4f}",
        f"{test['hit@10']:.4f}",
        f"{test['mrr@10']:.4f}",
    ]


def markdown_table(done: dict[str, dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(table_row(label, result)) + " |" for label, result in done.items()]
    return "\n".join(lines)


def plain_table(done: dict[str, dict[str, Any]]) -> str:
    rows = [list(COLUMNS)] + [table_row(label, result) for label, result in done.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def save(stem: Path, args: argparse.Namespace, done: dict[str, dict[str, Any]], began: float) -> None:
    record = {
        "command": shlex.join(["python", "benchmarks/attnrnn_vs_baselines.py", *args.argv]),
        "arguments": {key: value for key, value in vars(args).items() if key != "argv"},
        "wall_seconds": time.perf_counter() - began,
        "machine": machine(args.device),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": versions(),
        "runs": done,
    }
    write_json_atomic(stem.with_suffix(".json"), record)
    header = (
        f"# AttnRNN vs baselines on {args.dataset}\n\n"
        f"`{record['command']}`\n\n"
        f"{record['machine']['processor']}, {os.cpu_count()} CPUs, "
        f"torch threads {record['machine']['torch_threads']}, device {args.device}; "
        f"wall time {record['wall_seconds'] / 60:.1f} min.\n\n"
    )
    write_text_atomic(stem.with_suffix(".md"), header + markdown_table(done) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stem = Path(args.output)
    stem.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    done: dict[str, dict[str, Any]] = {}
    for label, model, config in planned_runs(args):
        result = reusable(done, model, config)
        if result is None:
            print(f"--- {label}", flush=True)
            result = recbole_attn.run(model, args.dataset, config_dict=config, write_results=False)
        done[label] = result
        save(stem, args, done, began)
        print(plain_table(done), flush=True)
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
