# %% [markdown]
# # Stage 6: the code-competition inference kernel
# In a code competition Kaggle reruns the submission kernel with the hidden test
# set swapped into the competition input, internet off. So this kernel predicts
# every image of `test_images/` itself: stage 4's segmenter (`model.pth`, the
# weights stage 4 predicted with) through the prediction stage 4 uses
# (`stages/lib/seg/`) and the post-processing the checkpoint records (tuned or
# fixed), then stage 5's gates (`stages/lib/gates.py`): the image gate with stage
# 1's classifier (`model.h5`) and stage 3's threshold, and with a per-class
# classifier the per-class gates. On the same models, thresholds and images its
# submission is stage 5's, row for row.
#
# When stage 4 ran once per fold, every fold's model is loaded and the masks come
# from the mean of their probabilities, with a post-processing chosen for the
# ensemble: searched again on all folds' out-of-fold validation predictions when
# each fold tuned its own, else per class the median of the folds' settings.

# %%
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import segmentation_models_pytorch  # noqa: F401  (torchvision must load before TensorFlow: the other order crashes)

from kernelgen.runtime import InputError, Layout
from stages.lib.classifier import (
    check_classifier_images,
    classifier_image_dataset,
    classifier_input_size,
    load_classifier,
    predict_scores,
)
from stages.lib.gates import blank_confident_classes, blank_confident_images
from stages.lib.metrics import write_metrics
from stages.lib.scores import CLASS_SCORE_COLUMNS, score_table
from stages.lib.seg.device import pick_device
from stages.lib.seg.ensemble import load_ensemble
from stages.lib.segdata import check_images, sample_test_names
from stages.lib.severstal import COMPETITION
from stages.lib.submission import fill_submission, write_submission

# Per-class gates: one threshold for each of the four defect classes.
CLASS_COUNT = 4
# Test-time flips averaged into each classifier score: none, left-right, both.
TTAS = ("none", "h", "hv")


@dataclass(frozen=True)
class Params:
    """`threshold`: blank an image when its allMissing score is strictly above it
    (stage 3 chooses it in a chain run); `class_thresholds`: empty, or four
    per-class gates as stage 5 takes them; `classifier_tta`: the
    flips averaged into each classifier score, as stage 1's `tta` (the thresholds
    were chosen on scores made that way); `classifier_batch_size`: images per
    classifier batch; `workers`: data-loader processes for the segmenter (0 loads
    in the main process). The segmenter's input size, pixel thresholds, minimum
    region sizes and total areas, flips and batch size are the ones stage 4 trained
    and predicted with, read from the checkpoint, so the post-processing is stage 4's
    (with one checkpoint per fold, the ensemble's, chosen as above)."""

    threshold: float = 0.947
    class_thresholds: tuple[float, ...] = ()
    classifier_tta: str = "none"
    classifier_batch_size: int = 32
    workers: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.classifier_tta not in TTAS:
            raise ValueError(f"classifier_tta must be one of {', '.join(TTAS)}, got {self.classifier_tta!r}")
        gates = self.class_thresholds
        numbers = isinstance(gates, (tuple, list)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in gates
        )
        if gates and not (numbers and len(gates) == CLASS_COUNT and all(0.0 <= v <= 1.0 for v in gates)):
            shown = list(gates) if isinstance(gates, (tuple, list)) else gates
            raise ValueError(
                f"class_thresholds must be empty or {CLASS_COUNT} values between 0 and 1, one per class, got {shown!r}"
            )
        if self.classifier_batch_size < 1:
            raise ValueError(f"classifier_batch_size must be at least 1, got {self.classifier_batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be at least 0, got {self.workers}")


# %% [markdown]
# ## Models
# Each stage 4 checkpoint carries stage 4's parameters beside the weights; they
# say at what size the network runs and how its output is post-processed
# (`stages/lib/seg/ensemble.py`). The classifier scores as stage 1 does.


# %%
def classify(model_path: Path, test_dir: Path, names: list[str], batch_size: int, tta: str) -> pd.DataFrame:
    """Stage 1's scores for each image (`allMissing`, and `missing1`..`missing4` from
    the per-class head), indexed by ImageId, as stage 1 scores its test images."""
    paths = [test_dir / name for name in names]
    check_classifier_images(paths)
    model = load_classifier(model_path)
    size = classifier_input_size(model, model_path)
    data = classifier_image_dataset(paths, size, batch_size)
    return score_table(names, predict_scores(model, data, tta)).set_index("ImageId")


# %% [markdown]
# ## Run
# The images are those the sample submission lists; each must be in
# `test_images/`, which at scoring time holds the hidden test set.


# %%
def run(params: Params, layout: Layout) -> None:
    comp = layout.input(COMPETITION)
    test_dir = comp / "test_images"
    sample_path = layout.input_file(COMPETITION, "sample_submission.csv")
    segmenter_paths = layout.cell_files("stage4", "model.pth")
    classifier_path = layout.input_file("stage1", "model.h5")
    sample, names = sample_test_names(test_dir, sample_path)
    check_images(test_dir, names)

    device = pick_device()
    start = time.perf_counter()
    ensemble = load_ensemble(segmenter_paths, device)
    if len(segmenter_paths) > 1:
        post = ensemble.post
        print(
            f"ensemble of {len(segmenter_paths)} stage 4 models; post-processing {ensemble.rule}: "
            f"pixel thresholds {list(post.pixel_thresholds)}, min sizes {list(post.min_sizes)}, "
            f"min areas {list(post.min_areas)}"
        )
    encoded = ensemble.segment(test_dir, names, params.workers, device)
    seg_seconds = time.perf_counter() - start
    scores = classify(classifier_path, test_dir, names, params.classifier_batch_size, params.classifier_tta)
    total = time.perf_counter() - start
    result, blanked = blank_confident_images(
        fill_submission(sample, names, encoded), scores["allMissing"], params.threshold
    )
    gates = tuple(params.class_thresholds)
    if gates:
        if CLASS_SCORE_COLUMNS[0] not in scores:
            raise InputError(
                f"{classifier_path}: class_thresholds is set but this classifier has one output; "
                'per-class scores come from stage 1 with head = "class"'
            )
        result, _ = blank_confident_classes(result, scores[list(CLASS_SCORE_COLUMNS)], gates)
    write_submission(result, layout.working / "submission.csv")
    write_metrics(layout.working, {"images_per_second": len(names) / total})
    filled = int((result.frame["EncodedPixels"] != "").sum())
    print(
        f"stage 6 on {device.type}: {len(names)} test images in {total:.1f} s "
        f"({len(names) / total:.2f} images/s; segmentation {seg_seconds:.1f} s); "
        f"blanked {blanked} (allMissing > {params.threshold}); "
        f"{filled} of {len(result.frame)} masks non-empty; {sample.fmt}-format submission.csv written"
    )
