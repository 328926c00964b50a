"""Synthetic Severstal competition data, so every stage can run and be tested anywhere.

The real data cannot be downloaded in CI or on a laptop without an account, and the
learning tests need data whose defects a small network can learn from a few dozen
images. This module draws steel-like strips with four classes of defects whose look
and size differ by class, writes them in the competition's folder shape and CSV
formats, and keeps the test images' ground truth outside the competition folder so a
test can score a submission the way Kaggle would.

Everything is drawn from numpy generators seeded per image, and JPEGs are written with
fixed settings, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from stages.lib.rle import rle_encode
from stages.lib.severstal import CLASS_IDS, COMPETITION, IMAGE_HEIGHT, IMAGE_WIDTH

FORMATS = ("new", "old")
# "normal": every region well above stage 4's 3,500-pixel filter; "small": class 1 and 2
# defects of a few hundred to a few thousand pixels at 256x1600, as in the real data.
DEFECT_SIZES = ("normal", "small")

# Images per class in the real train set; the draw of defect classes follows these shares.
_REAL_CLASS_COUNTS = np.array([897.0, 247.0, 5150.0, 801.0])
_CLASS_SHARES = _REAL_CLASS_COUNTS / _REAL_CLASS_COUNTS.sum()
_DEFECT_SHARE = 0.5  # about half of the real images have no defect
_TWO_CLASS_SHARE = 0.12  # share of defective images that carry a second class
# Stage 4 drops components under 3,500 pixels at 256x1600; keep every region well above.
_MIN_REGION_PIXELS = 5000
_MIN_SMALL_REGION_PIXELS = 150  # classes 1 and 2 with defects="small"
_JPEG_QUALITY = 90
_ID_SALT = 0x5EE1  # separates the id stream from the per-image streams
_TRAIN_STREAM, _TEST_STREAM = 1, 2


@dataclass(frozen=True)
class SynthDataset:
    """Where a generated dataset lies.

    ``root`` has the shape of ``/kaggle`` (``input/<competition>/...``) so a local
    layout can point at it directly; ``test_truth`` is the hidden ground truth for the
    test images in the new train.csv format (defect rows only).
    """

    root: Path
    competition_dir: Path
    test_truth: Path


@dataclass(frozen=True)
class _Defect:
    class_id: int
    mask: np.ndarray  # bool, full image size


@dataclass(frozen=True)
class _Scale:
    """Sizes are designed at the competition's image size; others scale them per axis."""

    height: int
    width: int
    small: bool = False

    @property
    def sy(self) -> float:
        return self.height / IMAGE_HEIGHT

    @property
    def sx(self) -> float:
        return self.width / IMAGE_WIDTH

    @property
    def min_pixels(self) -> int:
        return max(16, round(_MIN_REGION_PIXELS * self.sy * self.sx))

    def min_pixels_of(self, class_id: int) -> int:
        """The smallest region a defect of this class may have."""
        if self.small and class_id in (1, 2):
            return max(8, round(_MIN_SMALL_REGION_PIXELS * self.sy * self.sx))
        return self.min_pixels


def generate(
    out: Path,
    *,
    n_train: int = 48,
    n_test: int = 16,
    seed: int = 0,
    fmt: str = "new",
    height: int = IMAGE_HEIGHT,
    width: int = IMAGE_WIDTH,
    progress: Callable[[int, int], None] | None = None,
    defects: str = "normal",
) -> SynthDataset:
    """Write a synthetic competition folder under ``out`` and return where things are.

    ``out`` must not exist or be empty. The data is built in a temporary sibling folder
    and renamed into place at the end, so a failure leaves nothing half-written.
    ``progress(done, total)`` is called after each image. ``defects="small"`` draws
    class 1 and 2 defects of a few hundred to a few thousand pixels (at 256x1600; other
    sizes scale them), as in the real data, so a fixed 3,500-pixel filter loses them.
    """
    _validate(n_train=n_train, n_test=n_test, seed=seed, fmt=fmt, height=height, width=width)
    if defects not in DEFECT_SIZES:
        raise ValueError(f"defects must be one of {', '.join(DEFECT_SIZES)}, got {defects!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder; refusing to write into it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.synth-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_dataset(tmp, n_train, n_test, seed, fmt, _Scale(height, width, defects == "small"), progress)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    comp = out / "input" / COMPETITION
    return SynthDataset(root=out, competition_dir=comp, test_truth=out / "truth" / "test_truth.csv")


def _validate(*, n_train: int, n_test: int, seed: int, fmt: str, height: int, width: int) -> None:
    for name, value, low in (
        ("n_train", n_train, 1),
        ("n_test", n_test, 1),
        ("height", height, 64),  # below these the defect shapes no longer fit
        ("width", width, 256),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _write_dataset(
    root: Path,
    n_train: int,
    n_test: int,
    seed: int,
    fmt: str,
    scale: _Scale,
    progress: Callable[[int, int], None] | None,
) -> None:
    comp = root / "input" / COMPETITION
    train_dir, test_dir = comp / "train_images", comp / "test_images"
    truth_dir = root / "truth"
    for folder in (train_dir, test_dir, truth_dir):
        folder.mkdir(parents=True)

    ids = _image_ids(seed, n_train + n_test)
    train_ids, test_ids = sorted(ids[:n_train]), sorted(ids[n_train:])
    total, done = n_train + n_test, 0
    labels: dict[str, list[tuple[str, int, str]]] = {"train": [], "test": []}
    for split, split_ids, folder, stream in (
        ("train", train_ids, train_dir, _TRAIN_STREAM),
        ("test", test_ids, test_dir, _TEST_STREAM),
    ):
        plans = _class_plans(np.random.default_rng([seed, stream, 0]), len(split_ids))
        for index, (image_id, plan) in enumerate(zip(split_ids, plans, strict=True)):
            rng = np.random.default_rng([seed, stream, index + 1])
            pixels, defects = _draw_image(rng, plan, scale)
            _save_jpeg(pixels, folder / image_id)
            for defect in sorted(defects, key=lambda d: d.class_id):
                labels[split].append((image_id, defect.class_id, rle_encode(defect.mask)))
            done += 1
            if progress is not None:
                progress(done, total)

    _write_labels(comp / "train.csv", train_ids, labels["train"], fmt)
    _write_labels(truth_dir / "test_truth.csv", test_ids, labels["test"], "new")
    _write_sample_submission(comp / "sample_submission.csv", test_ids, fmt)


def _image_ids(seed: int, count: int) -> list[str]:
    """Unique 9-hex-digit ids like the real ``0002cc93b``, fixed by the seed."""
    rng = np.random.default_rng([seed, _ID_SALT])
    seen: set[str] = set()
    ids: list[str] = []
    while len(ids) < count:
        image_id = f"{int(rng.integers(0, 16**9)):09x}.jpg"
        if image_id not in seen:
            seen.add(image_id)
            ids.append(image_id)
    return ids


def _class_plans(rng: np.random.Generator, n: int) -> list[tuple[int, ...]]:
    """Which classes each image carries: half defect-free, the rest by the real shares.

    The first four defective images get one class each, so any split with at least
    eight images (four defective) shows every class; the order is shuffled afterwards.
    """
    n_defective = max(1, round(n * _DEFECT_SHARE))
    plans: list[tuple[int, ...]] = []
    for k in range(n_defective):
        first = (
            CLASS_IDS[k] if k < len(CLASS_IDS) else int(rng.choice(CLASS_IDS, p=_CLASS_SHARES))
        )
        classes = [first]
        if rng.random() < _TWO_CLASS_SHARE:
            others = [c for c in CLASS_IDS if c != first]
            shares = _CLASS_SHARES[[c - 1 for c in others]]
            classes.append(int(rng.choice(others, p=shares / shares.sum())))
        plans.append(tuple(sorted(classes)))
    plans.extend(() for _ in range(n - n_defective))
    order = rng.permutation(n)
    return [plans[i] for i in order]


# ---------------------------------------------------------------------------------------
# Drawing


def _smooth_noise(
    rng: np.random.Generator,
    coarse: tuple[int, int],
    shape: tuple[int, int],
    *,
    smoothstep: bool = False,
) -> np.ndarray:
    """Gaussian noise on a coarse grid, stretched to ``shape``: smooth blotches or streaks.

    Plain linear interpolation keeps slow brightness changes gradual; ``smoothstep`` gives
    level sets without polygon corners, for defect outlines.
    """
    grid = rng.standard_normal((max(2, coarse[0]), max(2, coarse[1])), dtype=np.float32)
    wide = _lerp_axis(grid, shape[1], axis=1, smoothstep=smoothstep)
    return _lerp_axis(wide, shape[0], axis=0, smoothstep=smoothstep)


def _lerp_axis(values: np.ndarray, size: int, axis: int, *, smoothstep: bool = False) -> np.ndarray:
    """Resize one axis by interpolation; one axis at a time keeps full-size work small."""
    n = values.shape[axis]
    pos = np.linspace(0.0, n - 1.0, size, dtype=np.float32)
    lo = np.minimum(pos.astype(np.int64), n - 2)
    frac = pos - lo
    if smoothstep:
        frac = frac * frac * (3 - 2 * frac)
    if axis == 0:
        return values[lo] * (1 - frac)[:, None] + values[lo + 1] * frac[:, None]
    return values[:, lo] * (1 - frac) + values[:, lo + 1] * frac


def _background(rng: np.random.Generator, scale: _Scale) -> tuple[np.ndarray, tuple[int, int]]:
    """A steel strip: rolled-in horizontal streaks, slow brightness drift, grain.

    Returns the image (float, 0..255 range) and the column range covered by steel; some
    images show the dark edge beyond the strip, as real ones do, and defects stay on steel.
    """
    h, w = scale.height, scale.width
    base = rng.uniform(70.0, 130.0)
    drift = 14.0 * _smooth_noise(rng, (2, int(rng.integers(3, 8))), (1, w))
    # Both streak layers are built at the width of the finer one and stretched once.
    coarse_w = 1 + w // 25
    rows = 6.0 * _smooth_noise(rng, (h // 2, 1 + w // 200), (h, coarse_w))
    streaks = 4.0 * rng.standard_normal((h, coarse_w), dtype=np.float32)
    texture = _lerp_axis(rows + streaks, w, axis=1)
    grain = rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(3.0, 6.0))
    img = np.float32(base) + drift + texture + grain

    lo, hi = 0, w
    if rng.random() < 0.15:
        edge = int(rng.uniform(0.04, 0.18) * w)
        dark = rng.uniform(4.0, 20.0) + rng.normal(0.0, 2.0, (h, edge))
        if rng.random() < 0.5:
            img[:, :edge] = dark
            lo = edge
        else:
            img[:, w - edge :] = dark
            hi = w - edge
    return img, (lo, hi)


def _blob(
    rng: np.random.Generator,
    h: int,
    w: int,
    roughness: float,
    coarse: tuple[int, int],
    y_power: int = 2,
) -> np.ndarray:
    """An irregular filled ellipse in an h x w box (bool); a higher ``y_power`` squares its ends.

    The rough outline stays inside the box's inscribed ellipse, so no defect shows the
    straight edge of the box it was drawn in.
    """
    yy = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    radius = np.abs(yy) ** y_power + xx**2
    wobble = roughness * _smooth_noise(rng, coarse, (h, w), smoothstep=True)
    return (radius + wobble < 0.7) & (radius < 1.0)


def _solid_parts(box: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop the specks a rough outline leaves: every remaining component is a real defect."""
    labels, count = ndimage.label(box)
    if count == 0:
        return box
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _shape(rng: np.random.Generator, class_id: int, scale: _Scale) -> np.ndarray:
    """The region a defect of this class covers, in its own bounding box."""
    sy, sx = scale.sy, scale.sx
    if scale.small and class_id in (1, 2):
        return _small_shape(rng, class_id, sy, sx)
    if class_id == 1:  # a cluster of pits: a few overlapping small patches
        h = int(rng.uniform(70, 140) * sy)
        w = int(rng.uniform(100, 240) * sx)
        box = np.zeros((h, w), dtype=bool)
        for _ in range(int(rng.integers(2, 5))):
            bh, bw = int(h * rng.uniform(0.45, 0.8)), int(w * rng.uniform(0.35, 0.7))
            y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            box[y : y + bh, x : x + bw] |= _blob(rng, bh, bw, 0.35, (4, 4))
        return box
    if class_id == 2:  # a thin vertical scratch band, often the full strip height
        h = int(rng.uniform(170, 256) * sy)
        w = int(rng.uniform(34, 60) * sx)
        return _blob(rng, h, w, 0.15, (5, 2), y_power=8)
    if class_id == 3:  # a long horizontal scuff
        h = int(rng.uniform(36, 100) * sy)
        w = int(rng.uniform(250, 800) * sx)
        return _blob(rng, h, w, 0.45, (3, 8))
    h = int(rng.uniform(120, 250) * sy)  # class 4: a large dark blotch
    w = int(rng.uniform(150, 400) * sx)
    return _blob(rng, h, w, 0.4, (4, 5))


def _small_shape(rng: np.random.Generator, class_id: int, sy: float, sx: float) -> np.ndarray:
    """A class 1 pit cluster or class 2 scratch of about 300-3,000 pixels at 256x1600."""
    if class_id == 1:
        h = max(6, int(rng.uniform(22, 50) * sy))
        w = max(6, int(rng.uniform(30, 80) * sx))
        box = np.zeros((h, w), dtype=bool)
        for _ in range(int(rng.integers(2, 4))):
            bh, bw = max(3, int(h * rng.uniform(0.5, 0.85))), max(3, int(w * rng.uniform(0.4, 0.75)))
            y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            box[y : y + bh, x : x + bw] |= _blob(rng, bh, bw, 0.25, (3, 3))
        return box
    h = max(8, int(rng.uniform(40, 120) * sy))
    w = max(4, int(rng.uniform(12, 24) * sx))
    return _blob(rng, h, w, 0.1, (4, 2), y_power=8)


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, class_id: int) -> None:
    """Change the pixels under ``mask`` (and only those) the way this class looks."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = mask[y0:y1, x0:x1]
    h, w = box.shape
    patch = img[y0:y1, x0:x1]
    if class_id == 1:
        pits = np.zeros((h, w))
        count = max(4, (h * w) // 90)
        py, px = rng.integers(0, h, count), rng.integers(0, w, count)
        pits[py, px] = rng.uniform(50.0, 90.0, count)
        grown = pits.copy()
        for dy, dx in ((0, 1), (1, 0), (1, 1), (0, -1), (-1, 0)):
            grown = np.maximum(grown, np.roll(np.roll(pits, dy, axis=0), dx, axis=1))
        change = -18.0 - grown
    elif class_id == 2:
        change = np.full((h, w), -22.0)
        for _ in range(int(rng.integers(2, 5))):
            slope = rng.uniform(-0.08, 0.08)
            cols = rng.uniform(0.15, 0.85) * w + slope * np.arange(h)
            width = rng.uniform(1.0, 2.5)
            depth = rng.choice([-70.0, 55.0]) * (0.7 + 0.3 * _smooth_noise(rng, (6, 1), (h, 1)))
            dist = np.abs(np.arange(w)[None, :] - cols[:, None])
            change += depth * (dist < width)
    elif class_id == 3:
        streaks = _smooth_noise(rng, (max(2, h // 3), 1 + w // 60), (h, w))
        shift = 22.0 if rng.random() < 0.75 else -22.0  # mostly bright scuffs, some dark
        change = shift + 40.0 * np.sign(streaks) * np.minimum(np.abs(streaks) * 1.5, 1.0)
    else:
        texture = _smooth_noise(rng, (6, 10), (h, w))
        change = -(patch * rng.uniform(0.5, 0.65)) + 8.0 * texture
    patch[box] += change[box]


def _draw_image(
    rng: np.random.Generator, plan: Sequence[int], scale: _Scale
) -> tuple[np.ndarray, list[_Defect]]:
    img, (lo, hi) = _background(rng, scale)
    taken = np.zeros((scale.height, scale.width), dtype=bool)
    defects: list[_Defect] = []
    for class_id in plan:
        mask = _place(rng, class_id, scale, lo, hi, taken)
        if mask is None:
            continue
        taken |= mask
        _paint(rng, img, mask, class_id)
        defects.append(_Defect(class_id, mask))
    if plan and not defects:
        raise RuntimeError("could not place any defect")  # pragma: no cover - sizes always fit
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), defects


def _place(
    rng: np.random.Generator, class_id: int, scale: _Scale, lo: int, hi: int, taken: np.ndarray
) -> np.ndarray | None:
    """A full-size mask for one defect on steel, clear of earlier defects, or None."""
    margin = max(2, int(8 * scale.sx))
    for _ in range(40):
        least = scale.min_pixels_of(class_id)
        box = _solid_parts(_shape(rng, class_id, scale), least)
        h, w = box.shape
        if w > hi - lo or h > scale.height or box.sum() < least:
            continue
        y = int(rng.integers(0, scale.height - h + 1))
        x = int(rng.integers(lo, hi - w + 1))
        near = taken[max(0, y - margin) : y + h + margin, max(0, x - margin) : x + w + margin]
        if near.any():
            continue
        mask = np.zeros_like(taken)
        mask[y : y + h, x : x + w] = box
        return mask
    return None


def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    rgb = np.repeat(pixels[:, :, None], 3, axis=2)  # uint8 (H, W, 3): PIL makes it RGB
    # No `mode=`: Pillow 11.3 (Kaggle's image) deprecates passing it to fromarray.
    Image.fromarray(rgb).save(path, format="JPEG", quality=_JPEG_QUALITY)


# ---------------------------------------------------------------------------------------
# CSV files


def _write_labels(
    path: Path, image_ids: Sequence[str], rows: Sequence[tuple[str, int, str]], fmt: str
) -> None:
    """train.csv (or the truth file) in the competition's new or old layout."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if fmt == "new":
            writer.writerow(["ImageId", "ClassId", "EncodedPixels"])
            writer.writerows(sorted(rows))
        else:
            encoded = {(image_id, class_id): rle for image_id, class_id, rle in rows}
            writer.writerow(["ImageId_ClassId", "EncodedPixels"])
            for image_id in image_ids:
                for class_id in CLASS_IDS:
                    writer.writerow(
                        [f"{image_id}_{class_id}", encoded.get((image_id, class_id), "")]
                    )


def _write_sample_submission(path: Path, image_ids: Sequence[str], fmt: str) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if fmt == "new":
            writer.writerow(["ImageId", "EncodedPixels", "ClassId"])
            writer.writerows(
                [image_id, "1 1", class_id] for image_id in image_ids for class_id in CLASS_IDS
            )
        else:
            writer.writerow(["ImageId_ClassId", "EncodedPixels"])
            writer.writerows(
                [f"{image_id}_{class_id}", "1 1"] for image_id in image_ids for class_id in CLASS_IDS
            )
