# %% [markdown]
# ## A majority vote of the folds' submissions
# When stage 4 ran once per fold, each fold wrote its own submission: masks
# already thresholded and filtered by that fold's post-processing. Stage 5 has
# no probabilities to average, so it keeps the pixels that more than half of
# the folds mark. Where the folds share a threshold this is the median of their
# probabilities against it, the middle fold's decision at every pixel, which one
# fold's stray blob cannot move; with an even number of folds a tie is no
# defect, since a false positive on an empty (image, class) pair costs that pair
# its whole score. A pair most folds leave empty stays empty. The vote runs on
# the runs of the RLE strings themselves (a sweep over their ends), never on
# 256x1600 masks.

# %%
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kernelgen.runtime import InputError
from stages.lib.rle import rle_runs
from stages.lib.submission import Submission


def vote_rle(rles: Sequence[str], need: int) -> str:
    """The RLE of the pixels at least `need` of the valid RLE strings `rles` mark."""
    starts, ends = [], []
    for rle in rles:
        first, length = rle_runs(rle)
        starts.append(first)
        ends.append(first + length)
    edges = np.concatenate(starts + ends)
    if edges.size == 0:
        return ""
    steps = np.concatenate([np.ones(sum(s.size for s in starts)), -np.ones(sum(e.size for e in ends))])
    positions, slot = np.unique(edges, return_inverse=True)
    change = np.zeros(positions.size)
    np.add.at(change, slot, steps)
    # Between positions[i] and positions[i + 1] this many strings mark every pixel.
    covered = np.cumsum(change) >= need
    opens = np.flatnonzero(covered & ~np.concatenate(([False], covered[:-1])))
    closes = np.flatnonzero(covered & ~np.concatenate((covered[1:], [False]))) + 1
    runs = np.empty(2 * opens.size, dtype=np.int64)
    runs[0::2] = positions[opens] + 1
    runs[1::2] = positions[closes] - positions[opens]
    return " ".join(map(str, runs.tolist()))


def majority_vote(subs: Sequence[Submission], paths: Sequence[Path]) -> Submission:
    """Per (image, class) row, the pixels more than half of `subs` mark; the rows, their
    order and the format are the first one's. One submission comes back unchanged.

    Each submission must have the same rows in the same order (`paths` names them in
    the error)."""
    first = subs[0]
    keys = first.frame[["ImageId", "ClassId"]].reset_index(drop=True)
    for sub, path in zip(subs[1:], paths[1:], strict=True):
        if not sub.frame[["ImageId", "ClassId"]].reset_index(drop=True).equals(keys):
            raise InputError(f"{path}: its (image, class) rows differ from {paths[0]}'s; the folds must share one test set")
    need = len(subs) // 2 + 1
    columns = [sub.frame["EncodedPixels"].astype(str).tolist() for sub in subs]
    voted = []
    for rles in zip(*columns, strict=True):
        if all(rle == rles[0] for rle in rles):
            voted.append(rles[0])
        elif sum(1 for rle in rles if rle.strip()) < need:
            voted.append("")
        else:
            voted.append(vote_rle([rle for rle in rles if rle.strip()], need))
    return Submission(frame=first.frame.assign(EncodedPixels=voted), fmt=first.fmt)
