# %% [markdown]
# ## Post-processing searched on the validation split
# Per class, the pixel threshold, minimum region size and minimum total area
# that maximise the competition metric (mean Dice over (image, class) pairs) on
# the validation images, predicted at full size. Per threshold, regions are
# labelled once; every size and area on the grid is then scored with a few
# bincounts, not by filtering the masks again.

# %%
from collections.abc import Mapping, Sequence

import numpy as np

from stages.lib.seg.postprocess import label_planes
from stages.lib.severstal import CLASS_IDS

# The search grid (per class): pixel thresholds, minimum component sizes and minimum
# total areas (what is left of a class's mask on an image after the size filter).
TUNE_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
TUNE_MIN_AREAS = (0, 300, 600, 900, 1200, 1500, 2000, 2500, 3000, 4000)
TUNE_MIN_SIZES = (
    0, 50, 100, 150, 200, 300, 400, 600, 800, 1000, 1200, 1500, 2000, 2500, 3000, 3500,
    4000, 5000, 6000, 8000, 10000,
)


def class_dice_sums(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = TUNE_THRESHOLDS,
    min_sizes: Sequence[int] = TUNE_MIN_SIZES,
    min_areas: Sequence[int] = TUNE_MIN_AREAS,
) -> np.ndarray:
    """Per (threshold, min size, min area), the sum over images of one class's Dice.

    `probs` (N, H, W): probabilities in [0, 1], or uint8 holding round(255 p);
    `truth` (N, H, W) binary. Per threshold, regions are labelled once for all
    images; each region's size and overlap with the truth come from two
    bincounts, and every minimum size is then scored at once: per (size,
    image) predicted area and overlap are summed with one bincount, and every
    minimum total area is a comparison on those sums. A sum, not a mean, so the
    sums of several sets of images add up to the sum of their union.
    """
    n = probs.shape[0]
    sizes_grid = np.asarray(min_sizes, dtype=np.int64)
    areas_grid = np.asarray(min_areas, dtype=np.int64)
    truth = truth.astype(bool, copy=False)
    truth_area = truth.reshape(n, -1).sum(axis=1).astype(np.float64)
    scale = 255.0 if probs.dtype == np.uint8 else 1.0
    sums = np.zeros((len(thresholds), sizes_grid.size, areas_grid.size), dtype=np.float64)
    for row, threshold in enumerate(thresholds):
        pred = probs > threshold * scale
        labels, count = label_planes(pred)
        picked = labels[pred]
        area = np.bincount(picked, minlength=count + 1)[1:]
        overlap = np.bincount(picked, weights=truth[pred], minlength=count + 1)[1:]
        image = np.zeros(count + 1, dtype=np.int64)
        image[picked] = np.nonzero(pred)[0]
        image = image[1:]
        keep = area[None, :] > sizes_grid[:, None]  # (sizes, regions)
        slot = (np.arange(sizes_grid.size)[:, None] * n + image[None, :])[keep]
        pred_area = np.bincount(
            slot, weights=np.broadcast_to(area, keep.shape)[keep], minlength=sizes_grid.size * n
        ).reshape(sizes_grid.size, n)
        inter = np.bincount(
            slot, weights=np.broadcast_to(overlap, keep.shape)[keep],
            minlength=sizes_grid.size * n,
        ).reshape(sizes_grid.size, n)
        whole = pred_area[None] >= areas_grid[:, None, None]  # (areas, sizes, images)
        total = np.where(whole, pred_area[None], 0.0) + truth_area
        inter_kept = np.where(whole, inter[None], 0.0)
        dice = np.where(total > 0, 2.0 * inter_kept / np.maximum(total, 1.0), 1.0)
        sums[row] = dice.sum(axis=2).T
    return sums


def pick(
    grid: np.ndarray,
    thresholds: Sequence[float] = TUNE_THRESHOLDS,
    min_sizes: Sequence[int] = TUNE_MIN_SIZES,
    prefer: tuple[float, int, int] = (0.5, 3500, 0),
    min_areas: Sequence[int] = TUNE_MIN_AREAS,
) -> tuple[float, int, int, float]:
    """The best (threshold, min size, min area) of a (threshold, size, area) grid of mean
    Dice, and its score.

    When every entry scores the same (e.g. no pixel predicted on the split) the
    entry nearest `prefer` (the untuned rule) is kept; among other ties, the
    threshold and then the area nearest `prefer`'s, and the middle of the tied
    sizes, away from the edges of the plateau.
    """
    sizes_grid = np.asarray(min_sizes, dtype=np.int64)
    areas_grid = np.asarray(min_areas, dtype=np.int64)
    tied = grid >= grid.max() - 1e-12
    threshold_grid = np.asarray(thresholds)
    if tied.all():  # nothing to learn from: keep the configured rule (nearest grid entry)
        row = int(np.argmin(np.abs(threshold_grid - prefer[0])))
        col = int(np.argmin(np.abs(sizes_grid - prefer[1])))
        depth = int(np.argmin(np.abs(areas_grid - prefer[2])))
    else:  # threshold, then area nearest the configured ones; the middle of the tied sizes
        rows = np.flatnonzero(tied.any(axis=(1, 2)))
        row = int(rows[np.argmin(np.abs(threshold_grid[rows] - prefer[0]))])
        depths = np.flatnonzero(tied[row].any(axis=0))
        depth = int(depths[np.argmin(np.abs(areas_grid[depths] - prefer[2]))])
        cols = np.flatnonzero(tied[row, :, depth])
        col = int(cols[(cols.size - 1) // 2])
    return (
        float(thresholds[row]),
        int(sizes_grid[col]),
        int(areas_grid[depth]),
        float(grid[row, col, depth]),
    )


def tune_class(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = TUNE_THRESHOLDS,
    min_sizes: Sequence[int] = TUNE_MIN_SIZES,
    prefer: tuple[float, int, int] = (0.5, 3500, 0),
    min_areas: Sequence[int] = TUNE_MIN_AREAS,
) -> tuple[float, int, int, float, np.ndarray]:
    """Best (pixel threshold, min region size, min total area) for one class on validation maps.

    `probs` and `truth` as `class_dice_sums` takes them. Returns the best threshold,
    size, area, its mean Dice (1 for empty-empty pairs) and the whole (threshold,
    size, area) grid of mean Dice; ties are broken as `pick` breaks them.
    """
    grid = class_dice_sums(probs, truth, thresholds, min_sizes, min_areas) / probs.shape[0]
    return (*pick(grid, thresholds, min_sizes, prefer, min_areas), grid)


def search_postprocess(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = TUNE_THRESHOLDS,
    min_sizes: Sequence[int] = TUNE_MIN_SIZES,
    prefer: tuple[float, int, int] = (0.5, 3500, 0),
    min_areas: Sequence[int] = TUNE_MIN_AREAS,
) -> dict[str, dict]:
    """Per class, the threshold, min region size and min total area that score best;
    (N, C, H, W) in.

    Returns `{"1": {"pixel_threshold": t, "min_size": m, "min_area": a, "dice": d}, ...}`,
    the content of `postprocess.json`.
    """
    picks = [
        tune_class(probs[:, index], truth[:, index], thresholds, min_sizes, prefer, min_areas)[:4]
        for index in range(probs.shape[1])
    ]
    return entries(picks)


def entries(picks: Sequence[tuple[float, int, int, float]]) -> dict[str, dict]:
    """`postprocess.json`'s content from each class's (threshold, size, area, Dice), in class order."""
    keys = ("pixel_threshold", "min_size", "min_area", "dice")
    return {
        str(class_id): dict(zip(keys, chosen, strict=True))
        for class_id, chosen in zip(CLASS_IDS[: len(picks)], picks, strict=True)
    }


def describe(chosen: Mapping[str, Mapping[str, float]]) -> str:
    """One line on the rules a search chose and the Dice each scored."""
    return "; ".join(
        f"class {c}: threshold {chosen[str(c)]['pixel_threshold']}, "
        f"min size {chosen[str(c)]['min_size']}, min area {chosen[str(c)]['min_area']}, "
        f"dice {chosen[str(c)]['dice']:.4f}"
        for c in CLASS_IDS
    )
