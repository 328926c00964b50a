"""A stage's `history.csv` (one row per epoch) read as numeric series, grouped for plotting.

Stages name their columns freely (`loss`/`val_loss`, `train_loss`, `lr`,
`learning_rate`, `seconds`); losses, learning rates and the other metrics each get a
chart of their own, since their scales differ.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

HISTORY_FILE = "history.csv"
X_NAMES = ("epoch", "step", "iteration")
_LR_NAMES = {"lr", "learning_rate", "learning rate"}
_SKIPPED = {"seconds", "time", "duration", "elapsed"}


@dataclass(frozen=True)
class History:
    x_name: str
    x: tuple[float, ...]
    columns: dict[str, tuple[float, ...]]

    def groups(self) -> list[tuple[str, list[str]]]:
        """(title, columns) for each chart: losses, other metrics, learning rate; empty ones left out."""
        loss, rate, other = [], [], []
        for name in self.columns:
            lowered = name.lower()
            if lowered in _SKIPPED:
                continue
            if lowered in _LR_NAMES or lowered.endswith("_lr"):
                rate.append(name)
            elif "loss" in lowered:
                loss.append(name)
            else:
                other.append(name)
        found = [("loss", loss), ("metrics", other), ("learning rate", rate)]
        return [(title, names) for title, names in found if names]


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_history(path: Path) -> History:
    """The numeric columns of `path`; ValueError when it has no rows or no numeric column."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no rows")
    names = list(rows[0])
    x_name = next((n for n in names if n.lower() in X_NAMES), "")
    x = tuple(_number(r[x_name]) for r in rows) if x_name else tuple(float(i) for i in range(1, len(rows) + 1))
    columns = {}
    for name in names:
        if name == x_name:
            continue
        values = tuple(_number(r.get(name, "")) for r in rows)
        if any(math.isfinite(v) for v in values):
            columns[name] = values
    if not columns:
        raise ValueError(f"{path}: no numeric column")
    return History(x_name or "row", x, columns)
