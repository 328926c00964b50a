# %% [markdown]
# # Stage 5: the submission
# The segmentation model (stage 4) paints a few pixels on many images that
# have no defect, and every stray pixel on an empty (image, class) pair scores
# 0. The classifier (stage 1) is better at saying "no defect at all", so every
# test image whose allMissing score is above the threshold gets all four
# classes blanked. With a per-class classifier, `class_thresholds` also blanks
# single classes: class c of an image whose `missing<c>` score is above the c-th
# threshold. Everything else in the submission stays as it was.

# %%
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kernelgen.runtime import Layout
from stages.lib.scores import CLASS_SCORE_COLUMNS, CLASS_SCORES_HINT, read_score_table
from stages.lib.severstal import CLASS_IDS
from stages.lib.submission import Submission, read_submission, write_submission

# Per-class gates: one threshold for each of the four defect classes.
CLASS_COUNT = 4


@dataclass(frozen=True)
class Params:
    """`threshold`: blank an image when its allMissing score is strictly above it
    (stage 3 chooses it in a chain run). It must lie in [0, 1], as the scores do;
    1 blanks no image. `class_thresholds`: empty (no per-class gate), or four
    values in [0, 1], one per class: blank class c of an image
    when its `missing<c>` score is strictly above the c-th (stage 3 chooses them
    when stage 1 has the per-class head)."""

    threshold: float = 0.947
    class_thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        gates = self.class_thresholds
        numbers = isinstance(gates, (tuple, list)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in gates
        )
        if gates and not (numbers and len(gates) == CLASS_COUNT and all(0.0 <= v <= 1.0 for v in gates)):
            shown = list(gates) if isinstance(gates, (tuple, list)) else gates
            raise ValueError(
                f"class_thresholds must be empty or {CLASS_COUNT} values between 0 and 1, one per class, got {shown!r}"
            )


# %% [markdown]
# ## Blanking
# Scores are mapped onto the submission's rows in one lookup and the blanked
# rows are cleared in one masked assignment.


# %%
def blank_confident_images(
    sub: Submission, scores: pd.Series, threshold: float
) -> tuple[Submission, int]:
    """A copy of `sub` with every class of each image scored above `threshold` made empty.

    Returns the new submission and how many images were blanked. Every image
    of `sub` must have a score.
    """
    frame = sub.frame.copy()
    row_scores = frame["ImageId"].map(scores).to_numpy(dtype=float)
    blank = row_scores > threshold
    frame.loc[blank, "EncodedPixels"] = ""
    blanked_images = int(frame.loc[blank, "ImageId"].nunique())
    return Submission(frame=frame, fmt=sub.fmt), blanked_images


def blank_confident_classes(
    sub: Submission, class_scores: pd.DataFrame, thresholds: tuple[float, ...]
) -> tuple[Submission, int]:
    """A copy of `sub` with class c of each image made empty where `missing<c>` is above
    the c-th threshold. Returns it and how many non-empty masks were cleared.

    `class_scores` has the columns `missing1`..`missing4`, indexed by ImageId, and
    covers every image of `sub`.
    """
    if len(thresholds) != len(CLASS_IDS):
        raise ValueError(f"{len(thresholds)} class thresholds for {len(CLASS_IDS)} classes")
    frame = sub.frame.copy()
    position = frame["ClassId"].astype(int).map({c: i for i, c in enumerate(CLASS_IDS)}).to_numpy()
    rows = class_scores.index.get_indexer(frame["ImageId"])
    if (rows < 0).any():
        raise ValueError(f"no class scores for image {frame['ImageId'].iloc[int((rows < 0).argmax())]}")
    row_scores = class_scores.to_numpy(dtype=float)[rows, position]
    blank = row_scores > np.asarray(thresholds, dtype=float)[position]
    cleared = int((blank & (frame["EncodedPixels"] != "").to_numpy()).sum())
    frame.loc[blank, "EncodedPixels"] = ""
    return Submission(frame=frame, fmt=sub.fmt), cleared


# %% [markdown]
# ## Run


# %%
def run(params: Params, layout: Layout) -> None:
    sub_path = layout.input_file("stage4", "submission.csv")
    score_path = layout.input_file("stage2", "test_missing_count.csv")
    sub = read_submission(sub_path)
    gates = tuple(params.class_thresholds)
    scores = read_score_table(
        score_path,
        ("allMissing", *CLASS_SCORE_COLUMNS) if gates else ("allMissing",),
        expected_ids=sub.frame["ImageId"],
        expected_from=str(sub_path),
        missing_hint=CLASS_SCORES_HINT if gates else "",
    )
    result, blanked_images = blank_confident_images(sub, scores["allMissing"], params.threshold)
    if gates:
        result, by_class = blank_confident_classes(result, scores[list(CLASS_SCORE_COLUMNS)], gates)
    write_submission(result, layout.working / "submission.csv")

    images = sub.frame["ImageId"].nunique()
    cleared = int(
        ((sub.frame["EncodedPixels"] != "") & (result.frame["EncodedPixels"] == "")).sum()
    )
    print(
        f"blanked {blanked_images} of {images} test images (allMissing > {params.threshold}); "
        f"{cleared} non-empty masks removed; {sub.fmt}-format submission.csv written"
    )
    if gates:
        print(f"per-class gates {list(gates)}: {by_class} more masks removed")
