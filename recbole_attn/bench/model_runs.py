"""A model's finished runs in a saved benchmark record, named
``RECORD.json:LABEL``: its rows and the per-user hits they saved, for the
scripts that compare runs of different records without retraining
(``benchmarks/compare_records.py``, ``benchmarks/by_history_length.py``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recbole_attn.user_ranks import UserHits, load_user_hits


@dataclass(frozen=True)
class ModelRuns:
    """One ``RECORD.json:LABEL``: the label's rows in that record and the hits they saved, by seed."""

    spec: str
    path: Path
    record: dict[str, Any]
    label: str
    rows: list[dict[str, Any]]
    hits: dict[int, UserHits]


def model_runs(spec: str) -> ModelRuns:
    """The runs ``RECORD.json:LABEL`` names; a ValueError (or OSError) saying what is missing."""
    path_text, _, label = spec.rpartition(":")
    if not path_text or not label:
        raise ValueError(f"{spec!r} is not RECORD.json:LABEL")
    path = Path(path_text)
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
        raise ValueError(f"{path} is not a benchmark record (no rows)")
    rows = [row for row in record["rows"] if row.get("label") == label]
    hits = {row["seed"]: load_user_hits(path.parent / row["ranks_file"]) for row in rows if row.get("ranks_file")}
    if not hits:
        labels = sorted({str(row.get("label")) for row in record["rows"]})
        raise ValueError(f"no saved hits of {label!r} in {path}; its labels: {', '.join(labels)}")
    return ModelRuns(spec, path, record, label, rows, hits)
