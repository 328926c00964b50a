# %% [markdown]
# ## The competition metric
# Mean Dice over every scored (image, class) pair, 2|X∩Y| / (|X| + |Y|), with
# Dice 1 when prediction and truth are both empty. Masks count any nonzero
# pixel as defect, so threshold probabilities before scoring them.

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd

from kernelgen.runtime import InputError
from stages.lib.rle import rle_runs
from stages.lib.severstal import IMAGE_SHAPE

_KEYS = ["ImageId", "ClassId"]
_COLUMNS = ("ImageId", "ClassId", "EncodedPixels")


def _as_bool(mask: np.ndarray) -> np.ndarray:
    """The mask as booleans (nonzero = defect) without copying boolean input."""
    mask = np.asarray(mask)
    return mask if mask.dtype == np.bool_ else mask != 0


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two same-shaped binary masks; 1.0 when both are empty."""
    p = _as_bool(pred)
    t = _as_bool(truth)
    if p.shape != t.shape:
        raise ValueError(f"dice needs masks of one shape, got {p.shape} and {t.shape}")
    total = np.count_nonzero(p) + np.count_nonzero(t)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(p & t) / total


def batch_dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice per sample and class: (N, C, H, W) binary masks in, (N, C) float64 out.

    Axis 0 is the sample, axis 1 the class (plane k is class k + 1), and every
    later axis is summed over, so (N, C, H*W) works too. Empty-empty pairs
    score 1, as in the competition; threshold probabilities first.
    """
    p = _as_bool(pred)
    t = _as_bool(truth)
    if p.shape != t.shape or p.ndim < 2:
        raise ValueError(
            f"batch_dice needs two arrays of one shape (N, C, ...), got {p.shape} and {t.shape}"
        )
    axes = tuple(range(2, p.ndim))
    overlap = np.count_nonzero(p & t, axis=axes)
    total = np.count_nonzero(p, axis=axes) + np.count_nonzero(t, axis=axes)
    scores = np.ones(total.shape, dtype=np.float64)
    filled = total > 0
    scores[filled] = 2.0 * overlap[filled] / total[filled]
    return scores


def _overlap(
    starts_a: np.ndarray, lengths_a: np.ndarray, starts_b: np.ndarray, lengths_b: np.ndarray
) -> int:
    """Pixels two run lists share, from their edges alone (no mask is built).

    Each list is sorted and non-overlapping, so coverage after an edge is 2
    exactly where both lists have a run; sum the lengths of those stretches.
    """
    edges = np.concatenate((starts_a, starts_a + lengths_a, starts_b, starts_b + lengths_b))
    steps = np.concatenate(
        (
            np.ones(starts_a.size, dtype=np.int64),
            -np.ones(starts_a.size, dtype=np.int64),
            np.ones(starts_b.size, dtype=np.int64),
            -np.ones(starts_b.size, dtype=np.int64),
        )
    )
    order = np.argsort(edges, kind="stable")
    edges = edges[order]
    coverage = np.cumsum(steps[order])
    stretch = np.diff(edges)
    return int(stretch[coverage[:-1] == 2].sum())


def _pairs(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Key columns normalised (str image, int class), RLE as stripped text."""
    missing = [column for column in _COLUMNS if column not in frame.columns]
    if missing:
        raise InputError(
            f"{name}: missing column(s) {', '.join(missing)}; needs {', '.join(_COLUMNS)}"
        )
    pairs = pd.DataFrame(
        {
            "ImageId": frame["ImageId"].astype(str).to_numpy(dtype=object),
            "ClassId": frame["ClassId"].astype(np.int64).to_numpy(),
            "EncodedPixels": frame["EncodedPixels"]
            .fillna("")
            .astype(str)
            .str.strip()
            .to_numpy(dtype=object),
        }
    )
    repeated = pairs.duplicated(_KEYS).to_numpy(dtype=bool)
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        raise InputError(
            f"{name}: image {pairs['ImageId'].iloc[row]!r} class "
            f"{pairs['ClassId'].iloc[row]} appears more than once"
        )
    return pairs


def mean_dice_rle(
    pred: pd.DataFrame, truth: pd.DataFrame, shape: tuple[int, int] = IMAGE_SHAPE
) -> float:
    """The competition score of `pred` against `truth`, both as RLE frames.

    Both frames have ImageId, ClassId and EncodedPixels. Every row of `pred`
    is one scored (image, class) pair (empty EncodedPixels = no defect
    predicted); `truth` lists defects only, so pairs absent from it are
    empty, and truth pairs missing from `pred` are not scored. Dice comes
    from run edges, without decoding masks.
    """
    scored = _pairs(pred, "predictions")
    if scored.empty:
        raise ValueError("mean_dice_rle needs at least one predicted pair to score")
    known = _pairs(truth, "truth")
    merged = scored.merge(
        known, on=_KEYS, how="left", suffixes=("_pred", "_truth"), sort=False
    )
    predicted = merged["EncodedPixels_pred"].tolist()
    actual = merged["EncodedPixels_truth"].fillna("").astype(str).tolist()
    images = merged["ImageId"].tolist()
    classes = merged["ClassId"].tolist()
    total = 0.0
    for image_id, class_id, p_rle, t_rle in zip(images, classes, predicted, actual, strict=True):
        if not p_rle and not t_rle:
            total += 1.0
            continue
        where = f"image {image_id} class {class_id}"
        p_starts, p_lengths = rle_runs(p_rle, shape, f"predictions, {where}")
        t_starts, t_lengths = rle_runs(t_rle, shape, f"truth, {where}")
        if p_starts.size and t_starts.size:
            shared = _overlap(p_starts, p_lengths, t_starts, t_lengths)
            total += 2.0 * shared / (int(p_lengths.sum()) + int(t_lengths.sum()))
    return total / len(merged)


# %% [markdown]
# ## Figures for the run ledger
# A stage writes its headline figures to `metrics.json`; kernelgen's ledger records
# each as `stageN.<name>`, so runs can be compared on them.

# %%
def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive (label 1) outscores a random negative, ties
    counting half; NaN when either kind is missing."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # tied scores share the mean of their ranks
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def write_metrics(folder: Path, values: dict[str, float]) -> Path:
    """`folder/metrics.json`: the finite figures of `values`, names sorted."""
    kept = {name: float(value) for name, value in sorted(values.items()) if np.isfinite(value)}
    path = folder / "metrics.json"
    path.write_text(json.dumps(kept, indent=2) + "\n")
    return path
