"""Synthetic Severstal competition data, so every stage can run and be tested anywhere.

The real data cannot be downloaded in CI or on a laptop without an account, and the
learning tests need data whose defects a small network can learn from a few dozen
images. This module draws steel-like strips with four classes of defects whose look
differs by class, writes them in the competition's folder shape and CSV formats, and
keeps the test images' ground truth outside the competition folder so a test can score
a submission the way Kaggle would.

Sizes, class mix and defect counts follow the real train set (`_FIGURES`): every lever
the local runs and benchmarks judge (a fixed minimum region size, tuned minimum sizes,
total-area rules) is judged against defects of the sizes it meets on Kaggle: about half
of the class 1 and 2 masks under 3,500 pixels, and class 3 and 4 bands that reach a
quarter of the image at the 95th percentile.

Everything is drawn from numpy generators seeded per image, and JPEGs are written with
fixed settings, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image
from scipy import ndimage

from stages.lib.rle import rle_encode
from stages.lib.severstal import CLASS_IDS, COMPETITION, IMAGE_HEIGHT, IMAGE_WIDTH

FORMATS = ("new", "old")
# "real": every class's mask areas as in the real train set. "large": the same classes and
# looks, each drawn from the part of its real areas at or above _LARGE_FLOOR pixels, so
# a classifier that sees the image at 64x64 (the learning tests) still sees its defects.
DEFECT_SIZES = ("real", "large")
_LARGE_FLOOR = 5000.0  # pixels at 256x1600


@dataclass(frozen=True)
class _ClassFigures:
    """One class: its real mask figures, and the outline that draws masks of that size.

    A mask is one class on one image (the competition's unit), in pixels at 256x1600.
    """

    masks: int  # real masks of this class; the class mix follows these counts
    areas: tuple[float, ...]  # real mask area at each of _AREA_PROBS
    span: float  # real median column span (last column - first column + 1)
    span_power: float  # span grows as area**span_power: how much a larger mask widens
    roughness: float  # how far the outline strays from an ellipse
    coarse: tuple[int, int]  # outline noise grid (rows, columns): lobes per box
    y_power: int = 2  # above 2 squares the ends, for scratches running the full height


_AREA_PROBS = (0.05, 0.25, 0.50, 0.75, 0.95)
# Measured on 4,379 real masks of 7,179 train images; mask counts from the image-level
# labels of all 12,568 train images. Classes 1 and 2 are small spots, classes 3 and 4
# long horizontal bands; the outline settings keep each class's look.
_FIGURES: dict[int, _ClassFigures] = {
    1: _ClassFigures(  # a cluster of pits: a lobed outline
        masks=897, areas=(793, 1884, 3736, 6028, 12108), span=58,
        span_power=0.5, roughness=0.5, coarse=(5, 5),
    ),
    2: _ClassFigures(  # a thin vertical scratch: a larger one is mostly taller
        masks=247, areas=(921, 1950, 2874, 4140, 6988), span=24,
        span_power=0.3, roughness=0.15, coarse=(5, 2), y_power=8,
    ),
    3: _ClassFigures(  # a long horizontal scuff: a larger one is mostly longer
        masks=5150, areas=(1824, 5007, 11706, 28330, 93256), span=306,
        span_power=0.6, roughness=0.45, coarse=(3, 8),
    ),
    4: _ClassFigures(  # a large dark blotch
        masks=801, areas=(5084, 12192, 24320, 47289, 95931), span=346,
        span_power=0.55, roughness=0.4, coarse=(4, 5),
    ),
}
_MASK_COUNTS = np.array([_FIGURES[c].masks for c in CLASS_IDS], dtype=float)
_CLASS_SHARES = _MASK_COUNTS / _MASK_COUNTS.sum()
# Indices of the classes in the order a small split gets its first mask of each: commonest first.
_COVERAGE_ORDER = tuple(int(i) for i in np.argsort(-_MASK_COUNTS, kind="stable"))
_DEFECT_FREE_SHARE = 0.47  # real images without any defect
_TWO_CLASS_SHARE = 0.064  # real defective images with two classes; three (0.03%) are not drawn

# Areas are drawn in normal scores between the real quantiles (a log-normal piece per
# gap), and no further out than these probabilities: beyond them the real tails are unmeasured.
_Z_OF_PROBS = tuple(NormalDist().inv_cdf(p) for p in _AREA_PROBS)
_LOWEST_PROB, _HIGHEST_PROB = 0.003, 0.997
_SPAN_SPREAD = 0.25  # log-sd of a mask's column span around the class's span for its area
# The outline is the lowest `_FILL` share of a rough field over its box, so it covers
# about that share of the box and spans about `_SPAN_OF_BOX` of its columns.
_FILL = 0.6
_SPAN_OF_BOX = 0.9
_TALLEST = 0.95  # share of the image height a defect's box may take
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
class _Planned:
    """A defect an image is to carry: its class, and where its area falls among the class's."""

    class_id: int
    quantile: float


@dataclass(frozen=True)
class _Scale:
    """Sizes are designed at the competition's image size; others scale them per axis."""

    height: int
    width: int

    @property
    def sy(self) -> float:
        return self.height / IMAGE_HEIGHT

    @property
    def sx(self) -> float:
        return self.width / IMAGE_WIDTH


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
    defects: str = "real",
) -> SynthDataset:
    """Write a synthetic competition folder under ``out`` and return where things are.

    ``out`` must not exist or be empty. The data is built in a temporary sibling folder
    and renamed into place at the end, so a failure leaves nothing half-written.
    ``progress(done, total)`` is called after each image. Defect areas follow the real
    train set at 256x1600 (``defects="large"``: its masks of 5,000 pixels and more);
    other sizes scale them with the image.
    """
    _validate(n_train=n_train, n_test=n_test, seed=seed, fmt=fmt, height=height, width=width, defects=defects)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder; refusing to write into it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.synth-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_dataset(tmp, n_train, n_test, seed, fmt, _Scale(height, width), defects, progress)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    comp = out / "input" / COMPETITION
    return SynthDataset(root=out, competition_dir=comp, test_truth=out / "truth" / "test_truth.csv")


def train_defects(
    n_train: int,
    *,
    seed: int = 0,
    height: int = IMAGE_HEIGHT,
    width: int = IMAGE_WIDTH,
    defects: str = "real",
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """The train images' defects as ``generate`` draws them, without drawing the images.

    Yields, for each train image in the order of their ids, its ``(class_id, mask)``
    pairs (none for a defect-free image): the masks that ``generate(out,
    n_train=n_train, seed=seed, height=height, width=width, defects=defects)`` writes, whatever
    ``n_test``. Each image's stream draws its defects before its pixels, so the
    generator's figures can be measured on hundreds of images in a second.
    """
    _validate(n_train=n_train, n_test=1, seed=seed, fmt="new", height=height, width=width, defects=defects)
    scale = _Scale(height, width)
    plans = _class_plans(np.random.default_rng([seed, _TRAIN_STREAM, 0]), n_train, defects)
    for index, plan in enumerate(plans):
        rng = np.random.default_rng([seed, _TRAIN_STREAM, index + 1])
        drawn = _draw_defects(rng, plan, scale, _steel_columns(rng, scale))
        yield [(d.class_id, d.mask) for d in sorted(drawn, key=lambda d: d.class_id)]


def _validate(
    *, n_train: int, n_test: int, seed: int, fmt: str, height: int, width: int, defects: str
) -> None:
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
    if defects not in DEFECT_SIZES:
        raise ValueError(f"defects must be one of {', '.join(DEFECT_SIZES)}, got {defects!r}")


def _write_dataset(
    root: Path,
    n_train: int,
    n_test: int,
    seed: int,
    fmt: str,
    scale: _Scale,
    defects: str,
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
        plans = _class_plans(np.random.default_rng([seed, stream, 0]), len(split_ids), defects)
        for index, (image_id, plan) in enumerate(zip(split_ids, plans, strict=True)):
            rng = np.random.default_rng([seed, stream, index + 1])
            pixels, drawn = _draw_image(rng, plan, scale)
            _save_jpeg(pixels, folder / image_id)
            for defect in sorted(drawn, key=lambda d: d.class_id):
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


def _class_plans(rng: np.random.Generator, n: int, defects: str) -> list[tuple[_Planned, ...]]:
    """What each image carries: the real defect-free share, class mix and co-occurrence.

    Counts are set rather than drawn (the defect-free images, the two-class images, the
    masks of each class), so even a few dozen images show the real mix, and any split
    of at least eight images (four defective) shows every class. Two-class images pair
    classes in proportion to their counts. Each class's area quantiles are stratified:
    its k masks take one quantile from each k-th of (0, 1), so small splits still span
    the real range of sizes (with ``defects="large"``, the range from 5,000 pixels up).
    The order of the images is shuffled.
    """
    n_defective = max(1, round(n * (1 - _DEFECT_FREE_SHARE)))
    n_pairs = round(n_defective * _TWO_CLASS_SHARE)
    counts = _mask_counts(n_defective + n_pairs)
    left = counts.copy()
    sets: list[tuple[int, ...]] = []
    for _ in range(n_pairs):
        first = int(rng.choice(len(left), p=left / left.sum()))
        left[first] -= 1
        others = left.copy()
        others[first] = 0
        second = int(rng.choice(len(others), p=others / others.sum()))
        left[second] -= 1
        sets.append((CLASS_IDS[min(first, second)], CLASS_IDS[max(first, second)]))
    sets.extend((CLASS_IDS[i],) for i in range(len(left)) for _ in range(int(left[i])))
    sets.extend(() for _ in range(n - n_defective))
    sets = [sets[i] for i in rng.permutation(n)]
    quantiles = {}
    for class_id, k in zip(CLASS_IDS, counts, strict=True):
        floor = _floor_of(class_id, defects)
        strata = (rng.permutation(int(k)) + rng.random(int(k))) / max(k, 1)
        quantiles[class_id] = list(floor + (1 - floor) * strata)
    return [tuple(_Planned(c, quantiles[c].pop()) for c in classes) for classes in sets]


def _mask_counts(total: int) -> np.ndarray:
    """Masks per class among ``total``: the real shares, each class at least once if it fits.

    Largest remainders: beyond the one mask each class is given, the counts are the
    closest integers to the shares.
    """
    target = _CLASS_SHARES * total
    least = np.zeros(len(CLASS_IDS))
    least[list(_COVERAGE_ORDER[: min(total, len(CLASS_IDS))])] = 1
    counts = np.maximum(np.floor(target), least)
    while counts.sum() < total:
        counts[int(np.argmax(target - counts))] += 1
    while counts.sum() > total:
        over = np.where(counts > least, target - counts, np.inf)
        counts[int(np.argmin(over))] -= 1
    return counts


def _area_of(class_id: int, quantile: float) -> float:
    """The area (pixels at 256x1600) at ``quantile`` of the class's real areas.

    Log-area is linear in the normal score between the measured quantiles, and carries
    the nearest gap's slope beyond them: a log-normal piece per gap that meets all five.
    """
    z = NormalDist().inv_cdf(min(max(quantile, _LOWEST_PROB), _HIGHEST_PROB))
    logs = np.log(_FIGURES[class_id].areas)
    zs = _Z_OF_PROBS
    if z < zs[0]:
        return math.exp(logs[0] + (z - zs[0]) * (logs[1] - logs[0]) / (zs[1] - zs[0]))
    if z > zs[-1]:
        return math.exp(logs[-1] + (z - zs[-1]) * (logs[-1] - logs[-2]) / (zs[-1] - zs[-2]))
    return math.exp(float(np.interp(z, zs, logs)))


def _floor_of(class_id: int, defects: str) -> float:
    """The lowest quantile the preset draws of the class: 0, or where "large" begins."""
    if defects == "real":
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(40):  # _area_of rises with the quantile; halve until it meets the floor
        middle = (low + high) / 2
        low, high = (middle, high) if _area_of(class_id, middle) < _LARGE_FLOOR else (low, middle)
    return high


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


def _steel_columns(rng: np.random.Generator, scale: _Scale) -> tuple[int, int]:
    """The column range covered by steel: some images show the dark edge beyond the
    strip, as real ones do, and defects stay on steel."""
    if rng.random() >= 0.15:
        return 0, scale.width
    edge = int(rng.uniform(0.04, 0.18) * scale.width)
    return (edge, scale.width) if rng.random() < 0.5 else (0, scale.width - edge)


def _background(rng: np.random.Generator, scale: _Scale, steel: tuple[int, int]) -> np.ndarray:
    """A steel strip: rolled-in horizontal streaks, slow brightness drift, grain, and a
    dark edge outside the ``steel`` columns. Float, in the 0..255 range."""
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
    lo, hi = steel
    for start, stop in ((0, lo), (hi, w)):
        if stop > start:
            img[:, start:stop] = rng.uniform(4.0, 20.0) + rng.normal(0.0, 2.0, (h, stop - start))
    return img


def _rough_field(rng: np.random.Generator, h: int, w: int, figures: _ClassFigures) -> np.ndarray:
    """An ellipse's radius over an h x w box plus smooth noise; infinite outside the ellipse.

    Its lowest values make an irregular filled region (`_lowest`) whose outline the
    class's noise settings give; a ``y_power`` above 2 squares the ends. The region stays
    inside the box's inscribed ellipse, so no defect shows the straight edge of its box.
    """
    yy = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    radius = np.abs(yy) ** figures.y_power + xx**2
    field = radius + figures.roughness * _smooth_noise(rng, figures.coarse, (h, w), smoothstep=True)
    field[radius >= 1.0] = np.inf
    return field


def _lowest(field: np.ndarray, pixels: int) -> np.ndarray:
    """Where ``field`` takes its ``pixels`` lowest finite values (bool): the area is set exactly."""
    k = min(max(1, pixels), int(np.isfinite(field).sum()))
    return field <= np.partition(field.ravel(), k - 1)[k - 1]


def _solid_parts(box: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop the specks a rough outline leaves: every remaining component is a real defect."""
    labels, count = ndimage.label(box)
    if count == 0:
        return box
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _shape(
    rng: np.random.Generator, class_id: int, area: float, scale: _Scale, room: int
) -> np.ndarray:
    """The region of a defect of this class and of about ``area`` pixels at 256x1600, in
    its own bounding box, at the image's scale and at most ``room`` columns wide.

    Its column span follows the class's real median span for its area, spread
    log-normally; the box's height then holds the area. A box taller than `_TALLEST` of
    the image is widened instead, and one that is then wider than ``room`` holds what fits.
    """
    figures = _FIGURES[class_id]
    relative = area / figures.areas[2]
    span = figures.span * relative**figures.span_power * math.exp(_SPAN_SPREAD * rng.standard_normal())
    pixels = area * scale.sy * scale.sx
    w = span * scale.sx / _SPAN_OF_BOX
    h = pixels / (_FILL * w)
    tallest = _TALLEST * scale.height
    if h > tallest:
        h, w = tallest, pixels / (_FILL * tallest)
    h, w = max(4, math.ceil(h)), max(4, min(math.ceil(w), room))
    want = round(min(pixels, _FILL * h * w))
    least = max(4, round(0.05 * want))
    field = _rough_field(rng, h, w, figures)
    region = _solid_parts(_lowest(field, want), least)
    short = want - int(region.sum())  # the specks dropped; taking that many more keeps the area
    if short > 0:
        region = _solid_parts(_lowest(field, want + short), least)
    return region


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
    rng: np.random.Generator, plan: Sequence[_Planned], scale: _Scale
) -> tuple[np.ndarray, list[_Defect]]:
    """The image's pixels (uint8) and its defects; the defects are drawn first from
    ``rng``, so ``train_defects`` can draw them alone."""
    steel = _steel_columns(rng, scale)
    defects = _draw_defects(rng, plan, scale, steel)
    img = _background(rng, scale, steel)
    for defect in defects:
        _paint(rng, img, defect.mask, defect.class_id)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), defects


def _draw_defects(
    rng: np.random.Generator, plan: Sequence[_Planned], scale: _Scale, steel: tuple[int, int]
) -> list[_Defect]:
    """The planned defects' masks, on steel and apart from each other.

    The largest is placed first: a small defect finds room beside a large one more
    easily than the other way round. Each keeps a margin clear around its region.
    """
    margin = max(2, int(8 * scale.sx))
    kept_clear = np.zeros((scale.height, scale.width), dtype=bool)
    defects: list[_Defect] = []
    sized = [(_area_of(p.class_id, p.quantile), p.class_id) for p in plan]
    for area, class_id in sorted(sized, reverse=True):
        placed = _place(rng, class_id, area, scale, steel, kept_clear)
        if placed is None:
            continue
        y, x, region = placed
        h, w = region.shape
        mask = np.zeros_like(kept_clear)
        mask[y : y + h, x : x + w] = region
        around = (slice(max(0, y - margin), y + h + margin), slice(max(0, x - margin), x + w + margin))
        kept_clear[around] |= ndimage.maximum_filter(mask[around], size=2 * margin + 1, mode="constant")
        defects.append(_Defect(class_id, mask))
    if plan and not defects:
        raise RuntimeError("could not place any defect")  # pragma: no cover - sizes always fit
    return defects


def _place(
    rng: np.random.Generator,
    class_id: int,
    area: float,
    scale: _Scale,
    steel: tuple[int, int],
    kept_clear: np.ndarray,
) -> tuple[int, int, np.ndarray] | None:
    """Where one defect of about ``area`` pixels at 256x1600 lies on steel, outside
    ``kept_clear``: its box's top row, left column and region; None if it finds no room.

    A shape that finds no free place is drawn again smaller: an image's second defect
    may meet a first that covers most of the strip.
    """
    lo, hi = steel
    for _ in range(4):
        box = _shape(rng, class_id, area, scale, hi - lo)
        h, w = box.shape
        for _ in range(20):
            y = int(rng.integers(0, scale.height - h + 1))
            x = int(rng.integers(lo, hi - w + 1))
            if not (kept_clear[y : y + h, x : x + w] & box).any():
                return y, x, box
        area *= 0.6
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
