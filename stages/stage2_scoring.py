# %% [markdown]
# # Stage 2: score the train images
# Loads stage 1's best classifier (`model.h5` from the Stage1 dataset) and
# writes its `allMissing` score (belief that the image has no defect) for every
# train image to `train_missing_count.csv`. Stage 3 compares these scores with
# `train.csv` to pick the threshold. Images are read exactly as stage 1 read
# them for training, without augmentation, and keep their original `.jpg` names.

# %%
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kernelgen.runtime import InputError, Layout
from stages.lib.classifier import (
    check_classifier_images,
    classifier_image_dataset,
    classifier_input_size,
    load_classifier,
    predict_scores,
)
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


def run(params: Params, layout: Layout) -> None:
    model_path = layout.input_file("stage1", "model.h5")
    paths = train_images(layout.input(COMPETITION))
    check_classifier_images(paths)
    model = load_classifier(model_path)
    trained_size = classifier_input_size(model, model_path)
    if trained_size != params.image_size:
        raise InputError(
            f"{model_path}: model was trained on {trained_size}x{trained_size} images "
            f"but image_size={params.image_size}; set image_size={trained_size}"
        )
    data = classifier_image_dataset(paths, params.image_size, params.batch_size)
    scores = predict_scores(model, data, params.tta)
    if scores.shape[0] != len(paths):
        raise RuntimeError(f"model returned {scores.shape[0]} scores for {len(paths)} images")
    out = layout.working / "train_missing_count.csv"
    partial = out.with_name(out.name + ".partial")
    frame = pd.DataFrame({"ImageId": [p.name for p in paths], "allMissing": scores})
    frame.to_csv(partial, index=False, lineterminator="\n")
    os.replace(partial, out)
    print(f"scored {len(frame)} train images; mean allMissing {scores.mean():.4f}; wrote {out}")
