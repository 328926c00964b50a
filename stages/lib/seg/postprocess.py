# %% [markdown]
# ## Post-processing
# A predicted mask keeps, per class, only connected regions larger than a
# minimum size: small blobs are mostly false positives, and a false positive on
# an empty (image, class) pair scores 0. After that, a class's whole mask on an
# image is dropped when it covers less than a minimum total area. Components are
# labelled for a whole batch in one call, with 8-connectivity inside each
# (image, class) plane and none across planes.

# %%
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import ndimage

from stages.lib.severstal import CLASS_IDS

T = TypeVar("T")


def per_class(values: Sequence[T], single: T) -> tuple[T, ...]:
    """One value per class: `values` when given, else `single` for every class."""
    return tuple(values) or (single,) * len(CLASS_IDS)


@dataclass(frozen=True)
class PostProcess:
    """Per class, in class order: the pixel threshold, the minimum region size and the
    minimum total area a mask goes through."""

    pixel_thresholds: tuple[float, ...]
    min_sizes: tuple[int, ...]
    min_areas: tuple[int, ...]

    @classmethod
    def chosen(cls, search: Mapping[str, Mapping[str, float]]) -> "PostProcess":
        """The rules a search picked (`postprocess.json`: per class id, its entry)."""
        entries = [search[str(c)] for c in CLASS_IDS]
        return cls(
            tuple(entry["pixel_threshold"] for entry in entries),
            tuple(entry["min_size"] for entry in entries),
            tuple(entry["min_area"] for entry in entries),
        )

    def record(self) -> dict[str, list]:
        """As the checkpoint stores it, so an inference kernel applies the same rules."""
        return {
            "pixel_thresholds": list(self.pixel_thresholds),
            "min_sizes": list(self.min_sizes),
            "min_areas": list(self.min_areas),
        }


def label_planes(planes: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions of a (P, H, W) boolean stack: 8-connected in a plane, none across."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    return ndimage.label(planes, structure=structure)


def remove_small(masks: np.ndarray, min_size: "int | Sequence[int]") -> np.ndarray:
    """Keep only connected regions with more than `min_size` pixels in each 2-D plane.

    `min_size` is one size for every plane, or one per class: a sequence as
    long as axis -3 of `masks` (the class axis of (N, C, H, W) masks).
    Only planes with a predicted pixel are labelled, and region sizes are
    counted over predicted pixels only: most of a batch is background.
    """
    planes = masks.reshape(-1, *masks.shape[-2:]).astype(bool, copy=False)
    kept = np.zeros(planes.shape, dtype=bool)
    active = np.flatnonzero(planes.any(axis=(1, 2)))
    plane_min = _per_plane(min_size, masks, "remove_small: {} per-class sizes")
    if active.size:
        chosen = planes[active]
        labels, count = label_planes(chosen)
        picked = labels[chosen]
        sizes = np.bincount(picked, minlength=count + 1)
        label_min = np.zeros(count + 1, dtype=np.int64)
        plane_of_pixel = np.nonzero(chosen)[0]
        label_min[picked] = plane_min[active][plane_of_pixel]
        keep = sizes > label_min
        keep[0] = False
        kept[active] = keep[labels]
    return kept.reshape(masks.shape)


def _per_plane(value: "int | Sequence[int]", masks: np.ndarray, what: str) -> np.ndarray:
    """One value per 2-D plane of `masks`: the same for all, or one per class (axis -3)."""
    planes = int(np.prod(masks.shape[:-2], dtype=np.int64))
    if not np.ndim(value):
        return np.full(planes, int(value), dtype=np.int64)
    classes = np.asarray(value, dtype=np.int64)
    if masks.ndim < 3 or classes.size != masks.shape[-3]:
        raise ValueError(f"{what.format(classes.size)} for masks of shape {masks.shape}")
    return np.tile(classes, planes // classes.size)


def drop_small_totals(masks: np.ndarray, min_area: "int | Sequence[int]") -> np.ndarray:
    """Empty every 2-D plane whose mask covers fewer than `min_area` pixels in all.

    `min_area` is one value for every plane or one per class, as in `remove_small`;
    0 keeps every plane. The 1st-place 2019 solution dropped a class's mask below a
    per-class total area (600/600/900/2000 px) after dropping small components.
    """
    area = masks.reshape(-1, *masks.shape[-2:]).sum(axis=(1, 2))
    keep = area >= _per_plane(min_area, masks, "drop_small_totals: {} per-class areas")
    return masks & keep.reshape(*masks.shape[:-2], 1, 1)
