# %% [markdown]
# # Stage 1: defect / no-defect classifier
# Trains DenseNet121 to tell images without any defect (`allMissing` = 1) from
# images with at least one, keeps the model with the best validation accuracy,
# and scores every test image with it. Later stages use the scores to blank the
# segmentation of images the classifier is confident are clean. With
# `head = "class"` the network has one output per defect class instead (the
# belief that the image has none of that class), so later stages can blank
# single classes; that model is kept at its lowest validation loss.
#
# Outputs: `model.h5` (best by validation accuracy, or loss for the per-class
# head), `dense121_model.h5` (after
# the last epoch), `history.csv` (one row per epoch: every metric and the
# learning rate), `test_missing_count.csv` (`ImageId,allMissing` for each test
# image, and `missing1`..`missing4` from the per-class head), `split.csv`
# (`ImageId,validation`: 1 for the images held out of training, on which stage 3
# chooses its thresholds) and learning-curve plots.

# %%
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

from kernelgen.runtime import InputError, Layout
from stages.lib.classifier import (
    build_classifier,
    build_classifier_augmenter,
    check_classifier_images,
    classifier_image_dataset,
    head_outputs,
    load_classifier,
    predict_scores,
)
from stages.lib.metrics import roc_auc, write_metrics
from stages.lib.scores import CLASS_SCORE_COLUMNS, score_table, write_table
from stages.lib.severstal import CLASS_IDS, COMPETITION
from stages.lib.submission import read_submission
from stages.lib.traincsv import read_train_csv_images

LR_FACTOR = 0.25
MIN_LR = 5e-7
# Turning DenseNet121's training step into a graph costs about a minute of CPU before
# the first step; runs of at most this many steps (smoke runs) finish sooner eagerly.
EAGER_MAX_STEPS = 24
# DenseNet121 halves its input five times; smaller images leave nothing to pool.
MIN_IMAGE_SIZE = 32
# Test-time flips averaged into each score: none, left-right, left-right and up-down.
TTAS = ("none", "h", "hv")
# What the network predicts: one allMissing score per image, or one score per class.
HEADS = ("image", "class")
# `keras.utils.set_random_seed` takes seeds from 0 to 2**32 - 1.
MAX_SEED = 4_294_967_295


@dataclass(frozen=True)
class Params:
    """Defaults are the original notebook's settings.

    `image_size`: side of the square the 256x1600 images are resized to (at
    least 32). `validation_split`: share of train images held out, stratified by
    label, strictly between 0 and 1. `lr_patience`: epochs without a lower
    validation loss before the learning rate is cut to a quarter. `pretrained`:
    start from ImageNet weights (needs internet). `seed`: fixes the split, the
    augmentation and the initial weights. `tta`: average each test score over
    flips ("h" left-right, "hv" also up-down). `head`: "image" predicts one
    allMissing score (the seed's), "class" one score per defect class (trained on
    per-class labels; later stages can gate each class). Values are checked when
    `Params` is built, so a bad one stops the render, before any kernel starts.
    """

    image_size: int = 256
    batch_size: int = 32
    epochs: int = 45
    validation_split: float = 0.15
    lr_patience: int = 5
    pretrained: bool = True
    seed: int = 2019
    tta: str = "none"
    head: str = "image"

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.tta not in TTAS:
            raise ValueError(f"tta must be one of {', '.join(TTAS)}, got {self.tta!r}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be at least {MIN_IMAGE_SIZE} (DenseNet121 halves it "
                f"five times), got {self.image_size}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not 0.0 < self.validation_split < 1.0:
            raise ValueError(
                f"validation_split must be between 0 and 1 (exclusive), "
                f"got {self.validation_split}"
            )
        if self.lr_patience < 0:
            raise ValueError(f"lr_patience must be at least 0, got {self.lr_patience}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")


# %% [markdown]
# ## Inputs
# Every file in `train_images/` is a train image; `train.csv` lists only the
# defects, so an image it does not mention has none. The test set is the one
# `sample_submission.csv` defines (the images the submission must cover), and
# each of those must exist in `test_images/`. Every image's header is checked
# before training starts, so a bad file stops the run in seconds, not hours.


# %%
def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")


def train_labels(competition: Path) -> pd.DataFrame:
    """`ImageId`, `path`, `allMissing` (1.0 = no defect) and, per class, `missing1` ..
    `missing4` (1.0 = no defect of that class) for every train image.

    The train images are the files in `train_images/`; an old-format train.csv
    lists every image (four rows each), and then only the images it lists count.
    Any image train.csv names must exist.
    """
    train_dir = competition / "train_images"
    csv_path = competition / "train.csv"
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: file not found")
    paths = _list_images(train_dir)
    defects, listed = read_train_csv_images(csv_path)
    names = {p.name for p in paths}
    named = set(defects["ImageId"].astype(str)) | set(listed or ())
    unknown = sorted(named - names)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise InputError(f"{train_dir / unknown[0]}: image named in {csv_path} not found{more}")
    if listed is not None:
        paths = [p for p in paths if p.name in named]
    if not paths:
        raise InputError(f"{train_dir}: no .jpg images found")
    defective = set(defects["ImageId"].astype(str))
    table = pd.DataFrame(
        {
            "ImageId": [p.name for p in paths],
            "path": paths,
            "allMissing": [0.0 if p.name in defective else 1.0 for p in paths],
        }
    )
    for class_id, column in zip(CLASS_IDS, CLASS_SCORE_COLUMNS, strict=True):
        present = set(defects.loc[defects["ClassId"] == class_id, "ImageId"].astype(str))
        table[column] = [0.0 if name in present else 1.0 for name in table["ImageId"]]
    return table


def submission_images(competition: Path) -> list[Path]:
    """The test images `sample_submission.csv` names, in its order, each checked to exist."""
    sample = competition / "sample_submission.csv"
    if not sample.is_file():
        raise InputError(f"{sample}: file not found")
    ids = list(pd.unique(read_submission(sample).frame["ImageId"].astype(str)))
    if not ids:
        raise InputError(f"{sample}: names no test images; nothing to score")
    test_dir = competition / "test_images"
    paths = [test_dir / image_id for image_id in ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(f"{missing[0]}: test image named in {sample} not found{more}")
    return paths


def split_validation(labels: np.ndarray, validation_split: float, seed: int) -> np.ndarray:
    """A boolean validation mask, stratified by label and fixed by `seed`.

    Stratifying keeps the clean/defective ratio of both parts equal, which matters
    for the small data of tests; on the real 12,568 images it changes little.
    `validation_split` lies strictly between 0 and 1 (`Params` checks it).
    """
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), dtype=bool)
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        is_val[members[: round(len(members) * validation_split)]] = True
    if is_val.all() or not is_val.any():
        raise InputError(
            f"{len(labels)} train image(s) cannot be split {validation_split:.0%} for validation"
        )
    return is_val


# %% [markdown]
# ## Training bookkeeping
# The best model is saved whenever validation accuracy improves, and the history
# is rewritten after every epoch, so a run stopped by Kaggle's time limit still
# leaves its best model and its curves.


# %%
class EpochLog(keras.callbacks.Callback):
    """Writes `history.csv` after every epoch: epoch, every metric, learning rate."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.rows: list[dict[str, float]] = []
        self._lr = float("nan")

    def _learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._lr = self._learning_rate()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": float(epoch + 1)}
        row.update({k: float(v) for k, v in sorted((logs or {}).items()) if k != "learning_rate"})
        row["learning_rate"] = self._lr
        self.rows.append(row)
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(partial, self.path)


def plot_history(history: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per learning curve: loss, accuracy, F1/precision/recall, learning rate."""
    panels = {
        "learning_curve_loss.png": ["loss"],
        "learning_curve_accuracy.png": ["accuracy"],
        "learning_curve_f1_precision_recall.png": ["f1", "precision", "recall"],
    }
    written = []
    for name, metrics in panels.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        for metric in metrics:
            for prefix, style in (("", "-"), ("val_", "--")):
                if prefix + metric in history:
                    ax.plot(
                        history["epoch"], history[prefix + metric], style, label=prefix + metric
                    )
        ax.set_xlabel("epoch")
        ax.set_title(", ".join(metrics))
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(history["epoch"], history["learning_rate"], "-o")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title("learning rate")
    fig.tight_layout()
    fig.savefig(out_dir / "learning_rate.png", dpi=100)
    plt.close(fig)
    written.append(out_dir / "learning_rate.png")
    return written


# %% [markdown]
# ## Run


# %%
def run(params: Params, layout: Layout) -> None:
    competition = layout.input(COMPETITION)
    table = train_labels(competition)
    test_paths = submission_images(competition)
    check_classifier_images([*table["path"], *test_paths])
    labels = table["allMissing"].to_numpy(dtype=np.float32)
    is_val = split_validation(labels, params.validation_split, params.seed)
    print(
        f"{len(table)} train images ({int(labels.sum())} without defect): "
        f"{int((~is_val).sum())} for training, {int(is_val.sum())} for validation; "
        f"{len(test_paths)} test images"
    )

    gpus = tf.config.list_physical_devices("GPU")
    print(f"training on {len(gpus)} GPU(s)" if gpus else "no GPU visible: training on the CPU")
    keras.utils.set_random_seed(params.seed)
    outputs = head_outputs(params.head)
    model = build_classifier(params.image_size, params.pretrained, outputs)
    targets = table[["allMissing"] if outputs == 1 else list(CLASS_SCORE_COLUMNS)].to_numpy(
        dtype=np.float32
    )
    train_paths = list(table["path"][~is_val])
    val_paths = list(table["path"][is_val])
    train_data = classifier_image_dataset(
        train_paths,
        params.image_size,
        params.batch_size,
        targets[~is_val],
        shuffle_seed=params.seed,
        augmenter=build_classifier_augmenter(params.seed),
    )
    val_data = classifier_image_dataset(
        val_paths, params.image_size, params.batch_size, targets[is_val]
    )
    split = pd.DataFrame({"ImageId": table["ImageId"], "validation": is_val.astype(int)})
    write_table(split, layout.working / "split.csv")

    steps = -(-len(train_paths) // params.batch_size) * params.epochs
    if steps <= EAGER_MAX_STEPS:
        model.run_eagerly = True
        print(f"{steps} training steps in all: running eagerly rather than tracing a graph")

    out = layout.working
    best_path, final_path = out / "model.h5", out / "dense121_model.h5"
    # Per class, most (image, class) pairs are empty, so a network that calls every class
    # absent already has a high accuracy; its best epoch is the one of lowest loss.
    monitor, mode = ("val_accuracy", "max") if params.head == "image" else ("val_loss", "min")
    log = EpochLog(out / "history.csv")
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(best_path), monitor=monitor, mode=mode, save_best_only=True, verbose=1
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=LR_FACTOR,
            patience=params.lr_patience,
            min_lr=MIN_LR,
            verbose=1,
        ),
        log,
    ]
    model.fit(
        train_data,
        validation_data=val_data,
        epochs=params.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles its file names itself, every epoch
        verbose=2,
    )
    model.save(final_path)
    plot_history(pd.DataFrame(log.rows), out)

    best = load_classifier(best_path)
    test_data = classifier_image_dataset(test_paths, params.image_size, params.batch_size)
    result = score_table([p.name for p in test_paths], predict_scores(best, test_data, params.tta))
    target = out / "test_missing_count.csv"
    write_table(result, target)
    held_out = classifier_image_dataset(val_paths, params.image_size, params.batch_size)
    val_scores = score_table([Path(p).name for p in val_paths], predict_scores(best, held_out, params.tta))
    val_missing = val_scores["allMissing"].to_numpy()
    write_metrics(out, {
        "val_auc": roc_auc(val_missing, labels[is_val]),
        "val_accuracy": float(((val_missing > 0.5) == (labels[is_val] == 1.0)).mean()),
    })
    pick = min if mode == "min" else max
    print(
        f"best {monitor} {pick(r[monitor] for r in log.rows):.4f}; "
        f"scored {len(result)} test images into {target}"
    )
