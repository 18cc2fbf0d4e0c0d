"""``--report``: a finished benchmark recomputed from its own files, in
place and without training: the comparisons from the saved per-user hits
(against another reference, say), then its tables and figures, so a
record written by an older version gets this version's tables and charts."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recbole_attn.bench import plots
from recbole_attn.bench.report import (choose_reference, comparisons, listed_files, read_record, record_paths,
                                       write_tables)


def rewrite_record(json_file: str | os.PathLike, reference: str | None = None,
                   echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Recompute the record ``json_file`` against ``reference`` (default
    its own), redraw its figures and rewrite its JSON, Markdown and CSV;
    returns the record."""
    json_path = Path(json_file)
    record = read_record(json_path)
    labels = list(dict.fromkeys(row["label"] for row in record["rows"]))
    record["reference"] = choose_reference(reference or record.get("reference"), labels)
    write_record(record, record_paths(json_path), echo)
    return record


def write_record(record: dict[str, Any], paths: dict[str, Path], echo: Callable[[str], Any] = print) -> None:
    """Compare the rows with the record's reference from their saved
    per-user hits, then write the figures, JSON, Markdown and CSV to
    ``paths``: the ending shared by a rewritten and a merged record."""
    record["comparisons"] = comparisons(record["rows"], record["reference"], paths["json"].parent)
    record["files"] = listed_files(paths)
    plots.add_plots(record, paths, echo)
    write_tables(record, paths)
