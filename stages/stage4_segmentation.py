# %% [markdown]
# # Stage 4: defect segmentation
# A UNet with a ResNet18 encoder paints the four defect classes on every
# 256x1600 test image. Training follows the 2019 solution: BCE with logits,
# Adam, learning rate cut on validation-loss plateaus, gradient accumulation
# to an effective batch of 32, an 80/20 split stratified by how many defect
# classes an image has, and the checkpoint with the lowest validation loss
# kept as `model.pth`. On test images each class keeps only connected regions
# larger than `min_size` pixels: small blobs are mostly false positives, and
# a false positive on an empty (image, class) pair scores 0.
#
# On a GPU the loop runs in mixed precision with channels-last tensors; the
# loader ships uint8 images that are normalised and flipped on the device.

# %%
import itertools
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.utils.data import DataLoader, Dataset

try:
    from torchviz import make_dot
except ImportError:  # optional: only the network drawing needs it
    make_dot = None

from kernelgen.runtime import InputError, Layout
from stages.lib.rle import rle_encode
from stages.lib.segdata import (
    SteelSegDataset,
    check_images,
    defects_by_image,
    list_images,
    stratified_split,
)
from stages.lib.severstal import CLASS_IDS, COMPETITION, IMAGE_SHAPE
from stages.lib.submission import Submission, read_submission, write_submission
from stages.lib.traincsv import defect_count_per_image, read_train_csv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VAL_FRACTION = 0.2
# The encoder halves the training height and width five times.
SIZE_MULTIPLE = 32
# `torch.manual_seed` takes seeds up to 2**64 - 1, numpy's generators none below 0.
MAX_SEED = 18_446_744_073_709_551_615


@dataclass(frozen=True)
class Params:
    """Defaults are the 2019 solution's full run.

    `train_height`/`train_width`: size the network sees (predictions are
    resized back to 256x1600 before thresholding); `accumulate_to`: effective
    batch reached by gradient accumulation; `lr_patience`: epochs without a
    better validation loss before the learning rate drops tenfold;
    `pixel_threshold`: probability above which a pixel is defect; `min_size`:
    a predicted region must have more pixels than this to be kept;
    `pretrained`: ImageNet encoder weights (need internet); `amp`: mixed
    precision, used on CUDA only; `workers`: data-loader processes (0 loads
    in the main process). Values are checked when `Params` is built, so a bad
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

    def __post_init__(self) -> None:
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
        for name in ("lr_patience", "min_size", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not 0.0 < self.pixel_threshold < 1.0:
            raise ValueError(
                f"pixel_threshold must be between 0 and 1 (exclusive), "
                f"got {self.pixel_threshold}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")


# %% [markdown]
# ## Model and device set-up

# %%
def build_unet(pretrained: bool) -> nn.Module:
    """UNet-ResNet18 with one logit channel per class; a clear error when weights are missing."""
    weights = "imagenet" if pretrained else None
    try:
        return smp.Unet(
            "resnet18", encoder_weights=weights, classes=len(CLASS_IDS), activation=None
        )
    except Exception as exc:
        if not pretrained:
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(
            f"ImageNet weights for the resnet18 encoder could not be fetched "
            f"({type(exc).__name__}: {detail[:120]}); set pretrained=false to train from scratch"
        ) from None


@dataclass(frozen=True)
class DeviceSetup:
    """How batches are run: device, precision, memory layout, accumulation.

    The normalisation constants live on the device once: building them per
    batch would copy from host memory and make the host wait for the GPU.
    """

    device: torch.device
    amp: bool
    channels_last: bool
    accum_steps: int
    pixel_mean: torch.Tensor = field(repr=False, compare=False)
    pixel_inv_std: torch.Tensor = field(repr=False, compare=False)

    @classmethod
    def create(cls, params: Params, device: torch.device) -> "DeviceSetup":
        cuda = device.type == "cuda"
        accum = max(1, round(params.accumulate_to / params.batch_size))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        return cls(
            device=device,
            amp=params.amp and cuda,
            channels_last=cuda,
            accum_steps=accum,
            pixel_mean=mean.to(device),
            pixel_inv_std=inv_std.to(device),
        )

    def flip_generator(self, seed: int) -> torch.Generator:
        """A seeded generator on the device, so flip draws need no host-to-device copy."""
        return torch.Generator(device=self.device).manual_seed(seed)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def grad_scaler(setup: DeviceSetup) -> "torch.amp.GradScaler":
    """A loss scaler for float16 training; a pass-through when AMP is off."""
    return torch.amp.GradScaler(setup.device.type, enabled=setup.amp)


def make_loader(
    dataset: Dataset, batch_size: int, workers: int, device: torch.device, shuffle_seed: int | None
) -> DataLoader:
    """Loader with pinned memory on CUDA and workers kept alive between epochs.

    `shuffle_seed` None means keep order (validation, test).
    """
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle_seed is not None,
        generator=generator,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def prepare_images(images: torch.Tensor, setup: DeviceSetup) -> torch.Tensor:
    """uint8 (B, 3, H, W) batch -> normalised float on the device, in the setup's layout."""
    x = images.to(setup.device, non_blocking=True).to(memory_format=setup.memory_format)
    return (x.float() - setup.pixel_mean) * setup.pixel_inv_std


def random_flip(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror each sample left-right with probability 0.5, image and masks together."""
    flips = torch.rand(images.shape[0], generator=generator, device=generator.device) < 0.5
    flips = flips.to(images.device).view(-1, 1, 1, 1)
    return torch.where(flips, images.flip(-1), images), torch.where(flips, masks.flip(-1), masks)


# %% [markdown]
# ## Training and validation
# The running loss stays on the device (no `.item()` per batch, so the GPU is
# never made to wait); validation gathers per-(image, class) pixel counts and
# computes every metric from them in a few tensor operations.

# %%
def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: "torch.amp.GradScaler",
    setup: DeviceSetup,
    flip_generator: torch.Generator,
    max_batches: int | None = None,
) -> float:
    """One pass over `loader` with accumulation; returns the mean training loss per image."""
    model.train()
    criterion = nn.BCEWithLogitsLoss()
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=setup.device)
    seen = 0
    batches = len(loader) if max_batches is None else min(max_batches, len(loader))
    for index, (images, masks) in enumerate(itertools.islice(loader, batches)):
        images = images.to(setup.device, non_blocking=True)
        masks = masks.to(setup.device, non_blocking=True)
        images, masks = random_flip(images, masks, flip_generator)
        x = prepare_images(images, setup)
        y = masks.float()
        with setup.autocast():
            logits = model(x)
        loss = criterion(logits.float(), y)
        scaler.scale(loss / setup.accum_steps).backward()
        if (index + 1) % setup.accum_steps == 0 or index + 1 == batches:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        total += loss.detach() * images.shape[0]
        seen += images.shape[0]
    return float(total) / max(seen, 1)


def pair_metrics(inter: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor) -> dict:
    """Dice and IoU per (image, class) pair from pixel counts; empty-empty pairs score 1.

    `dice_pos` averages pairs with a true defect, `dice_neg` those without
    (1 exactly when nothing was predicted), `dice` and `iou` all pairs.
    """
    union = pred + truth - inter
    empty = union == 0
    dice = torch.where(empty, 1.0, 2 * inter / (pred + truth).clamp(min=1))
    iou = torch.where(empty, 1.0, inter / union.clamp(min=1))
    positive = truth > 0

    def mean(values: torch.Tensor) -> float:
        return float(values.mean()) if values.numel() else math.nan

    return {
        "dice": mean(dice),
        "dice_pos": mean(dice[positive]),
        "dice_neg": mean(dice[~positive]),
        "iou": mean(iou),
    }


def validate(
    model: nn.Module, loader: DataLoader, setup: DeviceSetup, threshold: float
) -> dict:
    """Validation loss (mean per pixel) and Dice/IoU at the training resolution."""
    model.eval()
    criterion = nn.BCEWithLogitsLoss(reduction="sum")
    total = torch.zeros((), device=setup.device, dtype=torch.float64)
    pixels = 0
    counts: list[torch.Tensor] = []
    with torch.no_grad():
        for images, masks in loader:
            x = prepare_images(images, setup)
            y = masks.to(setup.device, non_blocking=True).float()
            with setup.autocast():
                logits = model(x)
            logits = logits.float()
            total += criterion(logits, y).double()
            pixels += y.numel()
            pred = (torch.sigmoid(logits) > threshold).float()
            counts.append(
                torch.stack(
                    ((pred * y).sum((2, 3)), pred.sum((2, 3)), y.sum((2, 3))), dim=0
                )
            )
    stats = torch.cat(counts, dim=1)
    return {"loss": float(total) / max(pixels, 1), **pair_metrics(stats[0], stats[1], stats[2])}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write beside the target and rename, so `model.pth` is always a whole checkpoint."""
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights as contiguous CPU tensors, loadable anywhere.

    Always a copy: on CPU, `.to("cpu")` would return the live tensors, and the
    "best" weights would keep training.
    """
    return {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }


# %% [markdown]
# ## Test prediction
# Logits go back to 256x1600 (bilinear) before the sigmoid, the threshold,
# the connected-component filter and the RLE, whatever size the network ran
# at. Components are labelled for a whole batch in one call, with
# 8-connectivity inside each (image, class) plane and none across planes.

# %%
def remove_small(masks: np.ndarray, min_size: int) -> np.ndarray:
    """Keep only connected regions with more than `min_size` pixels in each 2-D plane.

    Only planes with a predicted pixel are labelled, and region sizes are
    counted over predicted pixels only: most of a batch is background.
    """
    planes = masks.reshape(-1, *masks.shape[-2:]).astype(bool, copy=False)
    kept = np.zeros(planes.shape, dtype=bool)
    active = np.flatnonzero(planes.any(axis=(1, 2)))
    if active.size:
        chosen = planes[active]
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = True  # 8-connected inside a plane, never across planes
        labels, count = ndimage.label(chosen, structure=structure)
        sizes = np.bincount(labels[chosen], minlength=count + 1)
        keep = sizes > min_size
        keep[0] = False
        kept[active] = keep[labels]
    return kept.reshape(masks.shape)


def predict(
    model: nn.Module, loader: DataLoader, setup: DeviceSetup, threshold: float, min_size: int
) -> list[list[str]]:
    """Per image (loader order), the RLE of each class after threshold and size filter."""
    model.eval()
    encoded: list[list[str]] = []
    with torch.no_grad():
        for images in loader:
            with setup.autocast():
                logits = model(prepare_images(images, setup))
            logits = logits.float()
            if tuple(logits.shape[-2:]) != IMAGE_SHAPE:
                logits = F.interpolate(
                    logits, size=IMAGE_SHAPE, mode="bilinear", align_corners=False
                )
            masks = (torch.sigmoid(logits) > threshold).cpu().numpy()
            kept = remove_small(masks, min_size)
            encoded.extend([rle_encode(plane) for plane in image] for image in kept)
    return encoded


# %% [markdown]
# ## Outputs beside the model: network drawing, history, curves

# %%
def draw_network(model: nn.Module, setup: DeviceSetup, path: Path) -> None:
    """Draw the autograd graph as SVG; print one line and go on when the tools are missing."""
    if make_dot is None:
        print(f"{path.name} not drawn: torchviz is not installed (pip install torchviz)")
        return
    was_training = model.training
    model.eval()  # batch-norm statistics must not move for a drawing
    try:
        x = torch.zeros(1, 3, 64, 64, device=setup.device)
        graph = make_dot(model(x), params=dict(model.named_parameters()))
        svg = graph.pipe(format="svg")
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{path.name} not drawn: graphviz failed ({type(exc).__name__}: {detail})")
        return
    finally:
        model.train(was_training)
    path.write_bytes(svg)


def plot_curves(history: pd.DataFrame, working: Path) -> list[Path]:
    """Loss and validation-metric curves by epoch, one PNG each."""
    written: list[Path] = []
    figures = (
        ("segmentation_loss.png", "BCE loss", ("train_loss", "val_loss")),
        ("segmentation_dice_iou.png", "validation score", ("dice", "dice_pos", "dice_neg", "iou")),
        ("segmentation_lr.png", "learning rate", ("lr",)),
    )
    for name, label, columns in figures:
        fig, ax = plt.subplots(figsize=(7, 4))
        for column in columns:
            ax.plot(history["epoch"], history[column], marker="o", label=column)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if name == "segmentation_lr.png":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(working / name, dpi=100)
        plt.close(fig)
        written.append(working / name)
    return written


# %% [markdown]
# ## Run
# Every input is checked (files, image headers, labels, sample submission)
# before the model is built or anything is written.

# %%
def run(params: Params, layout: Layout) -> None:
    comp = layout.input(COMPETITION)
    train_csv = layout.input_file(COMPETITION, "train.csv")
    sample_path = layout.input_file(COMPETITION, "sample_submission.csv")
    train_dir, test_dir = comp / "train_images", comp / "test_images"

    train_names = list_images(train_dir)
    defect_rows = read_train_csv(train_csv)
    defects = defects_by_image(defect_rows, train_names, train_csv)
    list_images(test_dir)
    sample = read_submission(sample_path)
    test_names = list(dict.fromkeys(sample.frame["ImageId"].astype(str).tolist()))
    if not test_names:
        raise InputError(f"{sample_path}: no test images listed (empty test set)")
    check_images(train_dir, train_names)
    check_images(test_dir, test_names)
    if len(train_names) < 2:
        raise InputError(f"{train_dir}: need at least 2 train images, found {len(train_names)}")

    torch.manual_seed(params.seed)
    device = pick_device()
    setup = DeviceSetup.create(params, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = build_unet(params.pretrained).to(device, memory_format=setup.memory_format)
    working = layout.working
    draw_network(model, setup, working / "Unet_visualization.svg")

    strata = defect_count_per_image(defect_rows, train_names).tolist()
    train_ids, val_ids = stratified_split(train_names, strata, VAL_FRACTION, params.seed)
    size = (params.train_height, params.train_width)
    source = str(train_csv)
    train_loader = make_loader(
        SteelSegDataset(train_dir, train_ids, *size, defects=defects, source=source),
        params.batch_size, params.workers, device, shuffle_seed=params.seed,
    )
    val_loader = make_loader(
        SteelSegDataset(train_dir, val_ids, *size, defects=defects, source=source),
        params.batch_size, params.workers, device, shuffle_seed=None,
    )
    print(
        f"stage 4: {len(train_ids)} train / {len(val_ids)} validation images at "
        f"{size[0]}x{size[1]}, device {device.type}, amp {setup.amp}, "
        f"batch {params.batch_size} x {setup.accum_steps} accumulated, "
        f"pretrained {params.pretrained}"
    )

    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", patience=params.lr_patience
    )
    scaler = grad_scaler(setup)
    flip_generator = setup.flip_generator(params.seed)
    checkpoint = working / "model.pth"
    best_loss, best_state = math.inf, cpu_state(model)
    rows: list[dict] = []
    for epoch in range(1, params.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(
            model, train_loader, optimizer, scaler, setup, flip_generator
        )
        metrics = validate(model, val_loader, setup, params.pixel_threshold)
        scheduler.step(metrics["loss"])
        improved = metrics["loss"] < best_loss
        if improved:
            best_loss, best_state = metrics["loss"], cpu_state(model)
            save_checkpoint(
                checkpoint,
                {
                    "epoch": epoch,
                    "best_loss": best_loss,
                    "state_dict": best_state,
                    "optimizer": optimizer.state_dict(),
                    "params": asdict(params),
                },
            )
        seconds = time.perf_counter() - start
        rows.append(
            {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": metrics["loss"],
             **{k: metrics[k] for k in ("dice", "dice_pos", "dice_neg", "iou")},
             "seconds": round(seconds, 2)}
        )
        pd.DataFrame(rows).to_csv(working / "history.csv", index=False)
        print(
            f"epoch {epoch}/{params.epochs} lr {lr:.2e} train {train_loss:.4f} "
            f"val {metrics['loss']:.4f} dice {metrics['dice']:.4f} "
            f"(pos {metrics['dice_pos']:.4f}, neg {metrics['dice_neg']:.4f}) "
            f"iou {metrics['iou']:.4f} {seconds:.1f}s" + (" *saved" if improved else "")
        )
    plot_curves(pd.DataFrame(rows), working)

    del train_loader, val_loader  # stop their worker processes
    model.load_state_dict(best_state)
    test_loader = make_loader(
        SteelSegDataset(test_dir, test_names, *size),
        params.batch_size, params.workers, device, shuffle_seed=None,
    )
    encoded = predict(model, test_loader, setup, params.pixel_threshold, params.min_size)
    lookup = {
        (name, class_id): rle
        for name, rles in zip(test_names, encoded, strict=True)
        for class_id, rle in zip(CLASS_IDS, rles, strict=True)
    }
    frame = sample.frame.copy()
    keys = zip(frame["ImageId"].astype(str), frame["ClassId"].astype(int), strict=True)
    frame["EncodedPixels"] = [lookup[key] for key in keys]
    write_submission(Submission(frame=frame, fmt=sample.fmt), working / "submission.csv")
    filled = int((frame["EncodedPixels"] != "").sum())
    print(
        f"best validation loss {best_loss:.4f}; submission.csv: {len(test_names)} test images, "
        f"{filled} of {len(frame)} (image, class) masks non-empty ({sample.fmt} format)"
    )
