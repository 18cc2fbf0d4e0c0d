"""The fresh process each benchmark row runs in, so its peak memory is its
own: ``python -m recbole_attn.bench.worker SPEC.json ROW.json``."""
from __future__ import annotations

import json
import sys

from recbole_attn.bench.measure import run_row
from recbole_attn.results import write_json_atomic


def main(argv: list[str]) -> int:
    spec_file, row_file = argv
    with open(spec_file) as source:
        spec = json.load(source)
    write_json_atomic(row_file, run_row(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
