# %% [markdown]
# ## The post-processing search, from statistics that add up over folds
# The search scores every (pixel threshold, minimum region size, minimum total
# area) on the grid by the mean Dice of a class over the validation images, and
# each image's Dice for each grid entry depends on that image alone. So a fold's
# validation split is summed up, per class, by the sum of its images' Dice for
# each grid entry and the number of images: 4 x 11 x 21 x 10 numbers, 74 KB,
# whatever the split's size (the probability maps of 2,500 validation images at
# 256x1600 would be 4 GB). Stage 4 stores them in the checkpoint; the sums of
# all folds are the sums of the union of their validation images, each
# predicted by the model that did not train on it, and the search on them is the
# search on the out-of-fold predictions. The maps are scored a batch at a time,
# so the split is never held in memory either.

# %%
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.lib.seg.device import DeviceSetup, make_loader
from stages.lib.seg.predict import full_size_probs
from stages.lib.seg.tune import (
    TUNE_MIN_AREAS,
    TUNE_MIN_SIZES,
    TUNE_THRESHOLDS,
    class_dice_sums,
    entries,
    pick,
)
from stages.lib.segdata import SteelSegDataset, decode_masks
from stages.lib.severstal import CLASS_IDS, IMAGE_SHAPE


@dataclass(frozen=True)
class SearchStats:
    """Per class, the sum over `images` validation images of the Dice of every entry of the
    (thresholds, min_sizes, min_areas) grid: `sums` (classes, thresholds, sizes, areas).
    `prefer` is the untuned rule (threshold, size, area) ties fall back to."""

    images: int
    sums: np.ndarray
    prefer: tuple[float, int, int] = (0.5, 3500, 0)
    thresholds: tuple[float, ...] = TUNE_THRESHOLDS
    min_sizes: tuple[int, ...] = TUNE_MIN_SIZES
    min_areas: tuple[int, ...] = TUNE_MIN_AREAS

    @classmethod
    def from_maps(
        cls, probs: np.ndarray, truth: np.ndarray, prefer: tuple[float, int, int] = (0.5, 3500, 0)
    ) -> "SearchStats":
        """The statistics of (N, C, H, W) probability maps (float, or uint8 holding
        round(255 p)) against their binary truth, on the default grid."""
        sums = np.stack(
            [class_dice_sums(probs[:, c], truth[:, c]) for c in range(probs.shape[1])]
        )
        return cls(int(probs.shape[0]), sums, tuple(prefer))

    def grid(self) -> tuple[tuple[float, ...], tuple[int, ...], tuple[int, ...]]:
        return self.thresholds, self.min_sizes, self.min_areas

    def __add__(self, other: "SearchStats") -> "SearchStats":
        """The statistics of both sets of images together (the same grid; this one's
        `prefer`)."""
        if other.grid() != self.grid() or other.sums.shape != self.sums.shape:
            raise ValueError("search statistics on different grids do not add up")
        return SearchStats(
            self.images + other.images, self.sums + other.sums, self.prefer, *self.grid()
        )

    def chosen(self) -> dict[str, dict]:
        """Per class, the rule with the best mean Dice, as `search_postprocess` chooses it:
        `postprocess.json`'s content."""
        thresholds, sizes, areas = self.grid()
        return entries(
            [
                pick(class_sums / self.images, thresholds, sizes, self.prefer, areas)
                for class_sums in self.sums
            ]
        )

    def record(self) -> dict:
        """As the checkpoint stores it (tensors and lists only, loadable with weights_only)."""
        return {
            "images": self.images,
            "sums": torch.from_numpy(np.ascontiguousarray(self.sums, dtype=np.float64)),
            "prefer": list(self.prefer),
            "thresholds": list(self.thresholds),
            "min_sizes": list(self.min_sizes),
            "min_areas": list(self.min_areas),
        }

    @classmethod
    def from_record(cls, record: Mapping) -> "SearchStats":
        thresholds = tuple(float(v) for v in record["thresholds"])
        sizes = tuple(int(v) for v in record["min_sizes"])
        areas = tuple(int(v) for v in record["min_areas"])
        sums = np.asarray(record["sums"], dtype=np.float64)
        if sums.shape != (len(CLASS_IDS), len(thresholds), len(sizes), len(areas)):
            raise ValueError(f"search statistics of shape {sums.shape} do not fit their grid")
        threshold, size, area = record["prefer"]
        prefer = (float(threshold), int(size), int(area))
        return cls(int(record["images"]), sums, prefer, thresholds, sizes, areas)


def validation_stats(
    model: nn.Module,
    setup: DeviceSetup,
    image_dir: Path,
    names: Sequence[str],
    defects: Mapping[str, list[tuple[int, str]]],
    source: str,
    size: tuple[int, int],
    batch_size: int,
    workers: int,
    tta: str = "none",
    prefer: tuple[float, int, int] = (0.5, 3500, 0),
) -> SearchStats:
    """The search statistics of `names` of `image_dir`, predicted at full size by `model` run
    at `size`, against their masks (`defects` by image, read from `source`)."""
    loader = make_loader(
        SteelSegDataset(image_dir, list(names), *size), batch_size, workers, setup.device,
        shuffle_seed=None,
    )
    total: SearchStats | None = None
    done = 0
    for probs in full_size_probs(model, loader, setup, tta):
        batch = names[done : done + len(probs)]
        truth = np.stack([decode_masks(defects.get(name, []), *IMAGE_SHAPE, source) for name in batch])
        part = SearchStats.from_maps(probs, truth, prefer)
        total = part if total is None else total + part
        done += len(probs)
    if total is None:
        raise ValueError("no validation images to tune the post-processing on")
    return total
