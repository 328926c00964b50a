# %% [markdown]
# ## Reading train.csv
# The competition shipped `train.csv` in two shapes: the new one has a row per
# (image, class) with a defect (`ImageId,ClassId,EncodedPixels`); the old one
# has four rows per image (`ImageId_ClassId,EncodedPixels`) with empty pixels
# where there is no defect. Both are read into the same frame of defect rows,
# checked row by row so a broken file fails with its path and line.

# %%
from pathlib import Path

import numpy as np
import pandas as pd

from kernelgen.runtime import InputError
from stages.lib.csvtext import read_text_csv
from stages.lib.rle import rle_decode, rle_runs
from stages.lib.severstal import CLASS_IDS, IMAGE_SHAPE

DEFECT_COLUMNS: tuple[str, ...] = ("ImageId", "ClassId", "EncodedPixels")
_OLD_COLUMNS = ("ImageId_ClassId", "EncodedPixels")


def _error(path: Path, row: int, message: str) -> InputError:
    """An error for data row `row` (0-based), naming its file line (the header is line 1)."""
    return InputError(f"{path}: line {row + 2}: {message}")


def _first(flags: pd.Series) -> int | None:
    """The position of the first True in `flags`, or None."""
    rows = np.flatnonzero(flags.to_numpy(dtype=bool))
    return int(rows[0]) if rows.size else None


def _split_keys(path: Path, table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Image ids and class texts from the old format's `<image>_<class>` keys."""
    keys = table["ImageId_ClassId"].astype(str).str.strip()
    parts = keys.str.rpartition("_")
    row = _first((parts[1] == "") | (parts[0] == ""))
    if row is not None:
        raise _error(
            path,
            row,
            f"malformed ImageId_ClassId {keys.iloc[row]!r}; "
            "expected <image>_<class>, e.g. 0002cc93b.jpg_1",
        )
    return parts[0], parts[2]


def _load(path: Path) -> tuple[pd.DataFrame, list[str] | None]:
    """The defect frame and, for the old format, every image id in file order."""
    path = Path(path)
    table = read_text_csv(path, "file")
    columns = set(table.columns)
    if set(DEFECT_COLUMNS) <= columns:
        images = table["ImageId"].astype(str).str.strip()
        classes = table["ClassId"].astype(str).str.strip()
        old_format = False
    elif set(_OLD_COLUMNS) <= columns:
        images, classes = _split_keys(path, table)
        old_format = True
    else:
        expected = _OLD_COLUMNS if "ImageId_ClassId" in columns else DEFECT_COLUMNS
        missing = [name for name in expected if name not in columns]
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; train.csv needs "
            f"{','.join(DEFECT_COLUMNS)} (or the old {','.join(_OLD_COLUMNS)})"
        )

    row = _first(images == "")
    if row is not None:
        raise _error(path, row, "empty ImageId")
    allowed = [str(class_id) for class_id in CLASS_IDS]
    row = _first(~classes.isin(allowed))
    if row is not None:
        raise _error(
            path, row, f"ClassId {classes.iloc[row]!r} is not one of {', '.join(allowed)}"
        )
    image_list = images.tolist()
    class_list = [int(text) for text in classes.tolist()]
    pairs = pd.Series([f"{image}_{cls}" for image, cls in zip(image_list, class_list, strict=True)])
    row = _first(pairs.duplicated())
    if row is not None:
        first = _first(pairs == pairs.iloc[row])
        raise _error(
            path,
            row,
            f"duplicate row for image {image_list[row]!r} class {class_list[row]} "
            f"(first on line {first + 2})",
        )

    rles = table["EncodedPixels"].astype(str).str.strip().tolist()
    kept = [row for row, rle in enumerate(rles) if rle]
    for row in kept:
        rle_runs(rles[row], IMAGE_SHAPE, f"{path}: line {row + 2}: EncodedPixels")
    defects = pd.DataFrame(
        {
            "ImageId": pd.Series([image_list[row] for row in kept], dtype=object).astype(str),
            "ClassId": np.array([class_list[row] for row in kept], dtype=np.int64),
            "EncodedPixels": pd.Series([rles[row] for row in kept], dtype=object).astype(str),
        }
    )
    all_images = list(dict.fromkeys(image_list)) if old_format else None
    return defects, all_images


def read_train_csv(path: Path) -> pd.DataFrame:
    """The defects listed in a train.csv of either format, one row per (image, class).

    Columns ImageId (str, e.g. "0002cc93b.jpg"), ClassId (int64, 1..4) and
    EncodedPixels (str, a valid RLE), in file order with a fresh index; rows
    with empty EncodedPixels are dropped. Malformed files raise InputError
    naming the path and line.
    """
    return _load(path)[0]


def read_train_csv_images(path: Path) -> tuple[pd.DataFrame, list[str] | None]:
    """Like `read_train_csv`, plus every image id the file lists when it lists them all.

    The old format has four rows per image, defect-free ones included, so it
    yields the full list of train images (in file order); the new format only
    names images with a defect and yields None: list `train_images/` instead.
    """
    return _load(path)


def image_masks(
    defects: pd.DataFrame, image_id: str, shape: tuple[int, int] = IMAGE_SHAPE
) -> np.ndarray:
    """The (4, height, width) uint8 0/1 masks of one image; plane k holds class k + 1.

    Classes the image has no row for are all zero. C-contiguous, ready for
    `torch.from_numpy`.
    """
    masks = np.zeros((len(CLASS_IDS), *shape), dtype=np.uint8)
    rows = defects[defects["ImageId"] == image_id]
    for class_id, rle in zip(rows["ClassId"].tolist(), rows["EncodedPixels"].tolist(), strict=True):
        masks[int(class_id) - 1] |= rle_decode(
            str(rle), shape, f"image {image_id} class {class_id}"
        )
    return masks


def defect_count_per_image(defects: pd.DataFrame, image_ids: list[str] | None = None) -> pd.Series:
    """How many distinct defect classes each image has (the stage 4 split strata).

    Without `image_ids`, only images with a defect appear, in order of first
    appearance. With `image_ids`, the result follows that list and images
    without a row count 0; rows for images outside the list are left out, so
    check for them first where that would be an error.
    """
    counts = defects.groupby("ImageId", sort=False)["ClassId"].nunique().astype(np.int64)
    if image_ids is not None:
        counts = counts.reindex(pd.Index(image_ids, name="ImageId"), fill_value=0)
    counts.index.name = "ImageId"
    return counts.rename("defect_count")
