"""The labelled grid of `autoguidance generate --grid` (the paper's Figure 4 layout): which image goes in
which cell, and the labels of rows and columns, as plain data recorded in generate.json."""

from __future__ import annotations

import torch


def grid_layout(classes: int, seeds: list[int], weights: list[float], class_label: int | None) -> dict:
    """Rows and columns of the grid (the paper's Figure 4 layout), as plain data for the metadata.

    Conditional net without --class: a row per class, columns = weights x seeds (weight-major).
    Otherwise a single class (or none): rows = seeds and columns = weights when several weights, else
    one row with a column per seed.
    """
    if classes > 0 and class_label is None:
        return {
            "rows": "class",
            "row_values": list(range(classes)),
            "columns": "weight x seed",
            "column_values": [[w, s] for w in weights for s in seeds],
        }
    if len(weights) > 1:
        return {"rows": "seed", "row_values": seeds, "columns": "weight", "column_values": weights}
    return {"rows": "-", "row_values": [None], "columns": "seed", "column_values": seeds}


def grid_cells(
    cells: dict[tuple[int | None, float], torch.Tensor], layout: dict, weights: list[float]
) -> torch.Tensor:
    """Arrange gathered images {(class, w): (S, H, W, C)} as (rows, cols, H, W, C) for `layout`."""
    if layout["rows"] == "class":
        # Row k: weight-major columns, the seeds of each weight side by side.
        return torch.stack([torch.cat([cells[(k, w)] for w in weights]) for k in layout["row_values"]])
    (row_class,) = {k for k, _ in cells}
    per_weight = torch.stack([cells[(row_class, w)] for w in weights], dim=1)  # (S, W, H, W, C)
    if layout["rows"] == "seed":
        return per_weight
    return per_weight[:, 0][None]  # one row, a column per seed


def grid_labels(layout: dict, cell_width: int) -> tuple[list[str], list[list[str]]]:
    """Row labels and column header lines of the grid, from its layout (`grid_layout`). Over cells
    narrower than "seed 10" in the default font (about 42 pixels) seeds are written s10."""
    seed = "seed {}" if cell_width >= 42 else "s{}"
    rows = [f"class {v}" if layout["rows"] == "class" else f"seed {v}" for v in layout["row_values"]]
    if layout["rows"] == "-":
        rows = [""]
    if layout["columns"] == "weight x seed":
        cols = [[f"w={w:g}", seed.format(s)] for w, s in layout["column_values"]]
    elif layout["columns"] == "weight":
        cols = [[f"w={w:g}"] for w in layout["column_values"]]
    else:
        cols = [[seed.format(s)] for s in layout["column_values"]]
    return rows, cols
