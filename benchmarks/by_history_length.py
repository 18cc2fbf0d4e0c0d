"""Where a model wins or loses against a reference, by the length of each
test user's history: the per-user NDCG@10 differences of the benchmark's
significance tables (seed s against seed s, averaged over the seeds both
ran), split into history-length groups, each with its paired bootstrap 95%
CI and paired t-test p, Holm-corrected over a model's groups. Read from the
saved hits: nothing is trained. A user's history length is the number of
their interactions in the dataset's ``.inter`` file before the test item
(the model sees at most ``MAX_ITEM_LIST_LENGTH`` of them); the dataset is
the records', read from ``--data_path`` as the benchmark does (ml-100k from
RecBole's embedded copy without it).

    python benchmarks/by_history_length.py --data_path=../shared/data \
        docs/results/bench_capped_amazon-beauty.json:AttnRNN \
        docs/results/bench_capped_amazon-beauty.json:AttnSeq \
        --output=docs/results/by_length_amazon-beauty

writes ``by_length_amazon-beauty.json`` and ``.md``. ``--edges=4,6,9``
sets the groups (up to 4, 5–6, 7–9, 10 and more); by default they split
the test users into five groups of about equal size.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recbole_attn.bench.model_runs import ModelRuns, model_runs
from recbole_attn.bench.significance import ALPHA, aligned, bootstrap_ci, holm, paired_p_value
from recbole_attn.data.fixtures import ML100K_DIR
from recbole_attn.errors import OneLineArgumentParser, UsageError
from recbole_attn.results import write_json_atomic, write_text_atomic

def inter_file(models: list[ModelRuns], data_path: Path | None) -> Path:
    """The ``.inter`` file of the records' one dataset."""
    datasets = sorted({str(model.record.get("dataset")) for model in models})
    if len(datasets) > 1:
        raise UsageError(f"the records ran on different datasets: {', '.join(datasets)}")
    dataset = datasets[0]
    if data_path is None:
        if dataset == "ml-100k":
            return ML100K_DIR / "ml-100k.inter"
        raise UsageError(f"--data_path is needed for {dataset!r}: only ml-100k comes with RecBole")
    path = data_path / dataset / f"{dataset}.inter"
    if not path.is_file():
        raise UsageError(f"--data_path {str(data_path)!r} holds no {dataset}/{dataset}.inter")
    return path


def history_lengths(inter: Path, user_field: str) -> pd.Series:
    """Each user's interactions in ``inter`` less one (the test item), by user token."""
    header = inter.open().readline().rstrip("\n").split("\t")
    names = {column.partition(":")[0]: column for column in header}
    if user_field not in names:
        raise UsageError(f"--user_field {user_field!r} is not a column of {inter}; its columns: "
                         f"{', '.join(names)}")
    users = pd.read_csv(inter, sep="\t", usecols=[names[user_field]], dtype=str).iloc[:, 0]
    return users.value_counts() - 1


def default_edges(lengths: np.ndarray, groups: int = 5) -> list[int]:
    """Upper bounds of all groups but the last, splitting ``lengths`` into
    about equal groups (fewer where many users share one length)."""
    cuts = np.quantile(lengths, np.linspace(0, 1, groups + 1)[1:-1], method="lower")
    return sorted({int(cut) for cut in cuts if cut < lengths.max()})


def group_names(edges: list[int]) -> list[str]:
    """``["≤ 4", "5–6", "≥ 7"]`` for edges ``[4, 6]``."""
    lows = [None, *(edge + 1 for edge in edges)]
    highs = [*edges, None]
    return [f"≤ {high}" if low is None else f"≥ {low}" if high is None else
            (f"{low}" if low == high else f"{low}–{high}") for low, high in zip(lows, highs)]


def per_user(models: list[ModelRuns]) -> tuple[np.ndarray, list[dict[int, np.ndarray]]]:
    """The users every run of every model evaluated (their tokens) and each
    model's per-user NDCG@10 by seed, aligned on them."""
    runs = [(index, seed, hits) for index, model in enumerate(models) for seed, hits in model.hits.items()]
    if any(hits.user_token is None for _, _, hits in runs):
        raise UsageError("a run saved no user tokens (a record from before they were saved): "
                         "history lengths cannot be looked up")
    users, values = aligned([hits for _, _, hits in runs])
    by_model: list[dict[int, np.ndarray]] = [{} for _ in models]
    for (index, seed, _), row in zip(runs, values):
        by_model[index][seed] = row
    return users, by_model


def compare_groups(models: list[ModelRuns], reference: ModelRuns, lengths: pd.Series,
                   edges: list[int] | None) -> dict[str, Any]:
    """Per history-length group: its users, the reference's NDCG@10 over all
    its seeds, and each model's NDCG@10 and difference to the reference over
    the seeds both ran, with CI and p. The reference's column does not
    depend on which models are listed or in what order."""
    users, values = per_user([*models, reference])
    user_lengths = lengths.reindex(users).to_numpy()
    if np.isnan(user_lengths).any():
        raise UsageError(f"{int(np.isnan(user_lengths).sum())} test users are not in the .inter file: "
                         "is it the dataset the records ran on?")
    edges = edges or default_edges(user_lengths)
    group_of = np.searchsorted(np.asarray(edges), user_lengths, side="left")
    names = group_names(edges)
    reference_values = values[-1]
    reference_mean = np.mean(list(reference_values.values()), axis=0)
    groups: list[dict[str, Any]] = [
        {"lengths": name, "users": int((group_of == g).sum()),
         "reference_ndcg@10": float(reference_mean[group_of == g].mean()) if (group_of == g).any() else None,
         "reference_seeds": sorted(reference_values), "models": {}}
        for g, name in enumerate(names)]
    for model, model_values in zip(models, values[:-1]):
        seeds = sorted(set(model_values) & set(reference_values))
        if not seeds:
            raise UsageError(f"{model.spec} and {reference.spec} share no seed")
        ours = np.mean([model_values[s] for s in seeds], axis=0)
        theirs = np.mean([reference_values[s] for s in seeds], axis=0)
        found: list[dict[str, Any]] = []
        for g in range(len(groups)):
            inside = group_of == g
            if not inside.any():  # --edges can leave a group without users
                found.append({"seeds": seeds, "ndcg@10": None, "reference_ndcg@10": None, "mean_difference": None,
                              "ci_low": float("nan"), "ci_high": float("nan"), "p_value": 1.0})
                continue
            difference = ours[inside] - theirs[inside]
            low, high = bootstrap_ci(difference)
            found.append({"seeds": seeds, "ndcg@10": float(ours[inside].mean()),
                          "reference_ndcg@10": float(theirs[inside].mean()),
                          "mean_difference": float(difference.mean()),
                          "ci_low": low, "ci_high": high, "p_value": paired_p_value(difference)})
        for group, result, p_holm in zip(groups, found, holm([r["p_value"] for r in found])):
            group["models"][model.spec] = {**result, "p_holm": p_holm, "significant": p_holm < ALPHA}
    return {"edges": edges, "groups": groups}


def markdown(result: dict[str, Any], models: list[ModelRuns], reference: ModelRuns, command: str) -> str:
    """One row per group: its users, the reference's NDCG@10, each model's
    difference with CI and Holm p (bold: significant)."""
    lines = [f"# Per-user NDCG@10 by history length: {', '.join(m.label for m in models)} against "
             f"{reference.label}", "", f"`{command}`", ""]
    header = ["history length", "users", f"{reference.label} NDCG@10",
              *(f"{model.label}: Δ [95% CI], p (Holm)" for model in models)]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for group in result["groups"]:
        cells = [group["lengths"], f"{group['users']:,}",
                 _metric(group["reference_ndcg@10"])]
        for model in models:
            found = group["models"][model.spec]
            if found["mean_difference"] is None:
                cells.append("-")
                continue
            p_text = f"p {found['p_holm']:.2g}" if found["p_holm"] >= 1e-4 else "p <1e-4"
            cells.append(f"{found['mean_difference']:+.4f} [{found['ci_low']:+.4f}, {found['ci_high']:+.4f}], "
                         + (f"**{p_text}**" if found["significant"] else p_text))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "History length: the user's interactions in the `.inter` file before the test item. "
                  f"{reference.label} NDCG@10: the group's mean over all of its seeds "
                  f"({', '.join(str(seed) for seed in sorted(reference.hits))}). "
                  f"Δ: the model's per-user NDCG@10 less {reference.label}'s, seed against seed over the seeds "
                  "both ran, with a paired bootstrap 95% CI; p: paired t-test, Holm-corrected over each "
                  "model's groups; **bold**: significant at 0.05.", "",
              "Records:", "", *[f"* `{path}`" for path in dict.fromkeys(str(m.path) for m in [*models, reference])]]
    return "\n".join(lines) + "\n"


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", metavar="model", help="RECORD.json:LABEL of a model compared")
    parser.add_argument("reference", help="RECORD.json:LABEL of the reference")
    parser.add_argument("--data_path", type=Path, help="folder holding DATASET/DATASET.inter (not for ml-100k)")
    parser.add_argument("--user_field", default="user_id", help="its user column (default user_id)")
    parser.add_argument("--edges", help="upper history lengths of the groups but the last, e.g. 4,6,9")
    parser.add_argument("--output", type=Path, required=True, help="path stem of the .json and .md written")
    args = parser.parse_args(argv)
    try:
        edges = None if args.edges is None else [int(word) for word in args.edges.split(",")]
    except ValueError:
        parser.error(f"--edges {args.edges!r} is not a comma-separated list of whole numbers, e.g. 4,6,9")
    if edges is not None and (edges != sorted(set(edges)) or edges[0] < 0):
        parser.error(f"--edges {args.edges!r} must rise strictly from 0 or more, e.g. 4,6,9")
    try:
        reference = model_runs(args.reference)
        models = [model_runs(spec) for spec in args.models]
        lengths = history_lengths(inter_file([*models, reference], args.data_path), args.user_field)
        result = compare_groups(models, reference, lengths, edges)
    except (OSError, ValueError, KeyError, UsageError) as error:
        parser.error(str(error))
    command = shlex.join(["python", "benchmarks/by_history_length.py",
                          *([f"--data_path={args.data_path}"] if args.data_path else []), *args.models,
                          args.reference, *([f"--edges={args.edges}"] if args.edges else []),
                          f"--output={args.output}"])
    record = {"command": command, "reference": args.reference, "models": args.models, **result}
    write_json_atomic(Path(f"{args.output}.json"), record)
    write_text_atomic(Path(f"{args.output}.md"), markdown(result, models, reference, command))
    print(markdown(result, models, reference, command), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
