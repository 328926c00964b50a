# %% [markdown]
# ## Segmentation data
# Images and their four defect masks for the segmentation stage. Every image
# is checked from its header before any training starts, so a bad file fails
# the kernel in seconds instead of hours in. The data loader hands out uint8
# tensors: a quarter of the bytes of float32 to move to the GPU, where
# normalisation and the flip augmentation run on the whole batch at once.

# %%
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from kernelgen.runtime import InputError
from stages.lib.rle import rle_decode_many
from stages.lib.severstal import CLASS_IDS, IMAGE_SHAPE
from stages.lib.submission import Submission, read_submission

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(folder: Path) -> list[str]:
    """Sorted image file names in `folder`; InputError naming it when it is missing or empty."""
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    names = sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not names:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
    return names


def sample_test_names(test_dir: Path, sample_path: Path) -> tuple[Submission, list[str]]:
    """The sample submission and the test images it names, in its order, once each.

    `test_dir` must be an image folder and the sample must name at least one image;
    the images themselves are checked with `check_images`.
    """
    list_images(test_dir)
    sample = read_submission(sample_path)
    names = list(dict.fromkeys(sample.frame["ImageId"].astype(str).tolist()))
    if not names:
        raise InputError(f"{sample_path}: no test images listed (empty test set)")
    return sample, names


def check_images(
    folder: Path, names: Sequence[str], shape: tuple[int, int] = IMAGE_SHAPE
) -> None:
    """Open each image's header only: a missing, unreadable or wrongly sized file fails now.

    Reading the header costs well under a millisecond per JPEG, against the
    hours a training run would lose if a bad file surfaced in a late epoch.
    """
    height, width = shape
    for name in names:
        path = folder / name
        try:
            with Image.open(path) as image:
                size = image.size
        except FileNotFoundError:
            raise InputError(f"{path}: image file not found") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"{path}: not a readable image ({type(exc).__name__})") from None
        if size != (width, height):
            raise InputError(
                f"{path}: image is {size[0]}x{size[1]} (width x height), "
                f"expected {width}x{height}"
            )


def defects_by_image(
    defects: pd.DataFrame, image_names: Sequence[str], source: Path
) -> dict[str, list[tuple[int, str]]]:
    """Group defect rows as image -> [(class, rle)], refusing rows for images that do not exist.

    `defects` has one row per (image, class) with a defect: ImageId, ClassId,
    EncodedPixels. `source` (train.csv) is named in the error.
    """
    known = set(image_names)
    present = defects[defects["EncodedPixels"].astype(str).str.strip() != ""]
    ids = present["ImageId"].astype(str).tolist()
    unknown = sorted({image_id for image_id in ids if image_id not in known})
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise InputError(
            f"{source}: defect rows for {len(unknown)} image(s) not in train_images: {shown}"
        )
    grouped: dict[str, list[tuple[int, str]]] = {}
    classes = present["ClassId"].astype(np.int64).tolist()
    rles = present["EncodedPixels"].astype(str).tolist()
    for image_id, class_id, rle in zip(ids, classes, rles, strict=True):
        grouped.setdefault(image_id, []).append((int(class_id), rle))
    return grouped


def resize_nearest(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of (..., H, W) masks by index sampling (no interpolation)."""
    src_h, src_w = masks.shape[-2:]
    if (src_h, src_w) == (height, width):
        return masks
    rows = np.minimum(((np.arange(height) + 0.5) * src_h / height).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * src_w / width).astype(np.int64), src_w - 1)
    return masks[..., rows[:, None], cols[None, :]]


def load_image(path: Path, height: int, width: int) -> np.ndarray:
    """An image as (3, height, width) uint8, resized bilinearly when the size differs."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), Image.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__})") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def decode_masks(
    entries: Sequence[tuple[int, str]], height: int, width: int, where: str = ""
) -> np.ndarray:
    """The (4, height, width) uint8 masks of one image from its (class, rle) entries."""
    masks = np.zeros((len(CLASS_IDS), *IMAGE_SHAPE), dtype=np.uint8)
    if entries:
        decoded = rle_decode_many([rle for _, rle in entries], IMAGE_SHAPE, where)
        for (class_id, _), mask in zip(entries, decoded, strict=True):
            masks[class_id - 1] |= mask
    return np.ascontiguousarray(resize_nearest(masks, height, width))


class SteelSegDataset(Dataset):
    """Images (and, for training, masks) as uint8 tensors at the training size.

    Items are `(image, masks)` when `defects` is given, else `image` alone;
    image is (3, H, W), masks (4, H, W), both uint8.
    """

    def __init__(
        self,
        folder: Path,
        names: Sequence[str],
        height: int,
        width: int,
        defects: dict[str, list[tuple[int, str]]] | None = None,
        source: str = "train.csv",
    ) -> None:
        self.folder = Path(folder)
        self.names = list(names)
        self.height = height
        self.width = width
        self.defects = defects
        self.source = source

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        name = self.names[index]
        image = torch.from_numpy(load_image(self.folder / name, self.height, self.width))
        if self.defects is None:
            return image
        entries = self.defects.get(name, [])
        masks = decode_masks(entries, self.height, self.width, f"{self.source} ({name})")
        return image, torch.from_numpy(masks)
