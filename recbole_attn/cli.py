"""The one command line: ``recbole-attn`` (also ``python run.py`` and
``python -m recbole_attn``).

``train`` is the default: ``--model=NAME --dataset=NAME [--key=value ...]``,
as RecBole's ``run_recbole.py``: ``--model``, ``--dataset`` and
``--config_files`` (comma- or space-separated) are ours; every other
``--key=value`` overrides a config key. ``recommend``, ``explain`` and
``export`` serve a trained checkpoint, ``bench`` runs :mod:`recbole_attn.bench`. Exit codes: 0
success, 2 bad input (one line on stderr, no results file), 1 any other failure.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from recbole_attn.config import parse_cmd_args
from recbole_attn.errors import OneLineArgumentParser, RunFailed, UsageError, choice_error
from recbole_attn.validation import check_unrepeated

#: Subcommands that serve a trained checkpoint (:mod:`recbole_attn.serve`).
SERVE_COMMANDS = ("recommend", "explain", "export")
#: Every word that may come first; anything else first must be a ``--key=value``.
COMMANDS = ("train", *SERVE_COMMANDS, "bench", "help")
HELP = """\
usage: {prog} [train] --model=NAME --dataset=NAME [--config_files=a.yaml,b.yaml] [--key=value ...]
       {prog} recommend --checkpoint=FILE (--user=TOKEN[,TOKEN...] | --history=ITEM,ITEM,...) [-k N]
       {prog} explain --checkpoint=FILE (--user=TOKEN | --history=ITEM,ITEM,...) [--png=FILE]
       {prog} export --checkpoint=FILE --out=DIR [--format=onnx]
       {prog} bench [--dataset=NAME] [--models=A,B,...] [--budget=SECONDS] [--key=value ...]
       {prog} --version

commands:
  train      train, validate and test one model (the default); any --key=value is a RecBole or
             project option (README, "Configuration")
  recommend  top-k items of a trained checkpoint for known users or a new history
  explain    the attention weights behind a recommendation
  export     the history encoder (ONNX) and item table of a checkpoint, to serve without this package
  bench      several models under one protocol: tables, CSV, plots (python -m recbole_attn.bench)

Run '{prog} COMMAND --help' for a command's own options. Exit codes: 0 success, 2 bad input, 1 failure."""


def program_name() -> str:
    """How the user started this command, for usage lines."""
    started = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if started == "__main__.py":
        return "python -m recbole_attn"
    return f"python {started}" if started.endswith(".py") else started or "recbole-attn"


def split_run_args(argv: Sequence[str]) -> tuple[str, str, list[str], list[str]]:
    """Pull model, dataset and config files out of ``argv``; the rest stays
    ``--key=value`` config overrides."""
    options = parse_cmd_args(argv)
    model = options.pop("model", None)
    dataset = options.pop("dataset", "ml-100k")
    if not model:
        raise UsageError(f"--model is required: {program_name()} --model=NAME --dataset=NAME [--key=value ...]")
    files = options.pop("config_files", "")
    config_files = [f for f in files.replace(",", " ").split() if f]
    rest = [f"--{key}={value}" for key, value in options.items()]
    return model, dataset, config_files, rest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(HELP.format(prog=program_name()))
        return 0
    if argv and argv[0] == "--version":
        from recbole_attn import __version__

        print(f"recbole-attn {__version__}")
        return 0
    if argv and argv[0] == "bench":
        from recbole_attn.bench.cli import main as bench_main

        return bench_main(argv[1:], prog=f"{program_name()} bench")
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"error: {choice_error('command', argv[0], COMMANDS)}", file=sys.stderr)
        return 2
    if argv and argv[0] == "train":
        argv = argv[1:]
    from recbole_attn.results import format_results_table
    from recbole_attn.runner import run

    try:
        if argv and argv[0] in SERVE_COMMANDS:
            return serve_main(argv)
        model, dataset, config_files, rest = split_run_args(argv)
        result = run(model, dataset, config_files=config_files, cmd_args=rest)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (RunFailed, OSError) as error:  # diverged training, full disk: said in one line
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception:
        logging.getLogger(__name__).exception("run failed")
        return 1
    print(format_results_table(result))
    print(f"results: {result.get('results_file')}")
    return 0


# -- serving a trained checkpoint ------------------------------------------------

def _serve_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=program_name(), description="Serve a trained checkpoint.")
    commands = parser.add_subparsers(dest="command", required=True)
    recommend_cmd = commands.add_parser("recommend", help="top-k items for users or a history")
    explain_cmd = commands.add_parser("explain", help="attention weights over a history")
    for command in (recommend_cmd, explain_cmd):
        command.add_argument("--checkpoint", required=True, help="a .pth file written by training")
        who = command.add_mutually_exclusive_group(required=True)
        several = " (or several, comma-separated)" if command is recommend_cmd else ""
        who.add_argument("--user", help=f"a known user token{several}")
        who.add_argument("--history", help="item tokens, oldest first, comma-separated (a new user)")
        command.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
        command.add_argument("--data_path", default=None, help="folder holding <dataset>/, if the data moved")
        command.add_argument("--user_features", default=None, metavar="FIELD=TOKEN,...",
                             help="with --history, for a model trained with user_features: the new user's "
                                  "features, e.g. age=25,gender=F (a token_seq field's tokens "
                                  "separated by the dataset's seq_separator)")
    recommend_cmd.add_argument("-k", type=int, default=10, help="how many items (default: 10)")
    recommend_cmd.add_argument("--include_seen", action="store_true", help="also rank the history's own items")
    explain_cmd.add_argument("--png", default=None, help="draw a heatmap to this file (needs matplotlib)")
    export_cmd = commands.add_parser("export", help="the history encoder and item table, for serving elsewhere")
    export_cmd.add_argument("--checkpoint", required=True, help="a .pth file written by training")
    export_cmd.add_argument("--format", default="onnx", help="onnx (default: onnx)")
    export_cmd.add_argument("--out", required=True, help="a new folder for the exported files")
    export_cmd.add_argument("--data_path", default=None, help="folder holding <dataset>/, if the data moved")
    return parser


def _split(text: str) -> list[str]:
    return [token.strip() for token in text.split(",") if token.strip()]


def _features(text: str) -> dict[str, str]:
    """``age=25,gender=F`` -> ``{"age": "25", "gender": "F"}``."""
    pairs = [part.partition("=") for part in _split(text)]
    if not pairs or any(not sep or not key.strip() for key, sep, _ in pairs):
        raise UsageError(f"--user_features must be FIELD=TOKEN pairs separated by commas, got {text!r}")
    check_unrepeated("--user_features", [key.strip() for key, _, _ in pairs], text)
    return {key.strip(): value.strip() for key, _, value in pairs}


def serve_main(argv: Sequence[str]) -> int:
    """``run.py recommend|explain|export ...``; :func:`main` turns a
    :class:`UsageError` into exit code 2 and any other failure into 1."""
    from recbole_attn.serve import explain, format_explanation, format_recommendations, load, recommend

    args = _serve_parser().parse_args(list(argv))
    if args.command == "export":
        from recbole_attn.serve.export import export_model

        loaded = load(args.checkpoint, device="cpu", data_path=args.data_path)
        print(f"exported: {export_model(loaded, args.out, args.format)}")
        return 0
    if args.command == "explain" and args.png:
        from recbole_attn.serve.plot import check_figure_path

        check_figure_path(args.png)  # before the slow part
    if args.user is not None and not _split(args.user):
        raise UsageError(f"--user names no user token, got {args.user!r}")
    if args.user_features is not None and args.user is not None:
        raise UsageError("--user_features goes with --history (a new user); known users bring their own")
    features = None if args.user_features is None else _features(args.user_features)
    loaded = load(args.checkpoint, device=args.device, data_path=args.data_path)
    if args.command == "recommend":
        query: dict[str, Any] = {"users": _split(args.user)} if args.user is not None else {
            "histories": [_split(args.history)], **({"user_features": [features]} if features else {})}
        recs = recommend(loaded, **query, k=args.k, exclude_seen=not args.include_seen)
        for index, key in enumerate(recs.keys):
            print(f"user {key}" if args.user is not None else f"history {args.history}")
            print(format_recommendations(loaded, recs, index))
        return 0
    query = {"user": args.user} if args.user is not None else {"history": _split(args.history),
                                                               "user_features": features}
    explanation = explain(loaded, **query)
    print(format_explanation(explanation))
    if args.png:
        from recbole_attn.serve.plot import plot_explanation

        print(f"heatmap: {plot_explanation(explanation, args.png)}")
    return 0
