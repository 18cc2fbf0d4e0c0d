"""Several finished benchmarks on one dataset as one record: seeds run on
different days or machines pool into one table with one set of comparisons.

The merged record copies every run's per-user hits into its own ``-ranks``
folder (so it stays recomputable on its own), keeps each source's
command, commit and machine under ``sources`` and notes on every row the
settings it ran with, so that a merged record merges again safely. A run
that failed in one record and finished in another is kept as finished.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recbole_attn.bench import report
from recbole_attn.bench.rewrite import write_record
from recbole_attn.bench.run_settings import comparable, record_settings
from recbole_attn.checkpoint import training_settings
from recbole_attn.errors import UsageError

#: Record keys every merged benchmark must share: they define what a row means.
SAME_KEYS = ("dataset", "budget_seconds", "epochs", "tune_trials")
#: Record keys kept per source: where and how each part was run.
SOURCE_KEYS = ("command", "started", "finished", "wall_seconds", "jobs", "config_files", "overrides", "git",
               "versions", "machine", "omp_num_threads")


def with_run_settings(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """``record`` (read from ``path``) with every row noting the settings it
    ran with (``run_settings``): noted already by an earlier merge, else its
    record's (a merged record's sources' when they all agree)."""
    if all("run_settings" in row for row in record["rows"]):
        return record
    if "sources" not in record:
        settings = record_settings(record)
    else:
        kinds = {record_settings(source) for source in record["sources"]}
        if len(kinds) > 1:
            raise UsageError(f"{os.fspath(path)!r} pools benchmarks of different settings without saying which "
                             f"row ran with which ({' / '.join(sorted(kinds))}): merge its sources instead")
        settings = kinds.pop()
    return {**record, "rows": [{"run_settings": settings, **row} for row in record["rows"]]}


def benchmark_sources(record: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """Where and how ``record``'s rows were run: a merged record's own
    sources, so that merging it again still names each benchmark's command,
    commit and machine; else the record itself."""
    if record.get("sources"):
        return list(record["sources"])
    return [{"file": os.fspath(path), **{key: record.get(key) for key in SOURCE_KEYS}}]


def _run(row: dict[str, Any]) -> tuple[str, Any]:
    return row["label"], row.get("seed")


def _failed(row: dict[str, Any]) -> bool:
    return row.get("status") == "error"


def check_mergeable(records: Sequence[dict[str, Any]], files: Sequence[Path]) -> None:
    """Refuse records that disagree on a :data:`SAME_KEYS` value, that
    repeat a (model, seed) run, that ran one model label with other config
    files or ``--key=value`` settings (its seeds would pool two models) or
    that tuned one model twice. A failed run or tuning may be repeated. The rows
    note their settings (:func:`with_run_settings`)."""
    if len(records) < 2:
        raise UsageError("merge needs at least two benchmark records")
    for key in SAME_KEYS:
        values = {json.dumps(record.get(key)) for record in records}
        if len(values) > 1:
            raise UsageError(f"the records differ in {key}: {', '.join(sorted(values))}; "
                             f"only benchmarks with the same {', '.join(SAME_KEYS)} merge")
    check_same_protocol(records, files)
    check_same_runs(records, files)
    seen: dict[tuple[str, Any], Path] = {}
    settings_of_label: dict[str, tuple[str, Path]] = {}
    tuned: dict[str, Path] = {}
    for record, path in zip(records, files):
        for row in record["rows"]:
            settings = row["run_settings"]
            first_settings, first_path = settings_of_label.setdefault(row["label"], (settings, path))
            if comparable(settings) != comparable(first_settings):
                raise UsageError(f"{row['label']} ran with {first_settings!r} in {os.fspath(first_path)!r} but with "
                                 f"{settings!r} in {os.fspath(path)!r}: its seeds would pool two settings")
            run = _run(row)
            if _failed(row):
                continue
            if run in seen:
                raise UsageError(f"{row['label']} seed {row.get('seed')} is in both {os.fspath(seen[run])!r} "
                                 f"and {os.fspath(path)!r}: drop one of them")
            seen[run] = path
        for label, found in (record.get("tuning") or {}).items():
            if found.get("best") is None:  # a failed tuning may be repeated, like a failed run
                continue
            if label in tuned:
                raise UsageError(f"{label} was tuned in both {os.fspath(tuned[label])!r} and {os.fspath(path)!r}")
            tuned[label] = path
    untuned_first = {path: {bool(found.get("defaults_trial")) for found in (record.get("tuning") or {}).values()}
                     for record, path in zip(records, files)}
    if len(set().union(*untuned_first.values())) > 1:
        with_it = [os.fspath(path) for path, kinds in untuned_first.items() if True in kinds]
        raise UsageError(f"only {', '.join(map(repr, with_it))} tuned with the untuned row as trial 0: "
                         f"the tuning budgets differ")


def _as_json(value: Any) -> str:
    """``value`` in one canonical text, so that equal settings compare equal
    whatever their key order or container type (a tuple and a list)."""
    return json.dumps(value, sort_keys=True, default=str)


def check_same_protocol(records: Sequence[dict[str, Any]], files: Sequence[Path]) -> None:
    """Refuse records whose runs differ in a protocol setting
    (:data:`~recbole_attn.bench.report.PROTOCOL_KEYS`: ``filter_seen``, the
    split, the metrics, the sizes every model shares): their models were
    not measured alike, and the table states one protocol for all."""
    first: dict[str, tuple[str, Path]] = {}
    for record, path in zip(records, files):
        shared, _ = report.protocol(record["rows"])
        for key, value in shared.items():
            if key == "seed":
                continue
            text = _as_json(value)
            first_text, first_path = first.setdefault(key, (text, path))
            if text != first_text:
                raise UsageError(f"the records differ in {key}: {first_text} in {os.fspath(first_path)!r} but "
                                 f"{text} in {os.fspath(path)!r}; only benchmarks run under one protocol merge")


def check_same_runs(records: Sequence[dict[str, Any]], files: Sequence[Path]) -> None:
    """Refuse records whose runs of one model label trained with other
    settings than the seed (a default changed between the commits they ran
    on), or whose data differ (another folder's files under the same
    dataset name). Compared on what both runs recorded: a setting or count
    an older version did not record is not held against it."""
    first_of_label: dict[str, tuple[dict[str, Any], Path]] = {}
    first_data: tuple[dict[str, Any], Path] | None = None
    for record, path in zip(records, files):
        for row in record["rows"]:
            result = row.get("result")
            if _failed(row) or not result:
                continue
            run = {**training_settings(result.get("config") or {}), "seed": None,
                   "data_fingerprint": result.get("data_fingerprint")}
            first, first_path = first_of_label.setdefault(row["label"], (run, path))
            _refuse_differences(first, run, f"{row['label']}'s settings", first_path, path)
            data = dict(result.get("dataset_stats") or {})
            first_data = first_data or (data, path)
            _refuse_differences(first_data[0], data, "the data", first_data[1], path)


def _refuse_differences(first: dict[str, Any], other: dict[str, Any], subject: str, first_path: Path,
                        path: Path) -> None:
    """:class:`UsageError` naming the keys both hold with other values."""
    differing = [key for key in sorted(first.keys() & other.keys())
                 if first[key] is not None and other[key] is not None
                 and _as_json(first[key]) != _as_json(other[key])]
    if differing:
        shown = "; ".join(f"{key}: {first[key]!r} -> {other[key]!r}" for key in differing[:3])
        raise UsageError(f"{subject} differ between {os.fspath(first_path)!r} and {os.fspath(path)!r} "
                         f"({shown}): only runs of the same settings on the same data merge")


def moved_row(row: dict[str, Any], source_folder: Path, paths: dict[str, Path]) -> dict[str, Any]:
    """``row`` with its per-user hits copied beside the merged record."""
    row = dict(row)
    if row.get("ranks_file"):
        source = source_folder / row["ranks_file"]
        if source.is_file():
            target = paths["ranks"] / f"{report.file_label(row['label'])}-seed{row.get('seed')}.npz"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            row["ranks_file"] = os.path.relpath(target, paths["json"].parent)
        else:
            row.pop("ranks_file")
    return row


def merged_tuning(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every record's tuning by label; a label tuned in several (failed,
    then repeated) keeps the one that found a setting."""
    tuning: dict[str, Any] = {}
    for record in records:
        for label, found in (record.get("tuning") or {}).items():
            if label not in tuning or tuning[label].get("best") is None:
                tuning[label] = found
    return tuning


def merge_records(json_files: Sequence[str | os.PathLike], output_dir: str | os.PathLike,
                  reference: str | None = None, command: str | None = None,
                  echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Merge the benchmark records ``json_files`` into a new record under
    ``output_dir`` (fresh names), compare every model with ``reference``
    (default: the first record's) over the pooled seeds; returns the record."""
    files = [Path(name) for name in json_files]
    records = [with_run_settings(report.read_record(path), path) for path in files]
    check_mergeable(records, files)
    first = records[0]
    done_runs = {_run(row) for record in records for row in record["rows"] if not _failed(row)}
    kept = [(row, path) for record, path in zip(records, files) for row in record["rows"]
            if not (_failed(row) and _run(row) in done_runs)]
    labels = list(dict.fromkeys(row["label"] for row, _ in kept))
    chosen = report.choose_reference(reference or first.get("reference"), labels)
    paths = report.output_paths(output_dir, first["dataset"])
    try:
        return _write_merged(records, files, [moved_row(row, path.parent, paths) for row, path in kept],
                             chosen, paths, command, echo)
    except BaseException:
        remove_written(paths)
        raise


def remove_written(paths: dict[str, Path]) -> None:
    """Delete what a failed merge wrote under its fresh names, so that no
    record without its JSON (or JSON without its per-user hits) is left."""
    for path in paths.values():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def _write_merged(records: Sequence[dict[str, Any]], files: Sequence[Path], rows: list[dict[str, Any]],
                  chosen: str | None, paths: dict[str, Path], command: str | None,
                  echo: Callable[[str], Any]) -> dict[str, Any]:
    """The merged record of ``rows`` (per-user hits already beside it), written to ``paths``."""
    first = records[0]
    record: dict[str, Any] = {key: first.get(key) for key in SAME_KEYS}
    record.update({
        "benchmark": "recbole_attn.bench",
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "finished": all(source.get("finished") for source in records),
        "data_path": first.get("data_path"),
        "jobs": max(source.get("jobs", 1) for source in records),
        "shared_properties": first.get("shared_properties"),
        "git": first["git"],
        "versions": first["versions"],
        "machine": first["machine"],
        "omp_num_threads": first.get("omp_num_threads"),
        "sources": [source for benchmark, path in zip(records, files) for source in benchmark_sources(benchmark, path)],
        "files": report.listed_files(paths),
        "seeds": sorted({row["seed"] for row in rows if row.get("seed") is not None}),
        "reference": chosen,
        "tuning": merged_tuning(records),
        "rows": rows,
        "wall_seconds": sum(source.get("wall_seconds") or 0.0 for source in records),
    })
    write_record(record, paths, echo)
    return record
