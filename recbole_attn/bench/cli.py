"""Command line of ``python -m recbole_attn.bench``.

Exit codes: 0 every model ran; 1 at least one model failed (its row holds
the error) or had no tuning trial finish (its trials are in the JSON), the
files are written; 2 bad input (one line on stderr).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from recbole_attn.errors import OneLineArgumentParser, UsageError

EPILOG = """\
Any other --key=value is a RecBole/project config override applied to every
model (e.g. --filter_seen=True --device=cpu --show_progress=True).
How to read the results: docs/benchmarks_howto.md."""


def budget_seconds(text: str) -> float | None:
    """``--budget``: seconds >= 0, or ``none`` for no budget."""
    if text.strip().lower() in ("none", "~", "off"):
        return None
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"budget must be >= 0 seconds or 'none', got {text!r}")
    return value


def seed_list(text: str) -> tuple[int, ...]:
    """``--seeds``: distinct integers, comma-separated."""
    try:
        seeds = tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds must be distinct and at least one, got {text!r}")
    return seeds


def parse_args(argv: Sequence[str], prog: str = "python -m recbole_attn.bench") -> tuple[argparse.Namespace, list[str]]:
    """The benchmark's own options, and the ``--key=value`` overrides left over."""
    from recbole_attn.bench.suite import DEFAULT_MODELS

    parser = OneLineArgumentParser(
        prog=prog, allow_abbrev=False, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train and evaluate several models on one dataset under identical properties; "
                    "write a JSON record, a Markdown table, a CSV and PNG plots.")
    parser.add_argument("--dataset", default="ml-100k", help="dataset name (default: ml-100k, embedded)")
    parser.add_argument("--data_path", default=None, help="folder holding DATASET/DATASET.inter")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated; NAME[attention_type] picks an AttnRNN attention, "
                             "NAME[key=value;key=value] a variant row (default: %(default)s)")
    parser.add_argument("--attention_types", default="",
                        help="comma-separated AttnRNN attention types, one row each, "
                             "e.g. additive,general,dot")
    parser.add_argument("--budget", type=budget_seconds, default=600.0,
                        help="seconds of fitting per model; training stops at the first batch past it "
                             "('none': no budget; default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=200, help="epoch cap per model (default: %(default)s)")
    parser.add_argument("--output_dir", default="benchmarks/results",
                        help="where the files go (default: %(default)s)")
    parser.add_argument("--config_files", default="", help="YAML files for every model, comma-separated")
    parser.add_argument("--jobs", type=int, default=1,
                        help="models trained at once, one process each (a GPU with room for several; "
                             "times are then under shared load; default: %(default)s)")
    parser.add_argument("--seeds", type=seed_list, default=(),
                        help="comma-separated seeds: every model once per seed, tables show mean ± std "
                             "(default: the configured seed, 2020)")
    parser.add_argument("--reference", default=None,
                        help="model every other is compared with, per user, with a paired bootstrap CI and "
                             "Holm-corrected p-values (default: AttnSeq when it runs)")
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="N validation-only trials per model: its untuned settings, then N-1 drawn "
                             "by Optuna over its search space (properties/search/<Model>.yaml); then every "
                             "seed with the best setting (default: 0, the models' defaults)")
    parser.add_argument("--report", default=None, metavar="BENCH.json",
                        help="train nothing: recompute the comparisons of a finished benchmark from its "
                             "saved per-user hits (with --reference, against another model), redraw its plots and "
                             "rewrite its Markdown and CSV beside it")
    parser.add_argument("--merge", default=None, metavar="A.json,B.json",
                        help="train nothing: pool finished benchmarks of one dataset (e.g. seeds run apart) "
                             "into one new record under --output_dir, with comparisons over all their seeds")
    parser.add_argument("--in_process", action="store_true",
                        help="run models in this process, not one fresh process each "
                             "(peak RSS is then cumulative)")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None, prog: str = "python -m recbole_attn.bench") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_args(argv, prog)
    from recbole_attn.bench.merge import merge_records
    from recbole_attn.bench.report import summary_table
    from recbole_attn.bench.rewrite import rewrite_record
    from recbole_attn.bench.suite import run_benchmark, split_list

    command = shlex.join([*prog.split(), *argv])
    try:
        if args.report and args.merge:
            raise UsageError("--report and --merge exclude each other: rewrite one record or merge several")
        if args.report:
            record = rewrite_record(args.report, args.reference)
        elif args.merge:
            record = merge_records(split_list(args.merge), args.output_dir, args.reference, command=command)
        else:
            record = run_benchmark(
                dataset=args.dataset, models=split_list(args.models),
                attention_types=split_list(args.attention_types),
                budget=args.budget, epochs=args.epochs, output_dir=args.output_dir, data_path=args.data_path,
                config_files=split_list(args.config_files), overrides=overrides, isolated=not args.in_process,
                command=command, jobs=args.jobs, seeds=args.seeds,
                reference=args.reference, tune=args.tune,
            )
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_table(record))
    for kind, path in record["files"].items():
        print(f"{kind}: {path}")
    failed = [row["label"] for row in record["rows"] if row["status"] == "error"]
    if failed:
        print(f"{len(failed)} of {len(record['rows'])} models failed: {', '.join(failed)} "
              "(see the status column)")
    untuned = [label for label, found in (record.get("tuning") or {}).items() if found.get("best") is None]
    if untuned:
        print(f"every tuning trial failed for {', '.join(untuned)}: no rows for them (trials in the JSON)")
    return 1 if failed or untuned else 0
