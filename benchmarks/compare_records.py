"""Compare one model's runs in one benchmark record with another model's runs
in another record, per user, from the hits both saved; nothing is trained.

For runs that ``--merge`` rightly keeps apart because they trained under
other settings (a model trained to early stopping against one stopped at an
epoch cap): the same paired comparison as the benchmark's tables (seed s
against seed s, per-user NDCG@10 difference averaged over the shared seeds,
bootstrap 95% CI, paired t-test), overall and per seed.

    python benchmarks/compare_records.py \
        docs/results/bench_sasrec_amazon-beauty-3seeds.json:SASRec \
        docs/results/bench_capped_amazon-beauty.json:AttnSeq \
        --output=docs/results/sasrec_converged_vs_attnseq_capped_amazon-beauty.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from recbole_attn.bench.significance import Comparison, compare
from recbole_attn.user_ranks import UserHits, load_user_hits


def runs_of(spec: str) -> tuple[str, dict[int, UserHits]]:
    """``RECORD.json:LABEL`` -> (label, {seed: hits}) of that label's runs."""
    path_text, _, label = spec.rpartition(":")
    if not path_text or not label:
        raise ValueError(f"{spec!r} is not RECORD.json:LABEL")
    path = Path(path_text)
    record = json.loads(path.read_text())
    found = {row["seed"]: load_user_hits(path.parent / row["ranks_file"]) for row in record["rows"]
             if row.get("label") == label and row.get("ranks_file")}
    if not found:
        labels = sorted({row.get("label") for row in record["rows"]})
        raise ValueError(f"no saved hits of {label!r} in {path}; its labels: {', '.join(map(str, labels))}")
    return label, found


def _plain(comparison: Comparison) -> dict[str, Any]:
    """As JSON allows: no Holm correction over one comparison (NaN) is null."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value
            for key, value in comparison.as_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="RECORD.json:LABEL of the model compared")
    parser.add_argument("reference", help="RECORD.json:LABEL of the reference")
    parser.add_argument("--output", type=Path, help="write the comparisons here as JSON")
    args = parser.parse_args()
    try:
        (model, runs), (reference, reference_runs) = runs_of(args.model), runs_of(args.reference)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    overall = compare(model, runs, reference, reference_runs)
    if overall is None:
        parser.error(f"{args.model} and {args.reference} share no seed and user")
    per_seed = [one_seed for seed in overall.seeds
                if (one_seed := compare(model, {seed: runs[seed]}, reference, {seed: reference_runs[seed]}))]
    for label, found in [("seeds " + ", ".join(map(str, overall.seeds)), overall)] + [
            (f"seed {c.seeds[0]}", c) for c in per_seed]:
        print(f"{model} vs {reference}, {label}: {found.mean_difference:+.4f} "
              f"[{found.ci_low:+.4f}, {found.ci_high:+.4f}], p {found.p_value:.2g}, {found.users} users")
    if args.output:
        args.output.write_text(json.dumps({
            "command": f"python benchmarks/compare_records.py {args.model} {args.reference}"
                       f" --output={args.output}",
            "overall": _plain(overall), "per_seed": [_plain(c) for c in per_seed],
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
