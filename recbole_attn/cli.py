"""Command line: ``python run.py --model=NAME --dataset=NAME [--key=value ...]``.

Arguments follow RecBole's ``run_recbole.py``: ``--model``, ``--dataset`` and
``--config_files`` (comma- or space-separated) are ours; every other
``--key=value`` overrides a config key. Exit codes: 0 success, 2 bad input
(one line on stderr, no results file), 1 any other failure.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from recbole_attn.config import parse_cmd_args
from recbole_attn.errors import RunFailed, UsageError

#: Subcommands that serve a trained checkpoint (recbole_attn/serve.py).
SERVE_COMMANDS = ("recommend", "explain")
USAGE = "usage: python run.py --model=NAME --dataset=NAME [--config_files=a.yaml,b.yaml] [--key=value ...]"


def split_run_args(argv: Sequence[str]) -> tuple[str, str, list[str], list[str]]:
    """Pull model, dataset and config files out of ``argv``; the rest stays
    ``--key=value`` config overrides."""
    options = parse_cmd_args(argv)
    model = options.pop("model", None)
    dataset = options.pop("dataset", "ml-100k")
    if not model:
        raise UsageError(f"--model is required. {USAGE}")
    files = options.pop("config_files", "")
    config_files = [f for f in files.replace(",", " ").split() if f]
    rest = [f"--{key}={value}" for key, value in options.items()]
    return model, dataset, config_files, rest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    from recbole_attn.results import format_results_table
    from recbole_attn.runner import run

    try:
        if argv and argv[0] in SERVE_COMMANDS:
            from recbole_attn.serve import main as serve_main

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
