"""The benchmark's files: the JSON record (everything), a Markdown table
sorted by test NDCG@10 and a CSV of the same rows, all written atomically
under names no earlier run used."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recbole_attn.bench import run_settings, significance, time_to_quality
from recbole_attn.errors import UsageError
from recbole_attn.results import unique_results_path, write_json_atomic, write_text_atomic
from recbole_attn.user_ranks import UserHits, load_user_hits

TABLE_FILES = ("json", "markdown", "csv")
#: Config keys every row must share; the report names any that differ.
PROTOCOL_KEYS = ("seed", "MAX_ITEM_LIST_LENGTH", "embedding_size", "hidden_size", "loss_type", "eval_args",
                 "metrics", "topk", "valid_metric", "filter_seen", "epochs", "time_budget")
#: Row fields copied as they are into the CSV (metrics follow as test_* and valid_*).
SCALAR_FIELDS = ("status", "epochs_run", "epochs_trained", "best_epoch", "train_seconds_per_epoch", "fit_seconds",
                 "seconds_to_best", "train_targets", "train_targets_per_second", "test_users",
                 "inference_users_per_second", "eval_users_per_second", "peak_rss_mb", "peak_cuda_mb",
                 "device", "wall_seconds")
STATUS_TEXT = {"ok": "ok", "budget": "**budget-stopped**"}


def output_paths(output_dir: str | os.PathLike, dataset: str) -> dict[str, Path]:
    """Fresh file names (time stamp + random tag) for one benchmark run."""
    return record_paths(unique_results_path(output_dir, f"bench-{dataset}"))


def record_paths(json_path: Path) -> dict[str, Path]:
    """The files of the benchmark record ``json_path``, named after it."""
    stem = str(json_path)[: -len(".json")]
    return {"json": json_path, "markdown": Path(stem + ".md"), "csv": Path(stem + ".csv"),
            "curves_png": Path(stem + "-curves.png"), "bars_png": Path(stem + "-bars.png"),
            "ranks": Path(stem + "-ranks")}


def listed_files(paths: dict[str, Path]) -> dict[str, str]:
    """The record's ``files`` entry: its tables, and the plots already written."""
    return {kind: str(path) for kind, path in paths.items()
            if kind in TABLE_FILES or (kind.endswith("_png") and path.is_file())}


def read_record(json_file: str | os.PathLike) -> dict[str, Any]:
    """A finished benchmark's JSON record; a :class:`UsageError` naming the
    file when it cannot be read or has no rows."""
    try:
        record = json.loads(Path(json_file).read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the benchmark record {os.fspath(json_file)!r}: {error}") from None
    if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
        raise UsageError(f"{os.fspath(json_file)!r} is not a benchmark record (no rows)")
    return record


def choose_reference(reference: str | None, labels: list[str], default: str | None = None) -> str | None:
    """The row the others are compared with: ``reference``, which must be
    one of ``labels``, else ``default`` when it is one, else none."""
    if reference is None:
        return default if default in labels else None
    if reference not in labels:
        raise UsageError(f"reference {reference!r} is not among the models: {', '.join(labels)}")
    return reference


def file_label(label: str) -> str:
    """A row label as part of a file name: ``AttnRNN[general]`` -> ``AttnRNN_general``."""
    return re.sub(r"[^\w.-]+", "_", label).strip("_")


def comparisons(rows: list[dict[str, Any]], reference: str | None, folder: str | os.PathLike = ".",
                ) -> list[dict[str, Any]]:
    """Every model against ``reference`` from the rows' saved per-user hits
    (``ranks_file``, relative to ``folder``, the record's;
    :func:`recbole_attn.bench.significance.compare_all`); [] without a reference."""
    if reference is None:
        return []
    runs: dict[str, dict[int, UserHits]] = {}
    for row in rows:
        path = Path(folder) / row["ranks_file"] if row.get("ranks_file") else None
        if path is not None and path.is_file():
            runs.setdefault(row["label"], {})[int(row["seed"])] = load_user_hits(path)
    return [comparison.as_dict() for comparison in significance.compare_all(runs, reference)]


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """One row as flat scalars: model, the :data:`SCALAR_FIELDS`, every test
    and best-valid metric, the error."""
    flat = {"model": row["label"], "model_class": row["model"], "seed": row.get("seed")}
    flat.update({field: row.get(field) for field in SCALAR_FIELDS})
    flat.update({f"test_{metric}": value for metric, value in (row.get("test") or {}).items()})
    flat.update({f"valid_{metric}": value for metric, value in (row.get("best_valid") or {}).items()})
    flat["error"] = " ".join(str(row.get("error", "")).split())  # one line per row in the CSV too
    return flat


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best test NDCG@10 first; failed rows last, in their run order."""
    def key(row: dict[str, Any]) -> tuple[bool, float]:
        score = (row.get("test") or {}).get("ndcg@10")
        return score is None, -(score if score is not None else 0.0)

    return sorted(rows, key=key)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def format_metric(value: Any) -> str:
    return "-" if _missing(value) else f"{value:.4f}"


def format_seconds(value: Any) -> str:
    if _missing(value):
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def format_count(value: Any) -> str:
    return "-" if _missing(value) else f"{value:,.0f}"


def format_status(flat: dict[str, Any]) -> str:
    if flat["status"] in STATUS_TEXT:
        return STATUS_TEXT[flat["status"]]
    error = (flat["error"] or "unknown").replace("|", "\\|")
    return f"error: {error[:117] + '...' if len(error) > 120 else error}"


def epochs_count(flat: dict[str, Any]) -> str:
    """Epochs run; a fraction (``0.37``) when the budget cut the last one."""
    trained = flat.get("epochs_trained")
    return f"{trained:.2f}" if trained is not None and trained != flat["epochs_run"] else str(flat["epochs_run"])


def format_epochs(flat: dict[str, Any]) -> str:
    """``run (best)``, e.g. ``0.37 (0)``."""
    return "-" if flat["epochs_run"] is None else f"{epochs_count(flat)} ({flat['best_epoch']})"


def _field(name: str, formatter: Callable[[Any], str]) -> Callable[[dict[str, Any]], str]:
    return lambda flat: formatter(flat.get(name))


#: Markdown columns: header and how to show a flat row's cell.
COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("model", lambda flat: flat["model"]),
    ("seed", lambda flat: "-" if flat.get("seed") is None else str(flat["seed"])),
    ("status", format_status),
    ("test NDCG@10", _field("test_ndcg@10", format_metric)),
    ("test Recall@10", _field("test_recall@10", format_metric)),
    ("test MRR@10", _field("test_mrr@10", format_metric)),
    ("best valid NDCG@10", _field("valid_ndcg@10", format_metric)),
    ("epochs (best, from 0)", format_epochs),
    ("s/epoch", _field("train_seconds_per_epoch", format_seconds)),
    ("fit s", _field("fit_seconds", format_seconds)),
    ("s to best", _field("seconds_to_best", format_seconds)),
    ("train targets/s", _field("train_targets_per_second", format_count)),
    ("inference users/s", _field("inference_users_per_second", format_count)),
    ("peak RSS MB", _field("peak_rss_mb", format_count)),
    ("peak GPU MB", _field("peak_cuda_mb", format_count)),
)


#: Beyond-accuracy metrics (``--metrics="[..., 'ItemCoverage']"``), shown at @10 when a row has them.
BEYOND_ACCURACY = {"itemcoverage": "ItemCoverage", "averagepopularity": "AveragePopularity",
                   "giniindex": "GiniIndex", "shannonentropy": "ShannonEntropy", "tailpercentage": "TailPercentage"}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows sorted by test NDCG@10, numbered; the GPU column only when a row
    has one, beyond-accuracy columns only when a row computed them."""
    flats = [flat_row(row) for row in sort_rows(rows)]
    on_gpu = any(flat["peak_cuda_mb"] is not None for flat in flats)
    beyond = [(f"test {name}@10", _field(f"test_{key}@10", format_metric)) for key, name in BEYOND_ACCURACY.items()
              if any(flat.get(f"test_{key}@10") is not None for flat in flats)]
    accuracy = [column for column in COLUMNS if column[0].startswith("test ")]
    seeded = any(flat["seed"] is not None for flat in flats)
    others = [column for column in COLUMNS if not column[0].startswith("test ")
              and (column[0] != "peak GPU MB" or on_gpu) and (column[0] != "seed" or seeded)]
    leading = 3 if seeded else 2  # model (seed) status, then the metrics
    columns = others[:leading] + accuracy + beyond + others[leading:]
    lines = ["| # | " + " | ".join(header for header, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for rank, flat in enumerate(flats, 1):
        lines.append(f"| {rank} | " + " | ".join(cell(flat) for _, cell in columns) + " |")
    return "\n".join(lines)


#: Published full-ranking test results on exactly the files of ``../shared/data``
#: (``filter_seen: True``): shown beside a dataset's table as anchors.
PUBLISHED: dict[str, list[tuple[str, dict[str, float]]]] = {
    "amazon-beauty": [("ICLRec (Chen et al., WWW 2022)", {"ndcg@10": 0.0403, "hit@10": 0.0744})],
    "amazon-sports": [("ICLRec (Chen et al., WWW 2022)", {"ndcg@10": 0.0238, "hit@10": 0.0437})],
    "amazon-toys": [("ICLRec (Chen et al., WWW 2022)", {"ndcg@10": 0.0480, "hit@10": 0.0834})],
}


def mean_std(values: list[float]) -> str:
    """``0.0412 ± 0.0007`` (sample std), or the one value."""
    if not values:
        return "-"
    if len(values) == 1:
        return format_metric(values[0])
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def _mean(values: list[Any]) -> float | None:
    present = [value for value in values if not _missing(value)]
    return statistics.fmean(present) if present else None


def format_settings(settings: dict[str, Any] | None, ran_with: Sequence[str] = ()) -> str:
    """``ran_with`` (config files, ``key=value`` words) then ``settings`` (a
    variant's or the tuned ones), or "defaults" when there are none."""
    words = [*ran_with, *(f"{key}={value:.2g}" if isinstance(value, float) else f"{key}={value}"
                          for key, value in (settings or {}).items())]
    return ", ".join(words) or "defaults"


def format_comparison(comparison: dict[str, Any] | None, reference: str | None, label: str) -> tuple[str, str]:
    """(difference with its CI, Holm p-value with a mark) of one model."""
    if label == reference:
        return "reference", "-"
    if comparison is None:
        return "-", "-"
    difference = (f"{comparison['mean_difference']:+.4f} "
                  f"[{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]")
    p_value = comparison["p_holm"]
    text = f"{p_value:.2g}" if p_value >= 1e-4 else "<1e-4"
    return difference, f"**{text}**" if comparison["significant"] else text


def runs_text(rows: list[dict[str, Any]]) -> str:
    """``3``, ``3, 1 budget-stopped``, ``2, 1 failed``: a model's runs."""
    done = sum(bool(row.get("test")) for row in rows)
    budget = sum(row.get("status") == "budget" for row in rows)
    failed = len(rows) - done
    return f"{done}" + (f", {budget} budget-stopped" if budget else "") + (f", {failed} failed" if failed else "")


def model_cells(record: dict[str, Any], label: str, rows: list[dict[str, Any]], comparison: dict[str, Any] | None,
                reference: str | None, reference_runs: int) -> list[str]:
    """A model's cells of :func:`summary_table` after its label, from its
    ``rows`` in ``record``: settings, runs, test NDCG@10 and HR@10, the
    difference to ``reference`` and its p, best valid NDCG@10, s/epoch,
    s to best, epochs (best)."""
    done = [row for row in rows if row.get("test")]
    difference, p_value = format_comparison(comparison, reference, label)
    if comparison and len(comparison["seeds"]) < max(len(done), reference_runs):  # not every mean's seed pairs
        paired = comparison["seeds"]
        difference += f" ({'seed' if len(paired) == 1 else 'seeds'} {', '.join(map(str, paired))})"
    settings = (record.get("tuning") or {}).get(label, {}).get("best") or rows[0].get("settings")
    received = (rows[0].get("result") or {}).get("config")
    ran_with = [word for word in run_settings.settings_words(run_settings.row_settings(record, rows[0]))
                if word.partition("=")[0] not in PROTOCOL_KEYS  # those head the document
                and word.partition("=")[0] not in (settings or {})  # a tuned value replaced it
                and ("=" not in word or received is None or word.partition("=")[0] in received)]  # its model's
    return [
        format_settings(settings, ran_with), runs_text(rows), mean_std([row["test"]["ndcg@10"] for row in done]),
        mean_std([row["test"]["hit@10"] for row in done if "hit@10" in row["test"]]), difference, p_value,
        mean_std([row["best_valid"]["ndcg@10"] for row in done if "ndcg@10" in (row.get("best_valid") or {})]),
        format_seconds(_mean([row.get("train_seconds_per_epoch") for row in done])),
        format_seconds(_mean([row.get("seconds_to_best") for row in done])),
        ", ".join(format_epochs(row) for row in done) or "-",
    ]


def mean_test_ndcg(rows: list[dict[str, Any]]) -> float:
    """The mean test NDCG@10 of the finished ``rows`` (-inf when none finished): the tables' order."""
    ndcg = [row["test"]["ndcg@10"] for row in rows if row.get("test")]
    return statistics.fmean(ndcg) if ndcg else -math.inf


def summary_table(record: dict[str, Any]) -> str:
    """One line per model over its seeds: settings, test NDCG@10 and HR@10
    mean ± std, the difference in per-user NDCG@10 to the reference with its
    bootstrap CI and Holm-corrected p (bold: significant), the best valid
    NDCG@10 (what defaults are chosen on), s/epoch, s to best."""
    reference = record.get("reference")
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in record["rows"]:
        by_label.setdefault(row["label"], []).append(row)
    found = {c["model"]: c for c in record.get("comparisons") or []}
    delta = f"Δ NDCG@10 vs {reference} [95% CI]" if reference else "Δ NDCG@10 (no reference)"
    lines = [
        f"| model | settings | runs | test NDCG@10 | test HR@10 | {delta} "
        "| p (Holm) | best valid NDCG@10 | s/epoch | s to best | epochs (best) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    reference_runs = sum(bool(row.get("test")) for row in by_label.get(reference or "", []))
    for label, rows in sorted(by_label.items(), key=lambda item: -mean_test_ndcg(item[1])):
        cells = model_cells(record, label, rows, found.get(label), reference, reference_runs)
        lines.append(" | ".join([f"| {label}", *cells]) + " |")
    return "\n".join(lines)


def time_to_quality_table(record: dict[str, Any]) -> str:
    """Per run of each other model: its best valid NDCG@10, the seconds it
    and the reference's run of the same seed took to first reach it, and
    their ratio ("" without a reference or curves)."""
    reference = record.get("reference")
    found = time_to_quality.times_to_best(record["rows"], reference)
    if not found:
        return ""
    lines = [f"| model | seed | its best valid NDCG@10 | s to it | {reference}: s to it | ratio |",
             "|---|---|---|---|---|---|"]
    for run in found:
        reached = "not reached" if run.reference_seconds is None else format_seconds(run.reference_seconds)
        ratio = "-" if run.ratio is None else f"{run.ratio:.3f}"
        lines.append(f"| {run.model} | {'-' if run.seed is None else run.seed} | {format_metric(run.score)} "
                     f"| {format_seconds(run.model_seconds)} | {reached} | {ratio} |")
    return "\n".join(lines)


def published_table(dataset: str) -> str:
    """The published anchors of ``dataset`` as a Markdown table ("" if none)."""
    anchors = PUBLISHED.get(dataset)
    if not anchors:
        return ""
    lines = ["| published | test NDCG@10 | test HR@10 |", "|---|---|---|"]
    lines += [f"| {name} | {numbers['ndcg@10']:.4f} | {numbers['hit@10']:.4f} |" for name, numbers in anchors]
    return "\n".join(lines)


def anchor_lines(dataset: str, shared: dict[str, Any]) -> list[str]:
    """The published anchors of ``dataset`` under a heading that says whether
    they compare with rows of the :func:`protocol` ``shared`` ([] if none)."""
    anchors = published_table(dataset)
    if not anchors:
        return []
    if shared.get("filter_seen") is True:
        return ["", "Published on the same files (full ranking, history excluded):", "", anchors]
    if not shared:
        return ["", "Published on the same files (full ranking, history excluded); no run here "
                    "finished to compare:", "", anchors]
    return ["", "Published on these files with the user's history excluded from the ranking; this table "
                "ranks it too (filter_seen off), so the two do not compare:", "", anchors]


def protocol(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The :data:`PROTOCOL_KEYS` of the first finished row, and the keys
    whose values differ between finished rows (should be none)."""
    configs = [row["result"]["config"] for row in rows if row.get("result")]
    if not configs:
        return {}, []
    # a key counts among the rows whose model has it (SASRec has no embedding_size)
    shared = {key: next(config[key] for config in configs if key in config)
              for key in PROTOCOL_KEYS if any(key in config for config in configs)}
    differing = [key for key in PROTOCOL_KEYS if key != "seed" and len({
        json.dumps(config[key], sort_keys=True, default=str) for config in configs if key in config}) > 1]
    return shared, differing


def run_origin(record: dict[str, Any]) -> str:
    """When, where and from which commit one benchmark ran."""
    machine, git = record["machine"], record["git"]
    return (
        f"Started {record['started']}, {format_seconds(record.get('wall_seconds'))} s in all"
        f"{'' if record['finished'] else ' so far (unfinished)'}. Machine: {machine['processor']}, "
        f"{machine['cpu_count']} CPUs, torch threads {machine['torch_threads']}, "
        f"OMP_NUM_THREADS={record.get('omp_num_threads')}, "
        + "".join(f"{name}={value}, " for name, value in (machine.get("allocator_env") or {}).items())
        + f"device {machine['device']}"
        f"{', ' + machine['gpu'] if machine.get('gpu') else ''}"
        + (f", {record['jobs']} models trained at once (times under each other's load)"
           if (record.get("jobs") or 1) > 1 else "")
        + f". Commit {git['commit'][:12]}{' (uncommitted changes)' if git.get('dirty') else ''}; "
        + ", ".join(f"{name} {number}" for name, number in record["versions"].items()) + "."
    )


def origin_lines(record: dict[str, Any]) -> list[str]:
    """The command and :func:`run_origin` of a benchmark, or of each
    benchmark a merged record pools (:mod:`~recbole_attn.bench.merge`)."""
    lines = [f"`{record['command']}`" if record.get("command") else "", ""]
    sources = record.get("sources")
    if not sources:
        return [*lines, run_origin(record)]
    lines.append(f"Merged from {len(sources)} benchmarks:")
    for source in sources:
        lines += ["", f"* `{source['command']}`: {run_origin(source)}"]
    return lines


def markdown_document(record: dict[str, Any]) -> str:
    shared, differing = protocol(record["rows"])
    budget = record["budget_seconds"]
    budget = "no time budget" if budget is None else f"budget {budget:g} s of fitting"
    seeds = record.get("seeds") or []
    lines = [
        f"# Benchmark on {record['dataset']}",
        "",
        *origin_lines(record),
        "",
        f"Every model: {budget}, at most {record['epochs']} epochs; "
        + ((f"seeds {', '.join(map(str, seeds))}, " if len(seeds) > 1 else "")
           + ", ".join(f"{key} {json.dumps(value, default=str)}" for key, value in shared.items()
                       if key not in ("epochs", "time_budget") and not (key == "seed" and len(seeds) > 1))
           if shared else "no run finished, so the protocol is not recorded")
        + ".",
    ]
    if differing:
        lines += ["", f"**Not identical across rows: {', '.join(differing)}** "
                      "(see the JSON's per-row config)."]
    lines += [
        "",
        "## Per model" + (f", over seeds {', '.join(map(str, seeds))}" if seeds else ""),
        "",
        summary_table(record),
        "",
        "Mean ± sample std over the seeds. Δ: mean over test users of the per-user NDCG@10 difference "
        "to the reference (each seed paired with the same seed, then averaged per user), with a paired "
        "bootstrap 95% CI; p: two-sided paired t-test, Holm-corrected over the models; **bold**: "
        "significant at 0.05. `settings`: the config files and `--key=value` settings the model ran with, "
        "but for the protocol above, then its variant's or tuned (`--tune`) setting; `defaults` when there "
        "are none. "
        "`s to best`: wall seconds until the best valid NDCG@10. Recompute any comparison from the "
        "`ranks_file` of each run in the JSON (docs/benchmarks_howto.md).",
    ]
    if record.get("tuning"):
        searches = record["tuning"].values()
        drawn = ("trial 0 the model's untuned settings, the others drawn by Optuna TPE, seeded"
                 if all(search.get("defaults_trial") for search in searches) else "Optuna TPE, seeded")
        lines += ["", f"Tuning: {record['tune_trials']} trials per model ({drawn}), scored on "
                      "validation NDCG@10 only; the test split is dropped before training in every trial. "
                      "Every trial is in the JSON under `tuning`."]
    lines += anchor_lines(record["dataset"], shared)
    speed = time_to_quality_table(record)
    if speed:
        reference = record["reference"]
        lines += ["", "## Time to each model's best valid NDCG@10", "", speed, "",
                  f"Wall seconds (training and validation) until each run's best valid NDCG@10, and until "
                  f"{reference}'s run of the same seed first reached that score; ratio: {reference}'s time "
                  f"over the model's (below 1: {reference} is there sooner). Each time comes from its own "
                  "run: compare them where both ran on one machine under the same load (the lines above)."]
    lines += [
        "",
        "## Every run",
        "",
        markdown_table(record["rows"]),
        "",
        "Sorted by test NDCG@10 (full ranking). `budget-stopped`: the budget ended training before "
        "the epoch cap or early stopping, inside the running epoch if need be (a fractional epoch count: "
        "that part was trained, then validated). `s/epoch`: per whole epoch. `s to best`: wall seconds "
        "(training + validation) until the best valid NDCG@10. `train targets/s`: supervised target "
        "items per second of training. "
        "`inference users/s`: one timed `full_sort_predict` pass over the test users. `peak RSS`: the "
        "model's own worker process. Definitions: docs/benchmarks_howto.md.",
    ]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Every flat field of every row, sorted like the Markdown table."""
    flats = [flat_row(row) for row in sort_rows(rows)]
    fields = list(dict.fromkeys(field for flat in flats for field in flat))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flats)
    return out.getvalue()


def write_tables(record: dict[str, Any], paths: dict[str, Path]) -> None:
    """The Markdown and CSV, then the JSON record."""
    write_text_atomic(paths["markdown"], markdown_document(record))
    write_text_atomic(paths["csv"], csv_text(record["rows"]))
    write_json_atomic(paths["json"], record)


def progress_line(row: dict[str, Any]) -> str:
    """One line per finished model for the console."""
    flat = flat_row(row)
    if flat["status"] == "error":
        return f"{flat['model']}: {format_status(flat)}"
    return (
        f"{flat['model']}: {format_status(flat).strip('*')}, "
        f"test NDCG@10 {format_metric(flat.get('test_ndcg@10'))}, "
        f"epochs {epochs_count(flat)}, {format_seconds(flat['train_seconds_per_epoch'])} s/epoch, "
        f"{format_count(flat['train_targets_per_second'])} targets/s, "
        f"{format_count(flat['inference_users_per_second'])} users/s, "
        f"peak RSS {format_count(flat['peak_rss_mb'])} MB, {format_seconds(flat['wall_seconds'])} s"
    )
