"""Stage 1's input pipeline against the original notebook's PNG conversion pass.

Run from the repository root: `python benchmarks/bench_stage1_input.py [--images N]`.

The original stage 1 first converted every train JPEG, one after another, to a
256x256 PNG on disk, and only then let Keras load those PNGs for training. Stage 1
now decodes, resizes and scales inside a `tf.data` pipeline, in parallel. Both are
timed here on the same synthetic 256x1600 JPEGs (made with `kernelgen.synth`), each
to the point where every image has been delivered once as a float batch in [0, 1]:
images per second, best of a few repeats in this one run, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _timing import best_of  # noqa: E402

from stages.lib.classifier import classifier_image_dataset  # noqa: E402
from stages.synth import generate  # noqa: E402

IMAGE_SIZE = 256
BATCH_SIZE = 32
TARGET_RATIO = 2.0


def pipeline_pass(paths: list[Path]) -> int:
    """Iterate stage 1's dataset to the end; returns the number of images seen."""
    seen = 0
    for batch in classifier_image_dataset(paths, IMAGE_SIZE, BATCH_SIZE):
        seen += int(batch.shape[0])
    return seen


def baseline_pass(paths: list[Path], png_dir: Path) -> int:
    """Convert each JPEG to a resized PNG serially, then load the PNGs in batches."""
    if png_dir.exists():
        shutil.rmtree(png_dir)
    png_dir.mkdir(parents=True)
    pngs = []
    for path in paths:
        with Image.open(path) as image:
            small = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE))
        target = png_dir / (path.stem + ".png")
        small.save(target)
        pngs.append(target)
    seen = 0
    for start in range(0, len(pngs), BATCH_SIZE):
        chunk = pngs[start : start + BATCH_SIZE]
        batch = np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255.0 for p in chunk])
        seen += batch.shape[0]
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="synthetic images to time on")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs each")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-stage1-") as tmp:
        data = generate(Path(tmp) / "data", n_train=args.images, n_test=1, seed=0)
        paths = sorted((data.competition_dir / "train_images").glob("*.jpg"))
        png_dir = Path(tmp) / "png"
        if pipeline_pass(paths) != len(paths) or baseline_pass(paths, png_dir) != len(paths):
            raise RuntimeError("a pass did not deliver every image")

        pipeline_s = best_of(lambda: pipeline_pass(paths), args.repeat)
        baseline_s = best_of(lambda: baseline_pass(paths, png_dir), args.repeat)

    pipeline_rate = len(paths) / pipeline_s
    baseline_rate = len(paths) / baseline_s
    ratio = pipeline_rate / baseline_rate
    print(f"{len(paths)} images of 256x1600 -> {IMAGE_SIZE}x{IMAGE_SIZE}, batch {BATCH_SIZE}")
    print(f"tf.data pipeline (decode+resize+scale): {pipeline_rate:8.1f} images/s")
    print(f"baseline (serial PNG pass, then load):  {baseline_rate:8.1f} images/s")
    print(f"ratio: {ratio:.2f}x (target >= {TARGET_RATIO:.1f}x)")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
