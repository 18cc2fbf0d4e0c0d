"""Heatmaps of :class:`recbole_attn.serve.Explanation` (optional extra ``plot``).

AttnSeq: one panel per layer and head (rows = layers, columns = heads), each
the causal attention matrix over the history: query position down, attended
item across; with ``readout: attention`` a last row holds the readout's
pooling. AttnRNN: one panel, its causal pooling weights. Items are labelled by
title where the dataset has one. Drawn with matplotlib's object API (no
pyplot, no global backend change), so it works headless.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recbole_attn.atomic import check_writable_dir
from recbole_attn.errors import UsageError

INSTALL_HINT = "pip install 'recbole-attn[plot]' (or pip install matplotlib)"


def require_matplotlib() -> None:
    """Raise :class:`UsageError` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"drawing a heatmap needs matplotlib, which is not installed: {INSTALL_HINT}") from None


def check_figure_path(path: str | os.PathLike) -> None:
    """Raise :class:`UsageError` unless matplotlib can draw to ``path``: a
    format it knows by the suffix, in a folder that is or can be made."""
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in formats:
        raise UsageError(f"figure {os.fspath(path)!r}: unknown format {suffix!r}. Valid choices: {', '.join(formats)}")
    check_writable_dir(Path(path).parent, "figure folder")


def plot_explanation(explanation: Any, path: str | os.PathLike) -> Path:
    """Draw ``explanation`` to ``path`` (format from its suffix, e.g. .png)."""
    check_figure_path(path)
    from matplotlib.figure import Figure

    n = len(explanation.items)
    labels = [explanation.label(position, 32) for position in range(n)]
    font = max(4.0, min(9.0, 300 / max(n, 1)))
    layers, heads = explanation.grid
    side = max(3.5, 0.16 * n + 1.5)
    figure = Figure(figsize=(side * heads + 1, side * layers), layout="constrained")
    grid = figure.subplots(layers, heads, squeeze=False)
    # the first row is always 1.0 on the first item: scale colours by the other rows
    top = float(explanation.matrices[:, 1:].max()) if n > 1 else 1.0
    used = set(explanation.positions)
    for (row, column), matrix, title in zip(explanation.positions, explanation.matrices, explanation.panels):
        axes = grid[row][column]
        image = axes.imshow(matrix, cmap="viridis", vmin=0, vmax=top)
        axes.set_title(title, fontsize=10)
        bottom, left = (row + 1, column) not in used, column == 0  # labels on the outer panels
        axes.set_xticks(range(n), labels if bottom else [], rotation=90, fontsize=font)
        axes.set_yticks(range(n), labels if left else [], fontsize=font)
    for row in range(layers):
        for column in range(heads):
            if (row, column) not in used:
                grid[row][column].set_axis_off()  # a short row (the readout's)
    figure.supxlabel("attended history item")
    figure.supylabel("position (query)")
    figure.colorbar(image, ax=grid, shrink=0.6, label="weight (first row clipped)" if n > 1 else "weight")
    figure.suptitle(f"{explanation.model}: attention over the last {n} history items")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
