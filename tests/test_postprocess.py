"""Stage 4 post-processing tuned on validation: per-class threshold and minimum region size.

These tests use synthetic probability maps with planted defects instead of a trained
model: fast and deterministic. The maps are small (64x400) but the defects have the
sizes of real class 1/2 defects (a few hundred pixels) and of classes 3/4 (thousands).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from stages.lib.metrics import batch_dice
from stages.lib.seg.oof import SearchStats
from stages.lib.seg.postprocess import PostProcess, drop_small_totals, per_class, remove_small
from stages.lib.seg.tune import (
    TUNE_MIN_AREAS,
    TUNE_MIN_SIZES,
    TUNE_THRESHOLDS,
    search_postprocess,
    tune_class,
)
from stages.stage4_segmentation import Params
from tests.stage_params import params_alone

SHAPE = (64, 400)
# Defect area range per class (pixels) and the chance an (image, class) pair has one.
DEFECT_AREA = {0: (250, 900), 1: (250, 900), 2: (4000, 9000), 3: (4000, 9000)}
DEFECT_RATE = 0.25


def _rect(rng: np.random.Generator, area: int) -> tuple[slice, slice]:
    height = int(rng.integers(8, min(SHAPE[0], max(9, area // 10)) + 1))
    width = max(1, min(SHAPE[1], area // height))
    top = int(rng.integers(0, SHAPE[0] - height + 1))
    left = int(rng.integers(0, SHAPE[1] - width + 1))
    return slice(top, top + height), slice(left, left + width)


def planted_maps(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, truth), both (n, 4, 64, 400).

    True defects get probabilities around 0.8; spurious blobs of 20-80 pixels around
    0.65 appear on a third of the pairs (the false positives a size filter removes);
    the background is noise around 0.1.
    """
    rng = np.random.default_rng(seed)
    probs = np.clip(rng.normal(0.1, 0.08, (n, 4, *SHAPE)), 0, 1).astype(np.float32)
    truth = np.zeros((n, 4, *SHAPE), dtype=bool)
    for i, c in itertools.product(range(n), range(4)):
        if rng.random() < 1 / 3:
            rows, cols = _rect(rng, int(rng.integers(20, 81)))
            probs[i, c, rows, cols] = rng.uniform(0.55, 0.75)
        if rng.random() < DEFECT_RATE:
            rows, cols = _rect(rng, int(rng.integers(*DEFECT_AREA[c])))
            truth[i, c, rows, cols] = True
            probs[i, c, rows, cols] = np.clip(
                rng.normal(0.8, 0.08, truth[i, c, rows, cols].sum()), 0, 1
            ).reshape(probs[i, c, rows, cols].shape)
    return probs, truth


def score(probs: np.ndarray, truth: np.ndarray, thresholds, min_sizes) -> float:
    """Competition metric (mean Dice over image-class pairs) after the post-processing."""
    cut = np.asarray(thresholds, dtype=np.float32).reshape(1, -1, 1, 1)
    return float(batch_dice(remove_small(probs > cut, min_sizes), truth).mean())


def test_tuned_postprocessing_recovers_planted_small_defects() -> None:
    val_probs, val_truth = planted_maps(60, seed=1)
    chosen = search_postprocess(val_probs, val_truth)
    assert set(chosen) == {"1", "2", "3", "4"}
    sizes = [chosen[c]["min_size"] for c in "1234"]
    thresholds = [chosen[c]["pixel_threshold"] for c in "1234"]
    # Classes 1 and 2: below the smallest planted defect, above the spurious blobs.
    assert all(80 <= size < 250 for size in sizes[:2]), chosen
    assert all(size < 3500 for size in sizes[:2])
    # Classes 3 and 4: any size between the blobs and the smallest defect is best.
    assert all(80 <= size < 4000 for size in sizes[2:]), chosen

    post = PostProcess.chosen(chosen)
    assert post.record() == {
        "pixel_thresholds": thresholds, "min_sizes": sizes, "min_areas": [chosen[c]["min_area"] for c in "1234"],
    }

    test_probs, test_truth = planted_maps(60, seed=2)
    fixed = score(test_probs, test_truth, [0.5] * 4, 3500)
    tuned = score(test_probs, test_truth, thresholds, sizes)
    print(f"unseen maps: fixed 0.5/3500 {fixed:.4f}, tuned {tuned:.4f} ({chosen})")
    assert tuned >= fixed
    assert tuned > fixed + 0.05  # the fixed rule drops every class 1/2 defect


def test_vectorised_search_matches_a_plain_loop() -> None:
    probs, truth = planted_maps(12, seed=7)
    thresholds, sizes, areas = (0.4, 0.6, 0.7), (0, 50, 100, 300, 5000), (0, 60, 400, 2000)
    for c in range(4):
        *_, grid = tune_class(probs[:, c], truth[:, c], thresholds, sizes, min_areas=areas)
        assert grid.shape == (3, 5, 4)
        cases = itertools.product(enumerate(thresholds), enumerate(sizes), enumerate(areas))
        for (row, t), (col, m), (depth, a) in cases:
            kept = drop_small_totals(remove_small(probs[:, c] > t, m), a)
            expected = batch_dice(kept[:, None], truth[:, c, None]).mean()
            assert grid[row, col, depth] == pytest.approx(expected, abs=1e-12)


def test_uint8_maps_tune_like_float_maps() -> None:
    probs, truth = planted_maps(12, seed=3)
    as_uint8 = np.round(probs * 255).astype(np.uint8)
    assert search_postprocess(as_uint8, truth).keys() == search_postprocess(probs, truth).keys()
    for c in range(4):
        t8, m8, a8, _, _ = tune_class(as_uint8[:, c], truth[:, c])
        tf, mf, af, _, _ = tune_class(probs[:, c], truth[:, c])
        assert m8 == mf and a8 == af and abs(t8 - tf) <= 0.05


def test_remove_small_takes_one_size_per_class() -> None:
    masks = np.zeros((2, 4, 20, 20), dtype=bool)
    masks[:, :, 0:3, 0:3] = True  # 9 pixels in every plane
    masks[:, :, 10:15, 10:15] = True  # 25 pixels in every plane
    kept = remove_small(masks, [0, 9, 24, 25])
    assert kept[:, 0].sum() == 2 * 34
    assert kept[:, 1].sum() == 2 * 25 and kept[:, 2].sum() == 2 * 25
    assert kept[:, 3].sum() == 0
    assert (remove_small(masks, 9) == remove_small(masks, [9] * 4)).all()
    with pytest.raises(ValueError, match="per-class sizes"):
        remove_small(masks, [1, 2, 3])


@pytest.mark.parametrize("params", [Params, params_alone("stages.stage4_segmentation")])
def test_per_class_lists_are_used_and_checked(params: type) -> None:
    default = Params()
    assert per_class(default.pixel_thresholds, default.pixel_threshold) == (0.5,) * 4
    assert per_class(default.min_sizes, default.min_size) == (3500,) * 4
    assert per_class(default.min_areas, default.min_area) == (0,) * 4
    given = Params(pixel_thresholds=(0.55, 0.7, 0.53, 0.5), min_sizes=(600, 600, 1000, 2000), min_area=500)
    assert per_class(given.pixel_thresholds, given.pixel_threshold) == (0.55, 0.7, 0.53, 0.5)
    assert per_class(given.min_sizes, given.min_size) == (600, 600, 1000, 2000)
    assert per_class(given.min_areas, given.min_area) == (500,) * 4
    params(pixel_thresholds=(0.55, 0.7, 0.53, 0.5), min_sizes=(0, 0, 0, 0), tune_postprocess=True)
    params(pixel_thresholds=[0.55, 0.7, 0.53, 0.5], min_areas=[600, 600, 900, 2000])  # as TOML gives them
    thresholds = "must be empty or 4 numbers between 0 and 1 (exclusive), one per class"
    integers = "must be empty or 4 integers of at least 0, one per class"
    bad = [
        ("pixel_thresholds", (0.5, 0.5, 0.5), thresholds),
        ("pixel_thresholds", (0.5, 0.5, 1.0, 0.5), thresholds),
        ("pixel_thresholds", (0.5, "x", 0.5, 0.5), thresholds),
        ("pixel_thresholds", "0.5,0.5,0.5,0.5", thresholds),
        ("min_sizes", (600, 600, -1, 2000), integers),
        ("min_sizes", (600, 600, 1.5, 2000), integers),
        ("min_areas", (600, 600, -5, 2000), integers),
        ("min_areas", (600, 600), integers),
    ]
    for name, value, rule in bad:
        shown = list(value) if isinstance(value, tuple) else value
        with pytest.raises(ValueError, match=f"^{re.escape(f'{name} {rule}, got {shown!r}')}$"):
            params(**{name: value})


def test_ties_go_to_the_untuned_values() -> None:
    """A class the validation split cannot tell apart keeps the configured rule."""
    probs = np.full((3, 1, 16, 16), 0.1, dtype=np.float32)  # nothing predicted anywhere
    truth = np.zeros(probs.shape, dtype=bool)
    threshold, size, area, dice, grid = tune_class(probs[:, 0], truth[:, 0])
    assert (threshold, size, area, dice) == (0.5, 3500, 0, 1.0) and (grid == 1.0).all()
    assert tune_class(probs[:, 0], truth[:, 0], prefer=(0.6, 600, 900))[:3] == (0.6, 600, 900)


def test_drop_small_totals_empties_whole_planes_per_class() -> None:
    masks = np.zeros((2, 4, 20, 20), dtype=bool)
    masks[:, :, 0:3, 0:3] = True  # 9 pixels
    masks[:, :, 10:14, 10:14] = True  # and 16: 25 in every plane
    masks[1, 2] = False
    kept = drop_small_totals(masks, [0, 25, 26, 9])
    assert (kept[:, 0] == masks[:, 0]).all() and (kept[:, 1] == masks[:, 1]).all()
    assert not kept[:, 2].any()  # 25 is under 26: both regions go together
    assert (kept[:, 3] == masks[:, 3]).all()
    assert (drop_small_totals(masks, 26) == drop_small_totals(masks, [26] * 4)).all()
    with pytest.raises(ValueError, match="per-class areas"):
        drop_small_totals(masks, [1, 2])


def test_total_area_search_finds_a_planted_area_rule() -> None:
    """Predicted masks made of many small specks (each under any useful size filter)
    that add up to 100-250 px where there is no defect, and true masks of 800+ px:
    only a total-area minimum between the two separates them."""
    rng = np.random.default_rng(4)
    n = 40
    probs = np.full((n, 64, 400), 0.05, dtype=np.float32)
    truth = np.zeros((n, 64, 400), dtype=bool)
    for i in range(n):
        if i % 2:
            truth[i, 10:30, 20 : 20 + int(rng.integers(40, 80))] = True  # 800-1600 px
            probs[i][truth[i]] = 0.9
        else:
            for _ in range(int(rng.integers(25, 60))):  # 2x2 specks on a 4-px grid: 100-240 px
                y, x = int(rng.integers(0, 16)) * 4, int(rng.integers(0, 100)) * 4
                probs[i, y : y + 2, x : x + 2] = 0.9
    found = tune_class(probs, truth, min_sizes=(0,), min_areas=(0, 300, 600, 900))
    # 300 and 600 both separate them perfectly: the tie goes to the area nearest 0.
    assert (found[2], found[3]) == (300, pytest.approx(1.0))
    without = tune_class(probs, truth, min_sizes=(0,), min_areas=(0,))[3]
    assert without < 0.8


# ---------------------------------------------------------------------------------------
# The search from statistics that add up over folds


def test_statistics_of_one_split_choose_what_the_search_on_its_maps_chooses() -> None:
    probs, truth = planted_maps(20, seed=11)
    as_uint8 = np.round(probs * 255).astype(np.uint8)
    for maps in (probs, as_uint8):
        for prefer in ((0.5, 3500, 0), (0.6, 600, 900)):
            assert SearchStats.from_maps(maps, truth, prefer).chosen() == search_postprocess(maps, truth, prefer=prefer)


def test_the_folds_statistics_added_up_choose_what_one_search_over_their_union_chooses() -> None:
    """Three folds of unequal size, each summed up on its own; their sum gives the union's
    choice and Dice, and the union's Dice is the mean of the folds' weighted by size."""
    probs, truth = planted_maps(45, seed=12)
    probs = np.round(probs * 255).astype(np.uint8)  # as stage 4 scores validation maps
    cuts = [(0, 9), (9, 26), (26, 45)]
    folds = [SearchStats.from_maps(probs[a:b], truth[a:b], (0.5, 3500, 0)) for a, b in cuts]
    combined = folds[0] + folds[1] + folds[2]
    assert combined.images == 45
    union = search_postprocess(probs, truth)
    chosen = combined.chosen()
    for c in "1234":
        assert {k: v for k, v in chosen[c].items() if k != "dice"} == {k: v for k, v in union[c].items() if k != "dice"}
        assert chosen[c]["dice"] == pytest.approx(union[c]["dice"], abs=1e-12)
    # Each fold alone chooses otherwise (a per-fold choice cannot stand in for the union).
    rules = [{c: (e["pixel_threshold"], e["min_size"], e["min_area"]) for c, e in f.chosen().items()} for f in folds]
    assert all(rule != {c: (e["pixel_threshold"], e["min_size"], e["min_area"]) for c, e in chosen.items()} for rule in rules)
    weighted = sum(f.sums for f in folds) / 45
    assert np.allclose(weighted, np.stack([tune_class(probs[:, c], truth[:, c])[4] for c in range(4)]))


def test_statistics_survive_the_checkpoint_and_are_small(tmp_path) -> None:
    import torch

    probs, truth = planted_maps(6, seed=13)
    stats = SearchStats.from_maps(probs, truth, (0.55, 600, 300))
    torch.save({"search": stats.record()}, tmp_path / "model.pth")
    loaded = SearchStats.from_record(torch.load(tmp_path / "model.pth", weights_only=True)["search"])
    assert (loaded.images, loaded.prefer, loaded.grid()) == (6, (0.55, 600, 300), stats.grid())
    assert np.array_equal(loaded.sums, stats.sums) and loaded.chosen() == stats.chosen()
    # Whatever the number of images: 4 classes x the grid, in float64.
    grid = len(TUNE_THRESHOLDS) * len(TUNE_MIN_SIZES) * len(TUNE_MIN_AREAS)
    assert loaded.sums.nbytes == 4 * grid * 8 < 80_000


def test_statistics_on_other_grids_do_not_add_up() -> None:
    probs, truth = planted_maps(4, seed=14)
    stats = SearchStats.from_maps(probs, truth)
    other = SearchStats(stats.images, stats.sums[:, :, :, :3], stats.prefer, stats.thresholds, stats.min_sizes, (0, 1, 2))
    with pytest.raises(ValueError, match="different grids"):
        stats + other
