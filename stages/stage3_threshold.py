# %% [markdown]
# # Stage 3: choose the allMissing threshold
# Stage 2 scored every train image with the classifier's belief that it has no
# defect (`allMissing`) and marked the ones stage 1 held out of training. Only
# those held-out images are swept: on images it trained on the classifier is
# surer than it will be on the test images, and a threshold chosen there blanks
# too little or too much. An image counts as predicted defective when its
# score is below a threshold; every threshold from 0.001 to 0.999 is tried
# against the true labels from `train.csv`, and one is chosen for stage 5.
#
# Counts are per image (an image with two defect classes is one positive), and
# a ratio whose denominator is zero counts as 0.
#
# A per-class classifier (stage 1's `head = "class"`) also scored each class
# (`missing1`..`missing4`); each class is swept the same way against that
# class's labels, and its threshold, chosen by `class_rule`, becomes stage 5's
# per-class gate (`class_thresholds`).

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
from stages.lib.metrics import write_metrics
from stages.lib.scores import CLASS_SCORE_COLUMNS, read_score_table
from stages.lib.severstal import CLASS_IDS, COMPETITION
from stages.lib.traincsv import read_train_csv

RULES = ("consistency", "f1", "accuracy", "recall")
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
    """`rule` picks the image threshold: `consistency` (where the four metrics agree
    most closely, the original's choice), `f1` or `accuracy` (their maximum), or
    `recall` (the lowest threshold that still finds `min_recall` of the defective
    images: it blanks as much as it can while losing at most that share of them).
    `class_rule` picks each class's gate the same ways when the classifier scored
    classes. `recall` suits the gates: blanking a class the segmenter found costs a
    whole (image, class) pair, while most images without the class have no mask
    there to remove, so a gate should lose few true masks. `image_gate = false`
    writes threshold 1 (stage 5 then blanks no whole image) and leaves the gating to
    the per-class gates; the image sweep is still written, for reading."""

    rule: str = "consistency"
    class_rule: str = "recall"
    min_recall: float = 0.95
    image_gate: bool = True

    def __post_init__(self) -> None:
        for name in ("rule", "class_rule"):
            value = getattr(self, name)
            if value not in RULES:
                raise ValueError(f"{name} must be one of {', '.join(RULES)}, got {value!r}")
        if not 0.0 < self.min_recall <= 1.0:
            raise ValueError(f"min_recall must be above 0 and at most 1, got {self.min_recall}")


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


def _middle_of_first_run(best: np.ndarray) -> int:
    """The middle row of the first run of consecutive True values of `best`."""
    start = int(np.argmax(best))
    after = np.flatnonzero(~best[start:])
    end = start + (int(after[0]) if after.size else int(best.size - start))
    return (start + end - 1) // 2


def choose_threshold(
    sweep: pd.DataFrame, rule: str, *, ties: str = "lowest", min_recall: float = 0.95
) -> dict[str, float | str]:
    """The sweep row the rule prefers, as the `threshold.json` record.

    `consistency` minimises |acc-rec| + |rec-prec| + |prec-f1|; `f1` and
    `accuracy` maximise that metric. Ties go to the lowest threshold, or with
    `ties="middle"` to the middle of the lowest run of tied thresholds: on a few
    hundred held-out images a maximum often spans a wide range, and its edge is
    the least safe point of it. `recall` takes the lowest threshold whose recall
    is at least `min_recall`, or the highest threshold (which blanks least) when
    none is, as when no swept image is positive.
    """
    if ties not in ("lowest", "middle"):
        raise ValueError(f"ties must be lowest or middle, got {ties!r}")
    if rule == "recall":
        reached = np.flatnonzero(sweep["recall"].to_numpy(dtype=np.float64) >= min_recall)
        row = int(reached[0]) if reached.size else len(sweep) - 1
    else:
        if rule == "consistency":
            acc, rec, prec, f1 = (sweep[m].to_numpy(dtype=np.float64) for m in METRICS)
            value = -(np.abs(acc - rec) + np.abs(rec - prec) + np.abs(prec - f1))
        elif rule in ("f1", "accuracy"):
            value = sweep[rule].to_numpy(dtype=np.float64)
        else:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        best = value == value.max()
        row = int(np.argmax(best)) if ties == "lowest" else _middle_of_first_run(best)
    chosen = sweep.iloc[row]
    record: dict[str, float | str] = {
        "threshold": round(float(chosen["threshold"]), 3),
        "rule": rule,
    }
    if rule == "recall":
        record["min_recall"] = min_recall
    for metric in METRICS:
        record[metric] = float(chosen[metric])
    return record


# %% [markdown]
# ## Plots
# The metrics against the threshold with the chosen one marked, and the
# confusion counts behind them.


# %%
def _plot_metrics(sweep: pd.DataFrame, chosen: dict[str, object], path: Path) -> None:
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
    ax.set_ylabel("metric over held-out train images")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title("Threshold sweep: metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_counts(sweep: pd.DataFrame, chosen: dict[str, object], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 5))
    for count in ("tp", "fp", "tn", "fn"):
        ax.plot(sweep["threshold"], sweep[count], label=count)
    ax.axvline(float(chosen["threshold"]), color="black", linestyle="--", label="chosen")
    ax.set_xlabel("allMissing threshold (predicted defective below it)")
    ax.set_ylabel("held-out train images")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left")
    ax.set_title("Threshold sweep: confusion counts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# %% [markdown]
# ## Per-class gates
# With per-class scores each class gets its own sweep: an image is positive for
# class c when `train.csv` has a class-c defect on it, and predicted positive
# when its `missing<c>` score is below the threshold.


# %%
def class_sweeps(scores: pd.DataFrame, defects: pd.DataFrame) -> pd.DataFrame:
    """One sweep per class over the images of `scores`, stacked with a `class` column."""
    tables = []
    for class_id, column in zip(CLASS_IDS, CLASS_SCORE_COLUMNS, strict=True):
        present = defects.loc[defects["ClassId"] == class_id, "ImageId"].astype(str)
        sweep = threshold_sweep(scores[column].to_numpy(), scores.index.isin(present))
        sweep.insert(0, "class", class_id)
        tables.append(sweep)
    return pd.concat(tables, ignore_index=True)


def choose_class_thresholds(
    sweeps: pd.DataFrame, rule: str, min_recall: float = 0.95
) -> dict[str, dict[str, float | str]]:
    """Each class's chosen sweep row (ties to the middle of the best range), by class id."""
    return {
        str(class_id): choose_threshold(
            sweeps[sweeps["class"] == class_id].reset_index(drop=True),
            rule,
            ties="middle",
            min_recall=min_recall,
        )
        for class_id in CLASS_IDS
    }


def _plot_classes(sweeps: pd.DataFrame, chosen: dict[str, dict[str, float | str]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(CLASS_IDS), figsize=(4 * len(CLASS_IDS), 3.6), sharey=True)
    for ax, class_id in zip(axes, CLASS_IDS, strict=True):
        sweep = sweeps[sweeps["class"] == class_id]
        for metric in METRICS:
            ax.plot(sweep["threshold"], sweep[metric], label=metric)
        threshold = float(chosen[str(class_id)]["threshold"])
        ax.axvline(threshold, color="black", linestyle="--", label=f"chosen {threshold:.3f}")
        ax.set_title(f"class {class_id}")
        ax.set_xlabel(f"missing{class_id} threshold")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    axes[0].set_ylabel("metric over held-out images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# %% [markdown]
# ## Run
# Labels come from `train.csv` (an image is positive when it has any defect
# row), scores from stage 2, which marks with `validation` the images stage 1
# held out of training. Every image with a defect must have a score; the
# held-out images are the ones swept.


# %%
def held_out_scores(score_path: Path, train_path: Path, defect_ids: np.ndarray) -> pd.DataFrame:
    """The scores of the images stage 1 did not train on, indexed by ImageId."""
    scores = read_score_table(
        score_path,
        ("allMissing", "validation"),
        expected_ids=defect_ids,
        expected_from=str(train_path),
        missing_hint="stage 2 marks the images stage 1 held out of training; rerun stages 1 and 2",
        optional=CLASS_SCORE_COLUMNS,
    )
    if scores.empty:
        raise InputError(f"{score_path}: no images scored")
    flags = scores["validation"]
    if not flags.isin([0.0, 1.0]).all():
        bad = flags[~flags.isin([0.0, 1.0])]
        raise InputError(f"{score_path}: validation must be 0 or 1, got {bad.iloc[0]} for image {bad.index[0]}")
    held = scores[flags == 1.0].drop(columns="validation")
    if held.empty:
        raise InputError(
            f"{score_path}: no image is marked as held out of stage 1's training (validation = 1); "
            "thresholds are chosen on held-out images only"
        )
    return held


def run(params: Params, layout: Layout) -> None:
    score_path = layout.input_file("stage2", "train_missing_count.csv")
    train_path = layout.input_file(COMPETITION, "train.csv")
    defects = read_train_csv(train_path)
    defect_ids = pd.unique(defects["ImageId"].astype(str))
    scores = held_out_scores(score_path, train_path, defect_ids)
    positive = scores.index.isin(defect_ids)

    sweep = threshold_sweep(scores["allMissing"].to_numpy(), positive)
    chosen: dict[str, object] = dict(choose_threshold(sweep, params.rule, min_recall=params.min_recall))
    chosen["images"] = int(scores.shape[0])
    chosen["class_thresholds"] = []
    if not params.image_gate:
        chosen["swept_threshold"] = chosen["threshold"]
        chosen["threshold"] = 1.0
        chosen["image_gate"] = False

    working = layout.working
    table = sweep.copy()
    table["threshold"] = [f"{t:.3f}" for t in sweep["threshold"]]
    table = table[list(SWEEP_COLUMNS)]
    table.to_csv(working / "threshold_sweep.csv", index=False, lineterminator="\n")
    if CLASS_SCORE_COLUMNS[0] in scores:
        sweeps = class_sweeps(scores, defects)
        classes = choose_class_thresholds(sweeps, params.class_rule, params.min_recall)
        chosen["class_rule"] = params.class_rule
        chosen["classes"] = classes
        chosen["class_thresholds"] = [float(classes[str(c)]["threshold"]) for c in CLASS_IDS]
        written = sweeps.copy()
        written["threshold"] = [f"{t:.3f}" for t in sweeps["threshold"]]
        written[["class", *SWEEP_COLUMNS]].to_csv(
            working / "class_threshold_sweep.csv", index=False, lineterminator="\n"
        )
        _plot_classes(sweeps, classes, working / "class_threshold_sweep.png")
    (working / "threshold.json").write_text(json.dumps(chosen, indent=2) + "\n")
    swept = float(chosen.get("swept_threshold", chosen["threshold"]))
    write_metrics(working, {"threshold": swept, "f1": float(chosen["f1"])})
    _plot_metrics(sweep, chosen, working / "threshold_sweep.png")
    _plot_counts(sweep, chosen, working / "threshold_counts.png")

    gate = "" if params.image_gate else f" (image gate off: threshold {chosen['threshold']:.3f} written)"
    print(
        f"{scores.shape[0]} held-out train images, {int(positive.sum())} with defects; "
        f"rule {params.rule}: threshold {chosen.get('swept_threshold', chosen['threshold']):.3f}{gate}"
    )
    print(", ".join(f"{m} {float(chosen[m]):.4f}" for m in METRICS))
    if chosen["class_thresholds"]:
        print(f"per-class gates ({params.class_rule}): {chosen['class_thresholds']}")
