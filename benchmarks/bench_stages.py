"""Stages 3 and 5 against baselines written the way the original notebooks worked.

Run from the repository root: `python benchmarks/bench_stages.py [--quick]`.

Data are synthetic at the competition's sizes: 12,568 train images of which
6,666 have defects (7,095 defect rows: 6,239 images with one class, 425 with
two, 2 with three) and 5,506 test images x 4 classes with RLE strings shaped
like stage 4's output. Each comparison asserts identical results before
timing, and prints times and ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _timing import best_of  # noqa: E402

from kernelgen.runtime.layout import Layout  # noqa: E402
from stages.lib.gates import blank_confident_images  # noqa: E402
from stages.lib.severstal import COMPETITION, IMAGE_SHAPE  # noqa: E402
from stages.lib.submission import Submission, write_submission  # noqa: E402
from stages.stage3_threshold import Params as Stage3Params  # noqa: E402
from stages.stage3_threshold import choose_threshold, threshold_sweep  # noqa: E402
from stages.stage3_threshold import run as run_stage3  # noqa: E402
from stages.stage5_submission import Params as Stage5Params  # noqa: E402
from stages.stage5_submission import run as run_stage5  # noqa: E402

TRAIN_IMAGES = 12_568
CLASSES_PER_DEFECT_IMAGE = {1: 6_239, 2: 425, 3: 2}  # 7,095 defect rows on 6,666 images
TEST_IMAGES = 5_506
HEIGHT, WIDTH = IMAGE_SHAPE
THRESHOLD = 0.947


def image_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """Distinct Kaggle-like names: 9 hex digits + .jpg."""
    numbers = rng.choice(16**9, size=count, replace=False)
    return np.array([f"{n:09x}.jpg" for n in numbers.tolist()])


def synth_scores(rng: np.random.Generator, defective: np.ndarray) -> np.ndarray:
    """allMissing scores: low for defective images, high for clean ones, some noise.

    One in twenty is rounded to 3 decimals so that scores land exactly on
    thresholds and the strict comparison is exercised.
    """
    low = rng.beta(0.5, 4.0, defective.size)
    high = rng.beta(6.0, 0.4, defective.size)
    scores = np.where(defective, low, high)
    exact = rng.random(defective.size) < 0.05
    scores[exact] = np.round(scores[exact], 3)
    return scores


def synth_train(rng: np.random.Generator) -> tuple[pd.Series, pd.DataFrame]:
    """Train scores (Series by ImageId) and defect rows (ImageId, ClassId)."""
    ids = image_ids(rng, TRAIN_IMAGES)
    order = rng.permutation(TRAIN_IMAGES)
    rows: list[tuple[str, int]] = []
    cursor = 0
    for n_classes, n_images in CLASSES_PER_DEFECT_IMAGE.items():
        for index in order[cursor : cursor + n_images]:
            for cls in sorted(rng.choice(4, size=n_classes, replace=False).tolist()):
                rows.append((ids[index], cls + 1))
        cursor += n_images
    defective = np.zeros(TRAIN_IMAGES, dtype=bool)
    defective[order[:cursor]] = True
    scores = pd.Series(synth_scores(rng, defective), index=pd.Index(ids, name="ImageId"))
    defects = pd.DataFrame(rows, columns=["ImageId", "ClassId"]).sample(frac=1, random_state=1)
    return scores, defects.reset_index(drop=True)


def synth_rle(rng: np.random.Generator) -> str:
    """1-3 blobs, each 16-320 columns wide in its own third of the image, one
    vertical run of 20-119 pixels per column (masks of about 1,000-40,000 pixels)."""
    n_blobs = int(rng.integers(1, 4))
    segment = WIDTH // n_blobs
    parts = []
    for blob in range(n_blobs):
        width = int(rng.integers(16, min(320, segment) + 1))
        first = blob * segment + int(rng.integers(0, segment - width + 1))
        cols = np.arange(first, first + width)
        lengths = rng.integers(20, 120, size=cols.size)
        tops = rng.integers(0, HEIGHT - lengths + 1)
        parts.append(np.column_stack((cols * HEIGHT + tops + 1, lengths)).ravel())
    return " ".join(map(str, np.concatenate(parts).tolist()))


def synth_submission(rng: np.random.Generator) -> tuple[Submission, pd.Series]:
    """A stage-4-like submission (about a quarter of the pairs painted) and test scores."""
    ids = image_ids(rng, TEST_IMAGES)
    defective = rng.random(TEST_IMAGES) < 0.53
    rles = []
    for image in range(TEST_IMAGES):
        for _cls in range(4):
            painted = rng.random() < (0.35 if defective[image] else 0.12)
            rles.append(synth_rle(rng) if painted else "")
    frame = pd.DataFrame(
        {
            "ImageId": np.repeat(ids, 4),
            "ClassId": np.tile(np.arange(1, 5, dtype=np.int64), TEST_IMAGES),
            "EncodedPixels": rles,
        }
    )
    scores = pd.Series(synth_scores(rng, defective), index=pd.Index(ids, name="ImageId"))
    return Submission(frame=frame, fmt="new"), scores


# Baselines: the original notebooks' approach, with per-image counting and the
# right denominators so that the tables must agree.


def baseline_sweep(scores: pd.Series, defects: pd.DataFrame, ks: range) -> pd.DataFrame:
    """One filtered pass over the per-image table per threshold and per count."""
    table = scores.rename("allMissing").reset_index()
    flagged = defects[["ImageId"]].drop_duplicates().assign(defect=1)
    table = table.merge(flagged, on="ImageId", how="left")
    table["defect"] = table["defect"].fillna(0).astype(int)
    n = len(table)
    rows = []
    for k in ks:
        t = k / 1000
        tp = len(table[(table["allMissing"] < t) & (table["defect"] == 1)])
        fp = len(table[(table["allMissing"] < t) & (table["defect"] == 0)])
        tn = len(table[(table["allMissing"] >= t) & (table["defect"] == 0)])
        fn = len(table[(table["allMissing"] >= t) & (table["defect"] == 1)])
        rows.append(
            (
                t,
                tp,
                fp,
                tn,
                fn,
                (tp + tn) / n if n else 0.0,
                tp / (tp + fn) if tp + fn else 0.0,
                tp / (tp + fp) if tp + fp else 0.0,
                2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0,
            )
        )
    columns = ["threshold", "tp", "fp", "tn", "fn", "accuracy", "recall", "precision", "f1"]
    out = pd.DataFrame(rows, columns=columns)
    return out.astype({c: np.int64 for c in ("tp", "fp", "tn", "fn")})


def baseline_blank(sub: Submission, scores: pd.Series, images: list[str]) -> pd.DataFrame:
    """One filtered `.loc` assignment per image above the threshold and per class."""
    frame = sub.frame.copy()
    for image in images:
        if scores[image] > THRESHOLD:
            for cls in range(1, 5):
                mask = (frame["ImageId"] == image) & (frame["ClassId"] == cls)
                frame.loc[mask, "EncodedPixels"] = ""
    return frame


def ours_sweep(scores: pd.Series, defects: pd.DataFrame) -> pd.DataFrame:
    positive = scores.index.isin(pd.unique(defects["ImageId"]))
    return threshold_sweep(scores.to_numpy(), positive)


def write_scores(path: Path, scores: pd.Series, *, held_out: bool = False) -> None:
    """A score file; `held_out` marks every image as held out of stage 1's training
    (stage 3 sweeps only those), as stage 2 writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = scores.rename("allMissing").to_frame()
    if held_out:
        frame["validation"] = 1
    frame.to_csv(path, lineterminator="\n")


def end_to_end_stage3(rng: np.random.Generator, scores: pd.Series, defects: pd.DataFrame) -> float:
    """Seconds for the whole stage: read and check inputs, sweep, write table, JSON, plots."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_scores(root / "input/stage2/train_missing_count.csv", scores, held_out=True)
        train = defects.assign(EncodedPixels=[synth_rle(rng) for _ in range(len(defects))])
        train_path = root / "input" / COMPETITION / "train.csv"
        train_path.parent.mkdir(parents=True)
        train.to_csv(train_path, index=False, lineterminator="\n")
        return best_of(lambda: run_stage3(Stage3Params(), Layout(root)), 3)


def end_to_end_stage5(sub: Submission, scores: pd.Series) -> tuple[float, float]:
    """Seconds for the whole stage (read and check inputs, blank, write), and the CSV's MB."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_scores(root / "input/stage2/test_missing_count.csv", scores)
        (root / "input/stage4").mkdir(parents=True)
        write_submission(sub, root / "input/stage4/submission.csv")
        size = (root / "input/stage4/submission.csv").stat().st_size / 1e6
        return best_of(lambda: run_stage5(Stage5Params(), Layout(root)), 3), size


def bench_stage3(rng: np.random.Generator, quick: bool) -> float:
    scores, defects = synth_train(rng)
    assert defects["ImageId"].nunique() == 6_666 and len(defects) == 7_095
    ours = ours_sweep(scores, defects)
    ks = range(1, 1000, 10) if quick else range(1, 1000)
    start = time.perf_counter()
    base = baseline_sweep(scores, defects, ks)
    base_time = time.perf_counter() - start
    pd.testing.assert_frame_equal(
        ours.iloc[[k - 1 for k in ks]].reset_index(drop=True), base, check_exact=True
    )
    scale = 999 / len(ks)
    base_full = base_time * scale
    our_time = best_of(lambda: ours_sweep(scores, defects), 20)
    chosen = choose_threshold(ours, "consistency")
    print(f"stage 3 sweep: {TRAIN_IMAGES:,} images, {len(defects):,} defect rows, 999 thresholds")
    if scale == 1:
        print(f"  baseline (4 filtered passes per threshold): {base_full:8.3f} s, all thresholds")
    else:
        print(
            f"  baseline (4 filtered passes per threshold): {base_full:8.3f} s, timed on "
            f"{len(ks)} thresholds ({base_time:.3f} s) and scaled x{scale:.2f}"
        )
    print(f"  threshold_sweep (sort + searchsorted):      {our_time:8.5f} s (best of 20)")
    print(
        f"  tables identical on {len(ks)} thresholds; ratio {base_full / our_time:,.0f}x "
        f"(target >= 100x); consistency pick {chosen['threshold']:.3f}"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        whole = end_to_end_stage3(rng, scores, defects)
    print(
        f"  whole stage 3 run (read train.csv + scores, sweep, CSV, JSON, 2 plots): {whole:.3f} s"
    )
    return base_full / our_time


def bench_stage5(rng: np.random.Generator, quick: bool) -> float:
    sub, scores = synth_submission(rng)
    painted = int((sub.frame["EncodedPixels"] != "").sum())
    images = sub.frame["ImageId"].drop_duplicates().tolist()
    above = int((scores > THRESHOLD).sum())
    subset = images[: len(images) // 10] if quick else images
    start = time.perf_counter()
    base = baseline_blank(sub, scores, subset)
    base_time = time.perf_counter() - start
    subset_scores = scores.copy()
    subset_scores[~subset_scores.index.isin(subset)] = 0.0  # only the subset is eligible
    ours_subset, _ = blank_confident_images(sub, subset_scores, THRESHOLD)
    pd.testing.assert_frame_equal(ours_subset.frame, base, check_exact=True)
    with tempfile.TemporaryDirectory() as folder:
        write_submission(ours_subset, Path(folder) / "a.csv")
        write_submission(Submission(frame=base, fmt="new"), Path(folder) / "b.csv")
        same_bytes = (Path(folder) / "a.csv").read_bytes() == (Path(folder) / "b.csv").read_bytes()
    assert same_bytes
    scale = len(images) / len(subset)
    base_full = base_time * scale
    our_time = best_of(lambda: blank_confident_images(sub, scores, THRESHOLD), 20)
    print(
        f"stage 5 blanking: {TEST_IMAGES:,} images x 4 classes ({painted:,} painted), "
        f"{above:,} images above {THRESHOLD}"
    )
    if scale == 1:
        print(f"  baseline (one .loc per image and class):    {base_full:8.3f} s, all images")
    else:
        print(
            f"  baseline (one .loc per image and class):    {base_full:8.3f} s, timed on "
            f"{len(subset)} images ({base_time:.3f} s) and scaled x{scale:.2f}"
        )
    print(f"  blank_confident_images (map + one mask):    {our_time:8.5f} s (best of 20)")
    print(
        f"  outputs identical (frame and CSV bytes); ratio {base_full / our_time:,.0f}x "
        f"(target >= 100x)"
    )
    with contextlib.redirect_stdout(io.StringIO()):
        whole, size = end_to_end_stage5(sub, scores)
    print(
        f"  whole stage 5 run (read + check {size:.1f} MB submission, blank, write): {whole:.3f} s"
    )
    return base_full / our_time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="time the baselines on a tenth of the thresholds/images and scale",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(2019)
    ratios = {"stage 3": bench_stage3(rng, args.quick), "stage 5": bench_stage5(rng, args.quick)}
    short = [name for name, ratio in ratios.items() if ratio < 100]
    print("all targets met" if not short else f"below target: {', '.join(short)}")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
