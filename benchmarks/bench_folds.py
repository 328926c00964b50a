"""One stage 4 model against the ensemble of k fold models, on the competition metric.

Run from the repository root:

    python benchmarks/bench_folds.py                     # 3 folds of the `best` profile, on cpu
    python benchmarks/bench_folds.py --folds 5 --profile full --seed 4

Synthetic competition data (`synth.generate`, full 256x1600 images, defect sizes and
class mix as in the real train set) is written once to a temporary folder. Stage 4 is
run once per fold (`fold = k`, `n_folds = --folds`), each run with the same budget: the
same training size, batch and epochs (`--height`, `--width`, `--epochs`; no pretrained
weights), the profile's levers (kernel-metadata/stage4.toml, as
`benchmarks/bench_profiles.py` reads them) and (k - 1)/k of the train images. Every
submission is scored with the competition metric (mean Dice over (image, class) pairs,
1 for empty-empty) against the hidden truth of the same unseen test images:

- single: fold 0's model, as stage 4 predicts alone (the first member of the ensemble);
- each fold's model alone, and their mean;
- ensemble: all k models as stage 6 predicts with them (the mean of their probabilities,
  post-processed as `stages/lib/seg/ensemble.py` chooses for the ensemble);
- vote: stage 5's majority vote of the k fold submissions.

The last line is the ensemble's score over the single model's. The ensemble costs k
times the single model's training; neither is gated by a classifier.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_profiles import add_budget_arguments, budget, profile  # noqa: E402

from kernelgen.runtime import Layout  # noqa: E402
from stages.lib.metrics import mean_dice_rle  # noqa: E402
from stages.lib.seg.ensemble import load_ensemble  # noqa: E402
from stages.lib.segdata import sample_test_names  # noqa: E402
from stages.lib.submission import fill_submission, read_submission  # noqa: E402
from stages.lib.traincsv import read_train_csv  # noqa: E402
from stages.lib.vote import majority_vote  # noqa: E402
from stages.stage4_segmentation import Params, run  # noqa: E402
from stages.synth import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--profile", default="best", help="stage 4 profile: full, best, kfold, ...")
    add_budget_arguments(parser, threads=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bench = {**budget(args), "n_folds": args.folds}
    levers = profile(args.profile)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = generate(base / "data", n_train=args.n_train, n_test=args.n_test, seed=args.seed)
        truth = read_train_csv(data.test_truth)
        test_dir = data.competition_dir / "test_images"
        sample, names = sample_test_names(test_dir, data.competition_dir / "sample_submission.csv")
        print(
            f"synthetic data: {args.n_train} train / {args.n_test} test images (seed {args.seed}); "
            f"profile {args.profile}, {args.folds} folds, each trained at {args.height}x{args.width} "
            f"for {args.epochs} epochs on cpu threads {args.threads}"
        )
        print(f"{'all-empty':>10}: {mean_dice_rle(sample.frame.assign(EncodedPixels=''), truth):.4f}")

        folders, scores = [], []
        for fold in range(args.folds):
            working = base / f"fold-{fold}"
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run(replace(Params(), **{**levers, **bench, "fold": fold}), Layout(data.root, working))
            seconds = time.perf_counter() - start
            scores.append(mean_dice_rle(read_submission(working / "submission.csv").frame, truth))
            folders.append(working)
            print(f"{f'fold {fold}':>10}: {scores[-1]:.4f}  ({seconds:.0f} s to train and predict)")
        print(f"{'fold mean':>10}: {sum(scores) / len(scores):.4f}")

        start = time.perf_counter()
        ensemble = load_ensemble([folder / "model.pth" for folder in folders], torch.device("cpu"))
        encoded = ensemble.segment(test_dir, names, 0, torch.device("cpu"))
        seconds = time.perf_counter() - start
        together = mean_dice_rle(fill_submission(sample, names, encoded).frame, truth)
        paths = [folder / "submission.csv" for folder in folders]
        voted = mean_dice_rle(majority_vote([read_submission(p) for p in paths], paths).frame, truth)
        print(f"{'single':>10}: {scores[0]:.4f}  (fold 0)")
        print(f"{'ensemble':>10}: {together:.4f}  ({seconds:.0f} s to predict; post-processing {ensemble.rule})")
        print(f"{'vote':>10}: {voted:.4f}  (stage 5's majority vote of the fold submissions)")
        print(f"ensemble / single: {together / scores[0]:.4f}")


if __name__ == "__main__":
    main()
