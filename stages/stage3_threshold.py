# %% [markdown]
# # Stage 3: choose the allMissing threshold
# Stage 2 scored every train image with the classifier's belief that it has no
# defect (`allMissing`). Here an image counts as predicted defective when its
# score is below a threshold; every threshold from 0.001 to 0.999 is tried
# against the true labels from `train.csv`, and one is chosen for stage 5.
#
# Counts are per image (an image with two defect classes is one positive), and
# a ratio whose denominator is zero counts as 0.

# %%
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from kernelgen.runtime import InputError, Layout
from stages.lib.scores import read_scores
from stages.lib.severstal import COMPETITION
from stages.lib.traincsv import read_train_csv

RULES = ("consistency", "f1", "accuracy")
SWEEP_COLUMNS = (
    "threshold",
    "tp",
    "fp",
    "tn",
    "fn",
    "accuracy",
    "recall",
    "precision",
    "f1",
)
METRICS = ("accuracy", "recall", "precision", "f1")


@dataclass(frozen=True)
class Params:
    """`rule` picks the threshold: `consistency` (where the four metrics agree
    most closely, the original's choice), `f1` or `accuracy` (their maximum)."""

    rule: str = "consistency"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")


# %% [markdown]
# ## The sweep
# Thresholds are k/1000 for k = 1..999, computed from integers so no value
# drifts. Sorting the scores of positive and negative images once turns each
# threshold's count into a binary search: the number of scores strictly below
# it.


# %%
def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def threshold_sweep(scores: np.ndarray, positive: np.ndarray) -> pd.DataFrame:
    """Confusion counts and metrics per threshold, one row per image-level threshold.

    `scores[i]` is image i's allMissing score, `positive[i]` whether it has a
    defect; an image is predicted defective when its score < threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape:
        raise ValueError(f"scores {scores.shape} and labels {positive.shape} differ in shape")
    thresholds = np.arange(1, 1000, dtype=np.int64) / 1000
    positive_scores = np.sort(scores[positive])
    negative_scores = np.sort(scores[~positive])
    tp = np.searchsorted(positive_scores, thresholds, side="left").astype(np.int64)
    fp = np.searchsorted(negative_scores, thresholds, side="left").astype(np.int64)
    fn = positive_scores.size - tp
    tn = negative_scores.size - fp
    total = np.full(thresholds.shape, scores.size, dtype=np.int64)
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "tp": tp,
            "fp": fp,
            "tn": tn,
            "fn": fn,
            "accuracy": _ratio(tp + tn, total),
            "recall": _ratio(tp, tp + fn),
            "precision": _ratio(tp, tp + fp),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        }
    )


def choose_threshold(sweep: pd.DataFrame, rule: str) -> dict[str, float | str]:
    """The sweep row the rule prefers, as the `threshold.json` record; ties go to the lowest.

    `consistency` minimises |acc-rec| + |rec-prec| + |prec-f1|; `f1` and
    `accuracy` maximise that metric.
    """
    if rule == "consistency":
        acc, rec, prec, f1 = (sweep[m].to_numpy(dtype=np.float64) for m in METRICS)
        row = int(np.argmin(np.abs(acc - rec) + np.abs(rec - prec) + np.abs(prec - f1)))
    elif rule in ("f1", "accuracy"):
        row = int(np.argmax(sweep[rule].to_numpy(dtype=np.float64)))
    else:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    chosen = sweep.iloc[row]
    record: dict[str, float | str] = {
        "threshold": round(float(chosen["threshold"]), 3),
        "rule": rule,
    }
    for metric in METRICS:
        record[metric] = float(chosen[metric])
    return record


# %% [markdown]
# ## Plots
# The metrics against the threshold with the chosen one marked, and the
# confusion counts behind them.


# %%
def _plot_metrics(sweep: pd.DataFrame, chosen: dict[str, float | str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    for metric in METRICS:
        ax.plot(sweep["threshold"], sweep[metric], label=metric)
    ax.axvline(
        float(chosen["threshold"]),
        color="black",
        linestyle="--",
        label=f"chosen {float(chosen['threshold']):.3f} ({chosen['rule']})",
    )
    ax.set_xlabel("allMissing threshold (predicted defective below it)")
    ax.set_ylabel("metric over train images")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title("Threshold sweep: metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_counts(sweep: pd.DataFrame, chosen: dict[str, float | str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    for count in ("tp", "fp", "tn", "fn"):
        ax.plot(sweep["threshold"], sweep[count], label=count)
    ax.axvline(float(chosen["threshold"]), color="black", linestyle="--", label="chosen")
    ax.set_xlabel("allMissing threshold (predicted defective below it)")
    ax.set_ylabel("train images")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left")
    ax.set_title("Threshold sweep: confusion counts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# %% [markdown]
# ## Run
# Labels come from `train.csv` (an image is positive when it has any defect
# row), scores from stage 2. Every image with a defect must have a score; the
# images scored are the ones swept.


# %%
def run(params: Params, layout: Layout) -> None:
    score_path = layout.input_file("stage2", "train_missing_count.csv")
    train_path = layout.input_file(COMPETITION, "train.csv")
    defects = read_train_csv(train_path)
    defect_ids = pd.unique(defects["ImageId"].astype(str))
    scores = read_scores(score_path, expected_ids=defect_ids, expected_from=str(train_path))
    if scores.empty:
        raise InputError(f"{score_path}: no images scored")
    positive = scores.index.isin(defect_ids)

    sweep = threshold_sweep(scores.to_numpy(), positive)
    chosen = choose_threshold(sweep, params.rule)

    working = layout.working
    table = sweep.copy()
    table["threshold"] = [f"{t:.3f}" for t in sweep["threshold"]]
    table = table[list(SWEEP_COLUMNS)]
    table.to_csv(working / "threshold_sweep.csv", index=False, lineterminator="\n")
    (working / "threshold.json").write_text(json.dumps(chosen, indent=2) + "\n")
    _plot_metrics(sweep, chosen, working / "threshold_sweep.png")
    _plot_counts(sweep, chosen, working / "threshold_counts.png")

    print(
        f"{scores.size} train images scored, {int(positive.sum())} with defects; "
        f"rule {params.rule}: threshold {chosen['threshold']:.3f}"
    )
    print(", ".join(f"{m} {float(chosen[m]):.4f}" for m in METRICS))
