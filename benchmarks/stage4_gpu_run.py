"""Stage 4 end to end on synthetic data, timed and scored: the check to run on a GPU machine.

    python benchmarks/stage4_gpu_run.py --train 160 --test 40 --epochs 6

Generates synthetic competition data, runs the stage module exactly as the kernel
would (full 256x1600 training unless told otherwise, no pretrained weights), then
scores its submission on the hidden test truth with the competition metric next to
the all-empty submission.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernelgen.runtime import Layout
from stages.lib.metrics import mean_dice_rle
from stages.lib.submission import read_submission
from stages.stage4_segmentation import Params, run
from stages.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--test", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        data = generate(Path(tmp) / "data", n_train=args.train, n_test=args.test, seed=11)
        params = Params(
            train_height=args.height,
            train_width=args.width,
            batch_size=args.batch_size,
            accumulate_to=2 * args.batch_size,
            epochs=args.epochs,
            lr=args.lr,
            lr_patience=100,
            pretrained=False,
            workers=args.workers,
        )
        start = time.perf_counter()
        run(params, Layout(data.root, working_dir=Path(tmp) / "working"))
        seconds = time.perf_counter() - start
        sub = read_submission(Path(tmp) / "working" / "submission.csv").frame
        truth = pd.read_csv(data.test_truth, dtype={"EncodedPixels": str}, keep_default_na=False)
        empty = sub.assign(EncodedPixels="")
        history = pd.read_csv(Path(tmp) / "working" / "history.csv")
        print(f"device: {device}")
        print(f"data: {args.train} train / {args.test} test synthetic images, {args.height}x{args.width} training")
        print(f"stage 4 wall time: {seconds:.1f} s for {args.epochs} epochs ({seconds / args.epochs:.1f} s per epoch incl. prediction share)")
        print(history.to_string(index=False))
        print(f"competition metric on unseen test images: {mean_dice_rle(sub, truth):.4f}")
        print(f"all-empty submission:                     {mean_dice_rle(empty, truth):.4f}")


if __name__ == "__main__":
    main()
