# %% [markdown]
# # Stage 4: defect segmentation
# A UNet with a ResNet18 encoder paints the four defect classes on every
# 256x1600 test image. Training follows the 2019 solution: BCE with logits,
# Adam, learning rate cut on validation-loss plateaus, gradient accumulation
# to an effective batch of 32, a validation split stratified by how many defect
# classes an image has, and the checkpoint with the lowest validation loss
# kept as `model.pth`. On test images each class keeps only connected regions
# larger than `min_size` pixels: small blobs are mostly false positives, and
# a false positive on an empty (image, class) pair scores 0.
#
# The validation split is fold `fold` of `n_folds` stratified folds of the
# train images; the default, fold 0 of 5, is the 2019 solution's 80/20 split.
# Run once per fold (a matrix over `fold`), the folds' models make an ensemble
# that stage 6 averages and whose masks stage 5 puts to a vote; every train
# image is validated by exactly one of them.
#
# Once the test images are predicted, `model.pth` also records the
# post-processing used (`postprocess`: per-class pixel thresholds and minimum
# sizes) and, with `average_best`, holds the averaged weights, so an inference
# kernel that loads it predicts exactly what this stage did. With
# `tune_postprocess` it also holds the search's statistics on this fold's
# validation split (`search`), from which stage 6 chooses the post-processing
# of an ensemble of folds.
#
# The parts (input checks, device set-up, network, training, validation,
# post-processing and its search, prediction, checkpoint, plots) are the modules
# of `stages/lib/seg/` (in the notebook, the cells above); this module holds the
# parameters and the recipe.

# %%
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from kernelgen.runtime import InputError, Layout
from stages.lib.folds import fold_split
from stages.lib.metrics import write_metrics
from stages.lib.seg.checkpoint import record_prediction
from stages.lib.seg.device import DeviceSetup, make_loader, pick_device
from stages.lib.seg.inputs import read_competition
from stages.lib.seg.model import build_unet, cpu_state
from stages.lib.seg.oof import validation_stats
from stages.lib.seg.plots import draw_network, plot_curves
from stages.lib.seg.postprocess import PostProcess, per_class
from stages.lib.seg.predict import predict
from stages.lib.seg.train import fit
from stages.lib.seg.tune import describe
from stages.lib.segdata import SteelSegDataset
from stages.lib.severstal import CLASS_IDS
from stages.lib.submission import fill_submission, write_submission
from stages.lib.traincsv import defect_count_per_image

# What Params accepts. Literals in this module, because the render-time check builds
# Params with nothing else of it: no library module is imported there.
# The encoder halves the training height and width five times.
SIZE_MULTIPLE = 32
# `torch.manual_seed` takes seeds up to 2**64 - 1, numpy's generators none below 0.
MAX_SEED = 18_446_744_073_709_551_615
N_CLASSES = 4  # len(CLASS_IDS) of stages/lib/severstal.py
LOSSES = ("bce", "bce_dice")
# Encoders and decoders of segmentation_models_pytorch offered here (smp ships more).
ENCODERS = (
    "resnet18", "resnet34", "resnet50", "se_resnext50_32x4d", "mobilenet_v2",
    "efficientnet-b0", "efficientnet-b3", "efficientnet-b4", "efficientnet-b5",
)
DECODERS = ("unet", "fpn")
TTAS = ("none", "h", "hv")


@dataclass(frozen=True)
class Params:
    """Defaults are the 2019 solution's full run.

    `train_height`/`train_width`: size the network sees (predictions are
    resized back to 256x1600 before thresholding); `accumulate_to`: effective
    batch reached by gradient accumulation; `lr_patience`: epochs without a
    better validation loss before the learning rate drops tenfold;
    `pixel_threshold`: probability above which a pixel is defect; `min_size`:
    a predicted region must have more pixels than this to be kept; `min_area`:
    after that, an image's mask of a class is dropped whole when it covers fewer
    pixels than this (0: never); `pixel_thresholds`/`min_sizes`/`min_areas`:
    empty, or four per-class values ([0.55, 0.7, 0.53, 0.5]) that replace the
    single ones; `tune_postprocess`: search, per class, the pixel
    threshold, minimum region size and minimum total area that maximise the
    competition metric on the validation split, write them to
    `postprocess.json` and use them on the test images;
    `loss`: "bce" or "bce_dice" (0.75 BCE + 0.25 soft Dice); `pos_weight`:
    empty, or four BCE weights of the defect pixels, one per class
    ([2, 2, 1, 1.5]); `crop_width`: 0, or train on random crops this wide of the
    `train_width` images (validation and prediction stay full width);
    `encoder`/`decoder`: network (one of ENCODERS / DECODERS); `average_best`:
    predict with the average of the weights of the best k epochs (by
    validation loss; 1 = the best epoch alone); `tta`: average the segmenter
    over horizontal ("h") or horizontal and vertical ("hv") flips;
    `pretrained`: ImageNet encoder weights (need internet); `amp`: mixed
    precision, used on CUDA only; `workers`: data-loader processes (0 loads
    in the main process); `fold`/`n_folds`: validate on fold `fold` of
    `n_folds` stratified folds of the train images and train on the others
    (fold 0 of 5 is the 2019 80/20 split). Values are checked when `Params` is built, so a bad
    one stops the render, before any kernel starts.
    """

    train_height: int = 256
    train_width: int = 1600
    batch_size: int = 16
    accumulate_to: int = 32
    epochs: int = 20
    lr: float = 5e-4
    lr_patience: int = 3
    pixel_threshold: float = 0.5
    min_size: int = 3500
    pretrained: bool = True
    amp: bool = True
    workers: int = 2
    seed: int = 69
    pixel_thresholds: tuple[float, ...] = ()
    min_sizes: tuple[int, ...] = ()
    tune_postprocess: bool = False
    loss: str = "bce"
    pos_weight: tuple[float, ...] = ()
    crop_width: int = 0
    encoder: str = "resnet18"
    decoder: str = "unet"
    average_best: int = 1
    tta: str = "none"
    min_area: int = 0
    min_areas: tuple[int, ...] = ()
    fold: int = 0
    n_folds: int = 5

    def __post_init__(self) -> None:
        for name, allowed in (
            ("loss", LOSSES), ("encoder", ENCODERS), ("decoder", DECODERS), ("tta", TTAS)
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.crop_width and (
            self.crop_width % SIZE_MULTIPLE or not SIZE_MULTIPLE <= self.crop_width <= self.train_width
        ):
            raise ValueError(
                f"crop_width must be 0 or a multiple of {SIZE_MULTIPLE} up to train_width, "
                f"got {self.crop_width}"
            )
        if self.average_best < 1:
            raise ValueError(f"average_best must be at least 1, got {self.average_best}")
        for name, what in (
            ("pixel_thresholds", "numbers between 0 and 1 (exclusive)"),
            ("min_sizes", "integers of at least 0"),
            ("min_areas", "integers of at least 0"),
            ("pos_weight", "positive numbers"),
        ):
            values = getattr(self, name)
            if values and not self._per_class_ok(name, values):
                shown = list(values) if isinstance(values, (tuple, list)) else values
                raise ValueError(f"{name} must be empty or {N_CLASSES} {what}, one per class, got {shown!r}")
        for name in ("train_height", "train_width"):
            size = getattr(self, name)
            if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
                raise ValueError(
                    f"{name} must be a positive multiple of {SIZE_MULTIPLE} (the encoder "
                    f"halves it five times), got {size}"
                )
        for name in ("batch_size", "accumulate_to", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("lr_patience", "min_size", "min_area", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not 0.0 < self.pixel_threshold < 1.0:
            raise ValueError(
                f"pixel_threshold must be between 0 and 1 (exclusive), "
                f"got {self.pixel_threshold}"
            )
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be at least 2, got {self.n_folds}")
        if not 0 <= self.fold < self.n_folds:
            raise ValueError(
                f"fold must be between 0 and n_folds - 1 ({self.n_folds - 1}), got {self.fold}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")

    @staticmethod
    def _per_class_ok(name: str, values: object) -> bool:
        """Whether `values` is a list of one value per class within the field's range."""
        if not isinstance(values, (tuple, list)) or len(values) != N_CLASSES:
            return False
        if name in ("min_sizes", "min_areas"):
            return all(type(v) is int and v >= 0 for v in values)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return False
        if name == "pixel_thresholds":
            return all(0.0 < v < 1.0 for v in values)
        return all(0.0 < v < float("inf") for v in values)


# %% [markdown]
# ## Run
# Check every input, split the train images into this fold's training and
# validation parts, build the network, train with a validation pass after each
# epoch, then predict the test images with the best (or averaged) weights and the
# post-processing, searched on the validation split when `tune_postprocess` is set.

# %%
def run(params: Params, layout: Layout) -> None:
    data = read_competition(layout)
    strata = defect_count_per_image(data.defect_rows, data.train_names).tolist()
    train_ids, val_ids = fold_split(data.train_names, strata, params.fold, params.n_folds, params.seed)
    if not val_ids:
        raise InputError(
            f"{data.train_dir}: {len(data.train_names)} train images are too few for "
            f"{params.n_folds} folds (fold {params.fold} would have no validation image)"
        )
    torch.manual_seed(params.seed)
    device = pick_device()
    setup = DeviceSetup.create(device, params.amp, params.batch_size, params.accumulate_to)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = build_unet(params.pretrained, params.encoder, params.decoder)
    model = model.to(device, memory_format=setup.memory_format)
    working = layout.working
    draw_network(model, setup, working / "Unet_visualization.svg")

    size, source = (params.train_height, params.train_width), str(data.train_csv)

    def loader(folder: Path, names: list[str], labelled: bool, seed: int | None = None) -> DataLoader:
        """`names` at the training size, with their masks when `labelled`, shuffled by `seed`."""
        dataset = SteelSegDataset(folder, names, *size, data.defects if labelled else None, source)
        return make_loader(dataset, params.batch_size, params.workers, device, seed)

    train_loader = loader(data.train_dir, train_ids, labelled=True, seed=params.seed)
    val_loader = loader(data.train_dir, val_ids, labelled=True)
    print(
        f"stage 4, fold {params.fold} of {params.n_folds}: {len(train_ids)} train / "
        f"{len(val_ids)} validation images at "
        f"{size[0]}x{size[1]}, device {device.type}, amp {setup.amp}, "
        f"batch {params.batch_size} x {setup.accum_steps} accumulated, "
        f"pretrained {params.pretrained}"
    )

    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", patience=params.lr_patience
    )
    checkpoint = working / "model.pth"
    trained = fit(
        model, train_loader, val_loader, setup, optimizer, scheduler,
        epochs=params.epochs, seed=params.seed, checkpoint=checkpoint,
        history=working / "history.csv", loss=params.loss, pos_weight=params.pos_weight,
        crop_width=params.crop_width, threshold=params.pixel_threshold,
        keep=params.average_best, record={"params": asdict(params)},
    )
    plot_curves(trained.history, working)

    del train_loader, val_loader  # stop their worker processes
    model.load_state_dict(trained.best_state)
    averaged = trained.averaged_epochs
    if averaged:
        model.load_state_dict(trained.averaged_state())
        print(f"predicting with the average of epochs {averaged}")
    test_loader = loader(data.test_dir, data.test_names, labelled=False)
    post = PostProcess(
        per_class(params.pixel_thresholds, params.pixel_threshold),
        per_class(params.min_sizes, params.min_size),
        per_class(params.min_areas, params.min_area),
    )
    search = None
    if params.tune_postprocess:
        prefer = (params.pixel_threshold, params.min_size, params.min_area)
        search = validation_stats(
            model, setup, data.train_dir, val_ids, data.defects, source, size,
            params.batch_size, params.workers, params.tta, prefer,
        )
        chosen = search.chosen()
        (working / "postprocess.json").write_text(json.dumps(chosen, indent=2) + "\n")
        post = PostProcess.chosen(chosen)
        print("postprocess.json (tuned on the validation split): " + describe(chosen))
    encoded = predict(
        model, test_loader, setup, post.pixel_thresholds, post.min_sizes, params.tta, post.min_areas
    )
    record_prediction(checkpoint, post, cpu_state(model) if averaged else None, averaged, search)
    best_epoch = trained.history.loc[trained.history["val_loss"].idxmin()]
    figures = {"val_dice": float(best_epoch["dice"])}
    if params.tune_postprocess:
        figures["tuned_dice"] = float(np.mean([chosen[str(c)]["dice"] for c in CLASS_IDS]))
    write_metrics(working, figures)
    submission = fill_submission(data.sample, data.test_names, encoded)
    write_submission(submission, working / "submission.csv")
    filled = int((submission.frame["EncodedPixels"] != "").sum())
    print(
        f"best validation loss {trained.best_loss:.4f}; submission.csv: {len(data.test_names)} "
        f"test images, {filled} of {len(submission.frame)} (image, class) masks non-empty "
        f"({data.sample.fmt} format)"
    )
