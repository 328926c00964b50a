# %% [markdown]
# # Stage 2: score the train images
# Loads stage 1's best classifier (`model.h5` from the Stage1 dataset) and
# writes its `allMissing` score (belief that the image has no defect; with the
# per-class head also `missing1`..`missing4`) for every train image to
# `train_missing_count.csv`, with a `validation` column from stage 1's
# `split.csv`: 1 for the images stage 1 held out of training. Stage 3 compares
# the held-out images' scores with `train.csv` to pick its thresholds; scores of
# images the classifier trained on say little about unseen ones. Images are read
# exactly as stage 1 read them for training, without augmentation, and keep their
# original `.jpg` names. It is the checkpoint stage 1 scored the test images with.

# %%
from dataclasses import dataclass
from pathlib import Path

from kernelgen.runtime import InputError, Layout
from stages.lib.classifier import (
    check_classifier_images,
    classifier_image_dataset,
    classifier_input_size,
    load_classifier,
    predict_scores,
)
from stages.lib.csvtext import read_text_csv
from stages.lib.scores import score_table, write_table
from stages.lib.severstal import COMPETITION

# Stage 1 trains at 32 or more (DenseNet121 halves its input five times).
MIN_IMAGE_SIZE = 32
# Test-time flips averaged into each score: none, left-right, left-right and up-down.
TTAS = ("none", "h", "hv")


@dataclass(frozen=True)
class Params:
    """`image_size` must be the size stage 1 trained at; `batch_size` only sets speed;
    `tta` averages each score over flips ("h" left-right, "hv" also up-down).

    Values are checked when `Params` is built; that the model was trained at
    `image_size` is checked once the model is loaded.
    """

    image_size: int = 256
    batch_size: int = 32
    tta: str = "none"

    def __post_init__(self) -> None:
        if self.tta not in TTAS:
            raise ValueError(f"tta must be one of {', '.join(TTAS)}, got {self.tta!r}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be at least {MIN_IMAGE_SIZE} (stage 1 cannot train "
                f"smaller), got {self.image_size}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


# %% [markdown]
# ## Run


# %%
def train_images(competition: Path) -> list[Path]:
    """Every `.jpg` in `train_images/`, sorted by name."""
    folder = competition / "train_images"
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")
    if not paths:
        raise InputError(f"{folder}: no .jpg images found")
    return paths


def held_out(split_path: Path, image_ids: list[str]) -> list[int]:
    """Per image of `image_ids`, 1 when stage 1's `split.csv` held it out of training.

    Every train image must be in the split: an image stage 1 never listed means its
    model was trained on other data than this stage scores.
    """
    raw = read_text_csv(split_path, "split file")
    if list(raw.columns[:2]) != ["ImageId", "validation"]:
        raise InputError(
            f"{split_path}: expected columns ImageId,validation, found {','.join(map(str, raw.columns))}"
        )
    bad = ~raw["validation"].isin(["0", "1"])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise InputError(f"{split_path}: line {row + 2}: validation must be 0 or 1, got {raw['validation'].iloc[row]!r}")
    split = dict(zip(raw["ImageId"], raw["validation"].astype(int), strict=True))
    unknown = [name for name in image_ids if name not in split]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise InputError(
            f"{split_path}: train image {unknown[0]} is not in stage 1's split{more}; "
            "stage 1 trained on other images"
        )
    return [split[name] for name in image_ids]


def run(params: Params, layout: Layout) -> None:
    model_path = layout.input_file("stage1", "model.h5")
    split_path = layout.input_file("stage1", "split.csv")
    paths = train_images(layout.input(COMPETITION))
    validation = held_out(split_path, [p.name for p in paths])
    check_classifier_images(paths)
    model = load_classifier(model_path)
    trained_size = classifier_input_size(model, model_path)
    if trained_size != params.image_size:
        raise InputError(
            f"{model_path}: model was trained on {trained_size}x{trained_size} images "
            f"but image_size={params.image_size}; set image_size={trained_size}"
        )
    data = classifier_image_dataset(paths, params.image_size, params.batch_size)
    frame = score_table([p.name for p in paths], predict_scores(model, data, params.tta))
    frame["validation"] = validation
    out = layout.working / "train_missing_count.csv"
    write_table(frame, out)
    print(
        f"scored {len(frame)} train images ({sum(validation)} held out of stage 1's training); "
        f"mean allMissing {frame['allMissing'].mean():.4f}; wrote {out}"
    )
