# %% [markdown]
# ## Stratified folds
# The train images are dealt into `n_folds` folds of near-equal size, each
# keeping every stratum's share (here: how many defect classes an image has);
# fold k is model k's validation set and the other folds its training set. The
# folds are dealt one after another from what is left: each gets its size's
# share of every stratum left (floor shares, the leftover places to the strata
# with the largest remainders, ties drawn at random), taken from the front of a
# seeded permutation of each stratum. Fold 0 of 5 is therefore exactly the
# 80/20 hold-out split the 2019 solution made (a fifth of the images, rounded
# up, dealt the same way with the same draws).

# %%
from collections.abc import Sequence

import numpy as np


def fold_sizes(n: int, n_folds: int) -> list[int]:
    """Sizes of `n_folds` folds of `n` images: the first ceil(n / n_folds), each next one
    the rounded-up share of what is left, so sizes differ by at most one."""
    sizes = []
    left = n
    for folds_left in range(n_folds, 0, -1):
        size = -(-left // folds_left)
        sizes.append(size)
        left -= size
    return sizes


def stratified_folds(strata: Sequence[int], n_folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. n_folds - 1) of every image, each fold keeping every stratum's share.

    The same seed gives the same folds; the folds partition the images.
    """
    labels = np.asarray(strata)
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    first_ties = rng.random(values.size)
    orders = [rng.permutation(np.flatnonzero(labels == value)) for value in values]
    fold_of = np.full(labels.size, -1, dtype=np.int64)
    dealt = np.zeros(values.size, dtype=np.int64)
    for fold, size in enumerate(fold_sizes(labels.size, n_folds)):
        ties = first_ties if fold == 0 else rng.random(values.size)
        take = _shares(counts - dealt, size, ties)
        for index, order in enumerate(orders):
            fold_of[order[dealt[index] : dealt[index] + take[index]]] = fold
        dealt += take
    return fold_of


def _shares(left: np.ndarray, size: int, ties: np.ndarray) -> np.ndarray:
    """How many of each stratum's `left` images a fold of `size` takes: the floor of its
    share, then one more for the strata with the largest remainders (`ties` breaks ties)."""
    exact = left * (size / max(int(left.sum()), 1))
    take = np.floor(exact).astype(np.int64)
    remainder = exact - take
    order = np.lexsort((ties, -remainder))
    for index in order[: size - int(take.sum())]:
        take[index] += 1
    return take


def fold_split(
    names: Sequence[str], strata: Sequence[int], fold: int, n_folds: int, seed: int
) -> tuple[list[str], list[str]]:
    """(train, validation) names for fold `fold` of `n_folds` stratified folds, in `names` order."""
    if len(names) != len(strata):
        raise ValueError("names and strata differ in length")
    fold_of = stratified_folds(strata, n_folds, seed)
    train = [name for name, f in zip(names, fold_of, strict=True) if f != fold]
    val = [name for name, f in zip(names, fold_of, strict=True) if f == fold]
    return train, val
