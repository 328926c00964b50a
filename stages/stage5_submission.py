# %% [markdown]
# # Stage 5: the submission
# The segmentation model (stage 4) paints a few pixels on many images that
# have no defect, and every stray pixel on an empty (image, class) pair scores
# 0. The classifier (stage 1) is better at saying "no defect at all", so every
# test image whose allMissing score is above the threshold gets all four
# classes blanked. With a per-class classifier, `class_thresholds` also blanks
# single classes: class c of an image whose `missing<c>` score is above the c-th
# threshold. Everything else in the submission stays as it was.
#
# When stage 4 ran once per fold, each fold wrote its own submission; stage 5
# takes their majority vote (`stages/lib/vote.py`: the pixels more than half of
# the folds mark) and gates that. Stage 6 is where the folds are averaged as
# probabilities, with a post-processing chosen for the ensemble.

# %%
from dataclasses import dataclass

from kernelgen.runtime import Layout
from stages.lib.gates import blank_confident_classes, blank_confident_images
from stages.lib.scores import CLASS_SCORE_COLUMNS, CLASS_SCORES_HINT, read_score_table
from stages.lib.submission import read_submission, write_submission
from stages.lib.vote import majority_vote

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
# ## Run


# %%
def run(params: Params, layout: Layout) -> None:
    sub_paths = layout.cell_files("stage4", "submission.csv")
    sub_path = sub_paths[0]
    score_path = layout.input_file("stage2", "test_missing_count.csv")
    sub = majority_vote([read_submission(path) for path in sub_paths], sub_paths)
    if len(sub_paths) > 1:
        print(f"majority vote of {len(sub_paths)} stage 4 submissions (one per fold)")
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
