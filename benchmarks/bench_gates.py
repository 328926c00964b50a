"""The classifier gate compared on the competition metric: where its threshold is chosen
(training-set scores, as in 2019, or held-out scores) and what it blanks (whole images,
or single classes with stage 1's per-class head).

Run from the repository root:

    python benchmarks/bench_gates.py                   # defaults below, on cpu
    python benchmarks/bench_gates.py --n-train 240 --classifier-epochs 16

One synthetic dataset (`synth.generate`, full 256x1600 images, defect sizes and class mix
as in the real train set) is written to a temporary folder. Stage 4 trains once (the `--seg-profile` of
kernel-metadata/stage4.toml at the bench's small size, no pretrained weights) and
predicts the unseen test images. Stage 1 then trains twice on the same images and split,
once per head (`image`, `class`); stage 2 scores the train images and marks the ones
stage 1 held out; stage 3 chooses the gates on those. Each gate is applied to stage 4's
masks with stage 5's own functions (stages/lib/gates.py) and scored with the competition metric (mean Dice
over (image, class) pairs, 1 for empty-empty) against the hidden truth:

- no gate: stage 4's masks as they are;
- image gate, threshold swept on every train image (the 2019 way: stage 1 trained on
  most of them);
- image gate, threshold swept on the held-out images (stage 3 as it is now);
- image gate by each of stage 3's rules on the held-out images;
- per-class head: its image gate, then per-class gates chosen on the held-out images by
  each class rule (stage 3's default first), and those gates alone.

The all-empty submission's score is printed for reference.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import segmentation_models_pytorch  # noqa: E402, F401  (torchvision before TensorFlow)
from bench_profiles import profile  # noqa: E402

from kernelgen.runtime import Layout  # noqa: E402
from stages.lib.gates import blank_confident_classes, blank_confident_images  # noqa: E402
from stages.lib.metrics import mean_dice_rle  # noqa: E402
from stages.lib.scores import (  # noqa: E402
    CLASS_SCORE_COLUMNS,
    read_class_scores,
    read_score_table,
    read_scores,
)
from stages.lib.severstal import COMPETITION  # noqa: E402
from stages.lib.submission import Submission, read_submission  # noqa: E402
from stages.lib.traincsv import read_train_csv  # noqa: E402
from stages.stage1_classifier import Params as ClassifierParams  # noqa: E402
from stages.stage1_classifier import run as run_stage1  # noqa: E402
from stages.stage2_scoring import Params as ScoringParams  # noqa: E402
from stages.stage2_scoring import run as run_stage2  # noqa: E402
from stages.stage3_threshold import Params as ThresholdParams  # noqa: E402
from stages.stage3_threshold import (  # noqa: E402
    choose_class_thresholds,
    choose_threshold,
    class_sweeps,
    threshold_sweep,
)
from stages.stage3_threshold import run as run_stage3  # noqa: E402
from stages.stage4_segmentation import Params as SegParams  # noqa: E402
from stages.stage4_segmentation import run as run_stage4  # noqa: E402
from stages.synth import generate  # noqa: E402

# Stage 3's rules tried, with the recall each `recall` rule keeps.
RULES = (("consistency", 0.95), ("accuracy", 0.95), ("f1", 0.95), ("recall", 0.9), ("recall", 0.95), ("recall", 0.99))


def quietly(fn, *args) -> float:
    """Run `fn(*args)` with its printing held back; seconds taken."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        fn(*args)
    return time.perf_counter() - start


def mount(root: Path, slug: str, folder: Path) -> None:
    """Make `folder` readable as input `slug` under `root`, as Kaggle mounts a dataset."""
    target = root / "input" / slug
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(folder, target_is_directory=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--seg-profile", default="best")
    parser.add_argument("--seg-epochs", type=int, default=10)
    parser.add_argument("--classifier-size", type=int, default=64)
    parser.add_argument("--classifier-epochs", type=int, default=12)
    parser.add_argument("--validation-split", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(args.threads))

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = generate(base / "data", n_train=args.n_train, n_test=args.n_test, seed=args.seed)
        truth = read_train_csv(data.test_truth)
        competition = data.competition_dir
        print(
            f"synthetic data: {args.n_train} train / {args.n_test} test images (seed {args.seed}); "
            f"segmenter profile {args.seg_profile} at 64x384 for {args.seg_epochs} epochs; "
            f"classifier at {args.classifier_size}px for {args.classifier_epochs} epochs, "
            f"{args.validation_split:.0%} held out"
        )

        seg = replace(
            SegParams(),
            **{
                **profile(args.seg_profile),
                "train_height": 64, "train_width": 384, "crop_width": 0, "batch_size": 4,
                "accumulate_to": 4, "epochs": args.seg_epochs, "lr": 1e-3, "lr_patience": 100,
                "pretrained": False, "workers": 0, "amp": False,
            },
        )
        seg_dir = base / "stage4"
        seconds = quietly(run_stage4, seg, Layout(data.root, seg_dir))
        masks = read_submission(seg_dir / "submission.csv")
        empty = mean_dice_rle(masks.frame.assign(EncodedPixels=""), truth)
        print(f"{'all-empty':>44}: {empty:.4f}")
        print(f"{'no gate (stage 4 masks)':>44}: {mean_dice_rle(masks.frame, truth):.4f}  (stage 4: {seconds:.0f} s)")

        def score(sub: Submission) -> float:
            return mean_dice_rle(sub.frame, truth)

        for head in ("image", "class"):
            root = base / head
            mount(root, COMPETITION, competition)
            classifier = ClassifierParams(
                image_size=args.classifier_size, batch_size=16, epochs=args.classifier_epochs,
                validation_split=args.validation_split, lr_patience=100, pretrained=False, seed=0, head=head,
            )
            seconds = quietly(run_stage1, classifier, Layout(root, root / "stage1"))
            mount(root, "stage1", root / "stage1")
            quietly(run_stage2, ScoringParams(image_size=args.classifier_size, batch_size=16), Layout(root, root / "stage2"))
            mount(root, "stage2", root / "stage2")
            quietly(run_stage3, ThresholdParams(), Layout(root, root / "stage3"))
            chosen = json.loads((root / "stage3" / "threshold.json").read_text())
            test_scores = root / "stage1" / "test_missing_count.csv"
            scores = read_scores(test_scores)
            columns = ["allMissing", "validation"] + (list(CLASS_SCORE_COLUMNS) if head == "class" else [])
            train = read_score_table(root / "stage2" / "train_missing_count.csv", columns)
            held = train[train["validation"] == 1]
            defects = read_train_csv(competition / "train.csv")
            gated, _ = blank_confident_images(masks, scores, float(chosen["threshold"]))
            if head == "image":
                naive = choose_threshold(
                    threshold_sweep(train["allMissing"].to_numpy(), train.index.isin(defects["ImageId"])),
                    "consistency",
                )
                naive_sub, _ = blank_confident_images(masks, scores, float(naive["threshold"]))
                print(
                    f"{'image gate, swept on every train image':>44}: {score(naive_sub):.4f}  "
                    f"(threshold {naive['threshold']:.3f}; stage 1: {seconds:.0f} s)"
                )
                sweep = threshold_sweep(held["allMissing"].to_numpy(), held.index.isin(defects["ImageId"]))
                for rule, recall in RULES:
                    pick = choose_threshold(sweep, rule, min_recall=recall)
                    sub, _ = blank_confident_images(masks, scores, float(pick["threshold"]))
                    name = f"image gate, held-out, {rule}" + (f" {recall}" if rule == "recall" else "")
                    print(f"{name:>44}: {score(sub):.4f}  (threshold {pick['threshold']:.3f}, {len(held)} images)")
                continue
            print(
                f"{'per-class head: image gate':>44}: {score(gated):.4f}  "
                f"(threshold {chosen['threshold']:.3f}; stage 1: {seconds:.0f} s)"
            )
            classes = read_class_scores(test_scores)
            sweeps = class_sweeps(held, defects)
            for rule, recall in RULES:
                picked = choose_class_thresholds(sweeps, rule, recall)
                gates = tuple(float(picked[str(c)]["threshold"]) for c in sorted(map(int, picked)))
                both, _ = blank_confident_classes(gated, classes, gates)
                alone, _ = blank_confident_classes(masks, classes, gates)
                name = f"per-class gates, {rule}" + (f" {recall}" if rule == "recall" else "")
                shown = [round(g, 3) for g in gates]
                print(f"{name:>44}: {score(alone):.4f} alone, {score(both):.4f} after the image gate  (gates {shown})")


if __name__ == "__main__":
    main()
