# %% [markdown]
# # Stage 5: the submission
# The segmentation model (stage 4) paints a few pixels on many images that
# have no defect, and every stray pixel on an empty (image, class) pair scores
# 0. The classifier (stage 1) is better at saying "no defect at all", so every
# test image whose allMissing score is above the threshold gets all four
# classes blanked. Everything else in the submission stays as it was.

# %%
from dataclasses import dataclass

import pandas as pd

from kernelgen.runtime import Layout
from stages.lib.scores import read_scores
from stages.lib.submission import Submission, read_submission, write_submission


@dataclass(frozen=True)
class Params:
    """`threshold`: blank an image when its allMissing score is strictly above it
    (stage 3 chooses it in a chain run). It must lie in [0, 1], as the scores do;
    1 blanks no image."""

    threshold: float = 0.947

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")


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


# %% [markdown]
# ## Run


# %%
def run(params: Params, layout: Layout) -> None:
    sub_path = layout.input_file("stage4", "submission.csv")
    score_path = layout.input_file("stage2", "test_missing_count.csv")
    sub = read_submission(sub_path)
    scores = read_scores(score_path, expected_ids=sub.frame["ImageId"], expected_from=str(sub_path))
    result, blanked_images = blank_confident_images(sub, scores, params.threshold)
    write_submission(result, layout.working / "submission.csv")

    images = sub.frame["ImageId"].nunique()
    cleared = int(
        ((sub.frame["EncodedPixels"] != "") & (result.frame["EncodedPixels"] == "")).sum()
    )
    print(
        f"blanked {blanked_images} of {images} test images (allMissing > {params.threshold}); "
        f"{cleared} non-empty masks removed; {sub.fmt}-format submission.csv written"
    )
