"""PNG figures of a benchmark (optional extra ``plot``: matplotlib).

* curves: valid NDCG@10 against wall time, every run on one chart;
* bars: test NDCG@10 and seconds per training epoch per run.

A model run with several seeds has one curve and one bar per seed, named
with its seed.

Budget-stopped models are drawn dashed (curves) or hatched (bars); failed
models have nothing to draw and appear in the tables only.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from collections.abc import Callable
from typing import Any

from recbole_attn.atomic import atomic_path
from recbole_attn.bench.report import sort_rows

#: Spread of values beyond which an axis goes logarithmic.
LOG_SCALE_RATIO = 30


def _save_atomic(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return path


def _wide_range(values: list[float]) -> bool:
    positive = [value for value in values if value > 0]
    return len(positive) > 1 and max(positive) / min(positive) > LOG_SCALE_RATIO


def run_names(rows: list[dict[str, Any]]) -> list[str]:
    """One name per row: its label, with the seed where the label has
    several runs (matplotlib draws repeated bar names on one spot)."""
    runs = Counter(row["label"] for row in rows)
    return [f"{row['label']} seed {row.get('seed')}" if runs[row["label"]] > 1 else row["label"] for row in rows]


def _colors(count: int) -> list[Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(index % palette.N) for index in range(count)]


def plot_curves(rows: list[dict[str, Any]], path: Path, dataset: str) -> Path:
    from matplotlib.figure import Figure

    drawn = [row for row in sort_rows(rows) if row.get("curve")]
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    for row, name, color in zip(drawn, run_names(drawn), _colors(len(drawn))):
        seconds = [point["elapsed_seconds"] for point in row["curve"]]
        scores = [point["valid_ndcg@10"] for point in row["curve"]]
        budget = row["status"] == "budget"
        axes.plot(seconds, scores, marker="o", markersize=3, color=color, linestyle="--" if budget else "-",
                  label=name + (" (budget-stopped)" if budget else ""))
    if _wide_range([point["elapsed_seconds"] for row in drawn for point in row["curve"]]):
        axes.set_xscale("log")
    else:
        axes.set_xlim(left=0)
    axes.set_xlabel("wall seconds since fit start (training + validation)")
    axes.set_ylabel("valid NDCG@10")
    axes.set_title(f"Valid NDCG@10 vs wall time on {dataset}")
    axes.grid(alpha=0.3)
    if drawn:
        axes.legend(fontsize="small")
    return _save_atomic(figure, path)


def plot_bars(rows: list[dict[str, Any]], path: Path, dataset: str) -> Path:
    from matplotlib.figure import Figure

    drawn = [row for row in sort_rows(rows) if row.get("test")][::-1]  # best on top
    labels = run_names(drawn)
    hatches = ["//" if row["status"] == "budget" else "" for row in drawn]
    figure = Figure(figsize=(11, 1.5 + 0.4 * max(len(drawn), 2)), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    panels = (
        (left, [row["test"]["ndcg@10"] for row in drawn], "test NDCG@10", "{:.4f}"),
        (right, [row["train_seconds_per_epoch"] for row in drawn], "seconds per training epoch", "{:.3g}"),
    )
    for axes, values, title, pattern in panels:
        bars = axes.barh(labels, values, color="tab:blue", edgecolor="black")
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        axes.bar_label(bars, labels=[pattern.format(value) for value in values], padding=3, fontsize="small")
        axes.set_title(title)
        axes.grid(axis="x", alpha=0.3)
        axes.margins(x=0.2)
        if _wide_range(values):
            axes.set_xscale("log")
        else:
            axes.set_xlim(left=0)
    figure.suptitle(f"{dataset} (hatched: budget-stopped)")
    return _save_atomic(figure, path)


def write_plots(rows: list[dict[str, Any]], paths: dict[str, Path], dataset: str) -> dict[str, str] | None:
    """Both figures at ``paths["curves_png"]`` and ``paths["bars_png"]``;
    ``None`` when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    return {
        "curves_png": str(plot_curves(rows, paths["curves_png"], dataset)),
        "bars_png": str(plot_bars(rows, paths["bars_png"], dataset)),
    }


def add_plots(record: dict[str, Any], paths: dict[str, Path], echo: Callable[[str], Any]) -> None:
    """Write the record's figures and list them in its ``files``, or say
    why there are none."""
    written = write_plots(record["rows"], paths, record["dataset"])
    if written is None:
        echo("matplotlib is not installed: no plots (pip install 'recbole-attn[plot]'); tables written")
    else:
        record["files"].update(written)
