"""RLE decode and encode against baselines written the way the original notebooks worked.

Run from the repository root: `python benchmarks/bench_rle.py [--quick]`.

Data are synthetic at the competition's sizes: 12,568 train images, of which
6,666 carry 7,095 defect rows (6,239 images with one class, 425 with two, 2
with three; 897 / 247 / 5,150 / 801 rows of classes 1..4). Each defect mask
is drawn from class-specific shapes (small spots for class 1, narrow
vertical marks for class 2, long streaks and large patches for class 3,
large blobs for class 4) with ragged edges, classes of one image never
overlapping, and encoded with `rle_encode`. Outputs are compared for
equality before anything is timed; times are the best of a few repeats in
this one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _timing import best_of  # noqa: E402

from stages.lib.rle import rle_decode, rle_encode  # noqa: E402
from stages.lib.severstal import IMAGE_SHAPE  # noqa: E402

TRAIN_IMAGES = 12_568
CLASSES_PER_DEFECT_IMAGE = {1: 6_239, 2: 425, 3: 2}
ROWS_PER_CLASS = {1: 897, 2: 247, 3: 5_150, 4: 801}
HEIGHT, WIDTH = IMAGE_SHAPE
DECODE_TARGET = 5.0
ENCODE_TARGET = 1.0


# Baselines -----------------------------------------------------------------


def baseline_decode(rle: str) -> np.ndarray:
    """The notebooks' decoder: parse with int(), then assign one slice per run."""
    tokens = rle.split(" ")
    flat = np.zeros(HEIGHT * WIDTH, dtype=np.uint8)
    for start, length in zip(map(int, tokens[0::2]), map(int, tokens[1::2]), strict=True):
        flat[start - 1 : start - 1 + length] = 1
    return flat.reshape((HEIGHT, WIDTH), order="F")


def baseline_encode(mask: np.ndarray) -> str:
    """The notebooks' encoder: flatten column-major, pad, diff, join the numbers."""
    flat = np.concatenate([[0], mask.T.flatten(), [0]])
    edges = np.where(flat[1:] != flat[:-1])[0] + 1
    edges[1::2] -= edges[0::2]
    return " ".join(str(value) for value in edges)


# Synthetic masks -------------------------------------------------------------


def ragged_blob(
    rng: np.random.Generator, mask: np.ndarray, height: int, width: int, wobble: float
) -> None:
    """Set an ellipse-like patch whose top and bottom edges wander column by column."""
    h = min(height, HEIGHT)
    w = min(width, WIDTH)
    top = int(rng.integers(0, HEIGHT - h + 1))
    left = int(rng.integers(0, WIDTH - w + 1))
    x = np.linspace(-1.0, 1.0, w)
    half = np.sqrt(np.clip(1.0 - x**2, 0.0, 1.0)) * h / 2
    noise = np.cumsum(rng.normal(0.0, wobble, w))
    noise -= noise.mean()
    centre = top + h / 2 + np.clip(noise, -h / 3, h / 3)
    upper = np.clip(np.round(centre - half), 0, HEIGHT).astype(np.int64)
    lower = np.clip(np.round(centre + half), 0, HEIGHT).astype(np.int64)
    first, last = int(upper.min()), int(lower.max())
    rows = np.arange(first, last)[:, None]
    mask[first:last, left : left + w] |= (rows >= upper) & (rows < lower)


def draw_defect(rng: np.random.Generator, class_id: int) -> np.ndarray:
    """One class's mask on one image, with sizes typical of that class."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    if class_id == 1:
        for _ in range(int(rng.integers(1, 7))):
            ragged_blob(rng, mask, int(rng.integers(8, 50)), int(rng.integers(8, 70)), 0.8)
    elif class_id == 2:
        for _ in range(int(rng.integers(1, 3))):
            ragged_blob(rng, mask, int(rng.integers(30, 140)), int(rng.integers(6, 40)), 0.5)
    elif class_id == 3:
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.5:
                ragged_blob(rng, mask, int(rng.integers(5, 30)), int(rng.integers(80, 500)), 0.6)
            else:
                ragged_blob(rng, mask, int(rng.integers(30, 160)), int(rng.integers(50, 300)), 1.5)
    else:
        for _ in range(int(rng.integers(1, 3))):
            ragged_blob(rng, mask, int(rng.integers(60, 220)), int(rng.integers(80, 360)), 2.0)
    return mask


def image_classes(rng: np.random.Generator) -> list[list[int]]:
    """The distinct classes of each defective image, matching the per-class row counts."""
    left = dict(ROWS_PER_CLASS)
    images: list[list[int]] = []
    for size in sorted(CLASSES_PER_DEFECT_IMAGE, reverse=True):
        for _ in range(CLASSES_PER_DEFECT_IMAGE[size]):
            if size == 1:
                break
            ids = np.array(sorted(left))
            weights = np.array([left[c] for c in ids], dtype=float)
            chosen = rng.choice(ids, size=size, replace=False, p=weights / weights.sum())
            for class_id in chosen.tolist():
                left[class_id] -= 1
            images.append(sorted(chosen.tolist()))
    singles = [c for c, n in left.items() for _ in range(n)]
    if len(singles) != CLASSES_PER_DEFECT_IMAGE[1]:
        raise AssertionError("class counts do not add up")
    images.extend([c] for c in singles)
    order = rng.permutation(len(images))
    return [images[i] for i in order.tolist()]


def synth_defect_rows(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """RLE strings of every defect row and the class of each."""
    rles: list[str] = []
    classes: list[int] = []
    for image in image_classes(rng):
        taken = np.zeros((HEIGHT, WIDTH), dtype=bool)
        for class_id in image:
            mask = draw_defect(rng, class_id) & ~taken
            if not mask.any():
                mask[-1, -1] = True
            taken |= mask
            rles.append(rle_encode(mask))
            classes.append(class_id)
    return rles, np.array(classes)


# Benchmark -------------------------------------------------------------------


def decode_benchmark(rles: list[str], classes: np.ndarray, repeat: int) -> float:
    """Time both decoders class by class; print each and return the overall ratio."""
    for rle in rles:
        if not np.array_equal(rle_decode(rle), baseline_decode(rle)):
            raise AssertionError(f"decoders disagree on {rle[:60]!r}")

    def loop(decode: Callable[[str], np.ndarray], subset: list[str]) -> Callable[[], None]:
        def run() -> None:
            for rle in subset:
                decode(rle)

        return run

    print(f"decode every defect row, outputs identical (best of {repeat} per class):")
    print("                     rows  runs/row  baseline s  rle_decode s   ratio")
    totals = np.zeros(2)
    for class_id in sorted(ROWS_PER_CLASS):
        subset = [rle for rle, c in zip(rles, classes.tolist(), strict=True) if c == class_id]
        runs = np.mean([len(rle.split()) // 2 for rle in subset])
        times = np.array(
            [
                best_of(loop(baseline_decode, subset), repeat),
                best_of(loop(rle_decode, subset), repeat),
            ]
        )
        totals += times
        print(
            f"  class {class_id}:        {len(subset):6,} {runs:9.0f} {times[0]:11.3f} "
            f"{times[1]:13.3f} {times[0] / times[1]:6.1f}x"
        )
    ratio = float(totals[0] / totals[1])
    print(
        f"  all defect rows: {len(rles):6,} {'':9} {totals[0]:11.3f} {totals[1]:13.3f} "
        f"{ratio:6.1f}x"
    )
    return ratio


def encode_benchmark(rles: list[str], repeat: int) -> float:
    """Time both encoders on a slice of the masks; print and return the ratio."""
    # All 7,095 masks would take 2.9 GB, so encoding is timed on every 14th
    # row: 507 masks, about 210 MB as uint8.
    step = 14
    masks = [np.ascontiguousarray(rle_decode(rle)) for rle in rles[::step]]
    for mask, rle in zip(masks, rles[::step], strict=True):
        if baseline_encode(mask) != rle or rle_encode(mask) != rle:
            raise AssertionError("encoders disagree")

    def baseline() -> None:
        for mask in masks:
            baseline_encode(mask)

    def ours() -> None:
        for mask in masks:
            rle_encode(mask)

    base_time = best_of(baseline, repeat)
    our_time = best_of(ours, repeat)
    ratio = base_time / our_time
    print(
        f"encode {len(masks):,} uint8 256x1600 masks (every {step}th defect row), outputs "
        f"identical (best of {repeat}):"
    )
    print(f"  baseline (transpose, pad, diff, str each): {base_time:7.3f} s")
    print(f"  rle_encode (edges in place, one join):     {our_time:7.3f} s  {ratio:5.1f}x")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat (noisier numbers)")
    parser.add_argument("--seed", type=int, default=2019)
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    started = time.perf_counter()

    rles, classes = synth_defect_rows(np.random.default_rng(args.seed))
    runs = np.array([len(rle.split()) // 2 for rle in rles])
    print(
        f"data: {TRAIN_IMAGES:,} train images, {len(rles):,} defect rows; runs per row "
        f"mean {runs.mean():.0f}, median {np.median(runs):.0f}, max {runs.max()} "
        f"(made in {time.perf_counter() - started:.1f} s)"
    )
    decode_ratio = decode_benchmark(rles, classes, repeat)
    encode_ratio = encode_benchmark(rles, repeat)

    short = []
    if decode_ratio < DECODE_TARGET:
        short.append(f"decode {decode_ratio:.1f}x < {DECODE_TARGET:g}x")
    if encode_ratio < ENCODE_TARGET:
        short.append(f"encode {encode_ratio:.2f}x < {ENCODE_TARGET:g}x")
    print(f"total {time.perf_counter() - started:.0f} s; ", end="")
    print("all targets met" if not short else f"below target: {', '.join(short)}")
    return 1 if short else 0


if __name__ == "__main__":
    raise SystemExit(main())
