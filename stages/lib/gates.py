# %% [markdown]
# ## The classifier's gates
# The segmenter paints a few pixels on many images that have no defect, and every
# stray pixel on an empty (image, class) pair scores 0. The classifier is better at
# saying "no defect": an image it scores above a threshold gets every class
# blanked, and with a per-class head, class c of an image whose `missing<c>` score
# is above the c-th gate. Scores are mapped onto the submission's rows in one
# lookup and the blanked rows are cleared in one masked assignment.

# %%
import numpy as np
import pandas as pd

from stages.lib.severstal import CLASS_IDS
from stages.lib.submission import Submission


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
