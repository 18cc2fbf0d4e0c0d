"""Compare models' runs in benchmark records with a reference model's runs in
another record, per user, from the hits they saved; nothing is trained.

For runs that ``--merge`` rightly keeps apart because they trained under
other settings (a model trained to early stopping against one stopped at an
epoch cap, or another width): the same paired comparison as the benchmark's
tables (seed s against seed s, per-user NDCG@10 difference averaged over the
shared seeds, bootstrap 95% CI, paired t-test, Holm-corrected over the
models given), overall and per seed. The last RECORD.json:LABEL is the
reference.

    python benchmarks/compare_records.py \
        docs/results/bench_sasrec_amazon-beauty-3seeds.json:SASRec \
        docs/results/bench_capped_amazon-beauty.json:AttnSeq \
        --output=docs/results/sasrec_converged_vs_attnseq_capped_amazon-beauty.json

``--markdown=FILE`` also writes the models as one table, the benchmark's
own columns plus how each was trained (early stopping, an epoch cap, a time
budget) and the record it comes from: one table per dataset out of records
that cannot be merged.
"""
from __future__ import annotations

import json
import math
import os
import shlex
from pathlib import Path
from typing import Any

from recbole_attn.bench import report
from recbole_attn.bench.model_runs import ModelRuns, model_runs
from recbole_attn.bench.significance import Comparison, compare, holm_corrected
from recbole_attn.errors import OneLineArgumentParser
from recbole_attn.results import write_text_atomic


def _plain(comparison: Comparison) -> dict[str, Any]:
    """As JSON allows: no Holm correction of one seed's comparison (NaN) is null."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value
            for key, value in comparison.as_dict().items()}


def training_text(model: ModelRuns) -> str:
    """What ended the runs: ``early stopping``, ``45-epoch cap (3 of 3 runs
    reached it)``, ``600 s budget`` or ``early stopping within 300 s``."""
    budget, cap = model.record.get("budget_seconds"), model.record.get("epochs")
    done = [row for row in model.rows if row.get("test")]
    capped = sum(row.get("epochs_run") == cap for row in done)
    if capped:
        return f"{cap}-epoch cap ({capped} of {len(done)} runs reached it)"
    if budget is not None:
        stopped = any(row.get("status") == "budget" for row in model.rows)
        return f"{budget:g} s budget" if stopped else f"early stopping within {budget:g} s"
    return "early stopping"


def markdown(models: list[ModelRuns], comparisons: dict[str, Comparison], command: str) -> str:
    """The models as one table sorted by test NDCG@10, with the published
    anchors of their dataset and the records they come from."""
    reference = models[-1]
    datasets = sorted({model.record.get("dataset", "?") for model in models})
    shared, differing = report.protocol([row for model in models for row in model.rows])
    differing = [key for key in differing if key not in ("epochs", "time_budget")]  # the training column
    lines = [f"# {', '.join(datasets)}: {len(models)} models from {len({m.path for m in models})} records", "",
             f"`{command}`", ""]
    if differing:
        lines += [f"**Not identical across rows: {', '.join(differing)}** "
                  "(see each record's per-row config).", ""]
    lines += [f"| model | settings | training | runs | test NDCG@10 | test HR@10 | Δ NDCG@10 vs {reference.label} "
              "[95% CI] | p (Holm) | best valid NDCG@10 | s/epoch | s to best | epochs (best) | record |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    reference_runs = len(reference.hits)
    for model in sorted(models, key=lambda m: -report.mean_test_ndcg(m.rows)):
        found = comparisons.get(model.spec)
        cells = report.model_cells(model.record, model.label, model.rows,
                                   None if found is None else found.as_dict(),
                                   model.label if model is reference else None, reference_runs)
        cells.insert(1, training_text(model))
        lines.append(" | ".join([f"| {model.label}", *cells, f"`{model.path.name}`"]) + " |")
    lines += ["", "Mean ± sample std over each model's seeds. Δ: per-user NDCG@10 difference to the reference "
                  "over the seeds both ran (seed s against seed s), with a paired bootstrap 95% CI; p: two-sided "
                  "paired t-test, Holm-corrected over the models; **bold**: significant at 0.05. Times come from "
                  "each record's own machine and load (its header): compare them within a record."]
    if len(datasets) == 1:
        lines += report.anchor_lines(datasets[0], shared)
    lines += ["", "Records:", ""] + [f"* `{path}`" for path in dict.fromkeys(os.fspath(m.path) for m in models)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="model", help="RECORD.json:LABEL of a model compared")
    parser.add_argument("reference", help="RECORD.json:LABEL of the reference")
    parser.add_argument("--output", type=Path, help="write the comparisons here as JSON")
    parser.add_argument("--markdown", type=Path, help="write every model and the reference here as one table")
    args = parser.parse_args()
    try:
        reference = model_runs(args.reference)
        compared = [model_runs(spec) for spec in args.models]
    except (OSError, ValueError, KeyError) as error:
        parser.error(str(error))
    overall: list[Comparison] = []
    for model in compared:
        found = compare(model.label, model.hits, reference.label, reference.hits)
        if found is None:
            parser.error(f"{model.spec} and {args.reference} share no seed and user")
        overall.append(found)
    overall = holm_corrected(overall)
    results = []
    for model, found in zip(compared, overall):
        per_seed = [one_seed for seed in found.seeds if (one_seed := compare(
            model.label, {seed: model.hits[seed]}, reference.label, {seed: reference.hits[seed]}))]
        for label, shown in [("seeds " + ", ".join(map(str, found.seeds)), found)] + [
                (f"seed {c.seeds[0]}", c) for c in per_seed]:
            holm_text = f" (Holm {shown.p_holm:.2g})" if len(overall) > 1 and shown is found else ""
            print(f"{model.label} vs {reference.label}, {label}: {shown.mean_difference:+.4f} "
                  f"[{shown.ci_low:+.4f}, {shown.ci_high:+.4f}], p {shown.p_value:.2g}{holm_text}, "
                  f"{shown.users} users")
        results.append({"model": model.spec, "overall": _plain(found), "per_seed": [_plain(c) for c in per_seed]})
    command = shlex.join(["python", "benchmarks/compare_records.py", *args.models, args.reference]
                         + [f"--{name}={value}" for name, value in (("output", args.output),
                                                                    ("markdown", args.markdown)) if value])
    if args.output:
        write_text_atomic(args.output, json.dumps({"command": command, "reference": args.reference,
                                                   "comparisons": results}, indent=2) + "\n")
    if args.markdown:
        write_text_atomic(args.markdown, markdown([*compared, reference],
                                                  {m.spec: c for m, c in zip(compared, overall)}, command))


if __name__ == "__main__":
    main()
