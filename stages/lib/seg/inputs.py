# %% [markdown]
# ## The competition's inputs, checked
# Every input is checked (files, image headers, labels, sample submission)
# before the model is built or anything is written, so a bad file fails the
# kernel in seconds, naming it, instead of hours in.

# %%
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kernelgen.runtime import InputError, Layout
from stages.lib.segdata import check_images, defects_by_image, list_images, sample_test_names
from stages.lib.severstal import COMPETITION
from stages.lib.submission import Submission
from stages.lib.traincsv import read_train_csv


@dataclass(frozen=True)
class CompetitionData:
    """The train images and their defects (train.csv's rows, and grouped by image), the
    sample submission and the test images it lists."""

    train_csv: Path
    train_dir: Path
    test_dir: Path
    train_names: list[str]
    defect_rows: pd.DataFrame
    defects: dict[str, list[tuple[int, str]]]
    sample: Submission
    test_names: list[str]


def read_competition(layout: Layout, min_train: int = 2) -> CompetitionData:
    """The competition's files under `layout`; InputError naming the first bad one."""
    comp = layout.input(COMPETITION)
    train_csv = layout.input_file(COMPETITION, "train.csv")
    sample_path = layout.input_file(COMPETITION, "sample_submission.csv")
    train_dir, test_dir = comp / "train_images", comp / "test_images"
    train_names = list_images(train_dir)
    defect_rows = read_train_csv(train_csv)
    defects = defects_by_image(defect_rows, train_names, train_csv)
    sample, test_names = sample_test_names(test_dir, sample_path)
    check_images(train_dir, train_names)
    check_images(test_dir, test_names)
    if len(train_names) < min_train:
        raise InputError(f"{train_dir}: need at least {min_train} train images, found {len(train_names)}")
    return CompetitionData(
        train_csv, train_dir, test_dir, train_names, defect_rows, defects, sample, test_names
    )
