# %% [markdown]
# # Stage 4: defect segmentation
# A UNet with a ResNet18 encoder paints the four defect classes on every
# 256x1600 test image. Training follows the 2019 solution: BCE with logits,
# Adam, learning rate cut on validation-loss plateaus, gradient accumulation
# to an effective batch of 32, an 80/20 split stratified by how many defect
# classes an image has, and the checkpoint with the lowest validation loss
# kept as `model.pth`. On test images each class keeps only connected regions
# larger than `min_size` pixels: small blobs are mostly false positives, and
# a false positive on an empty (image, class) pair scores 0. Once the test
# images are predicted, `model.pth` also records the post-processing used
# (`postprocess`: per-class pixel thresholds and minimum sizes) and, with
# `average_best`, holds the averaged weights, so an inference kernel that loads
# it predicts exactly what this stage did.
#
# On a GPU the loop runs in mixed precision with channels-last tensors; the
# loader ships uint8 images that are normalised and flipped on the device.

# %%
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
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
    decode_masks,
    defects_by_image,
    list_images,
    sample_test_names,
    stratified_split,
)
from stages.lib.severstal import CLASS_IDS, COMPETITION, IMAGE_SHAPE
from stages.lib.submission import fill_submission, write_submission
from stages.lib.traincsv import defect_count_per_image, read_train_csv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VAL_FRACTION = 0.2
# The encoder halves the training height and width five times.
SIZE_MULTIPLE = 32
# `torch.manual_seed` takes seeds up to 2**64 - 1, numpy's generators none below 0.
MAX_SEED = 18_446_744_073_709_551_615
# Post-processing search grid (per class): pixel thresholds, minimum component sizes and
# minimum total areas (what is left of a class's mask on an image after the size filter).
TUNE_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
TUNE_MIN_AREAS = (0, 300, 600, 900, 1200, 1500, 2000, 2500, 3000, 4000)
TUNE_MIN_SIZES = (
    0, 50, 100, 150, 200, 300, 400, 600, 800, 1000, 1200, 1500, 2000, 2500, 3000, 3500,
    4000, 5000, 6000, 8000, 10000,
)
N_CLASSES = 4
LOSSES = ("bce", "bce_dice")
# Encoders and decoders of segmentation_models_pytorch offered here (smp ships more).
ENCODERS = (
    "resnet18", "resnet34", "resnet50", "se_resnext50_32x4d", "mobilenet_v2",
    "efficientnet-b0", "efficientnet-b3", "efficientnet-b4", "efficientnet-b5",
)
DECODERS = ("unet", "fpn")
TTAS = ("none", "h", "hv")
BCE_SHARE = 0.75  # bce_dice: 0.75 BCE + 0.25 soft Dice, as the 2019 winners did


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


def class_pixel_thresholds(params: Params) -> tuple[float, ...]:
    """The pixel threshold of each class: `pixel_thresholds` if given, else `pixel_threshold`."""
    return tuple(params.pixel_thresholds) or (params.pixel_threshold,) * N_CLASSES


def class_min_sizes(params: Params) -> tuple[int, ...]:
    """The minimum region size of each class: `min_sizes` if given, else `min_size`."""
    return tuple(params.min_sizes) or (params.min_size,) * N_CLASSES


def class_min_areas(params: Params) -> tuple[int, ...]:
    """The minimum total area of each class: `min_areas` if given, else `min_area`."""
    return tuple(params.min_areas) or (params.min_area,) * N_CLASSES


# %% [markdown]
# ## Model and device set-up

# %%
def build_unet(pretrained: bool, encoder: str = "resnet18", decoder: str = "unet") -> nn.Module:
    """UNet (or FPN) with one logit channel per class; a clear error when weights are missing."""
    weights = "imagenet" if pretrained else None
    network = smp.FPN if decoder == "fpn" else smp.Unet
    try:
        return network(encoder, encoder_weights=weights, classes=len(CLASS_IDS), activation=None)
    except Exception as exc:
        if not pretrained:
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(
            f"ImageNet weights for the {encoder} encoder could not be fetched "
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


def random_crop(
    images: torch.Tensor, masks: torch.Tensor, width: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random `width`-wide window of each sample (full height), image and masks together."""
    full = images.shape[-1]
    if width >= full:
        return images, masks
    starts = torch.randint(0, full - width + 1, (images.shape[0],), generator=generator,
                           device=generator.device).tolist()
    return (
        torch.stack([img[..., s : s + width] for img, s in zip(images, starts, strict=True)]),
        torch.stack([m[..., s : s + width] for m, s in zip(masks, starts, strict=True)]),
    )


def class_pos_weight(params: Params) -> tuple[float, ...] | None:
    """The per-class BCE weight of defect pixels, or None (weight 1)."""
    return tuple(float(w) for w in params.pos_weight) or None


def segmentation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: str = "bce",
    pos_weight: "Sequence[float] | None" = None,
) -> torch.Tensor:
    """BCE with logits (defect pixels of class c weighted pos_weight[c]) or, with
    "bce_dice", 0.75 of it plus 0.25 soft Dice loss (1 - Dice of the probabilities,
    per class over the batch, smoothed by 1, averaged over classes)."""
    weight = None
    if pos_weight is not None:
        weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
        weight = weight.view(1, -1, 1, 1)
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)
    if loss == "bce":
        return bce
    probs = torch.sigmoid(logits)
    inter = (probs * targets).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + targets.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (total + 1.0)
    return BCE_SHARE * bce + (1 - BCE_SHARE) * (1 - dice).mean()


def flip_logits(model: nn.Module, x: torch.Tensor, setup: DeviceSetup, tta: str) -> torch.Tensor:
    """Float logits of `x`, averaged over the flips of `tta` (each flipped back first)."""
    flips: list[tuple[int, ...]] = [()]
    if tta in ("h", "hv"):
        flips.append((-1,))
    if tta == "hv":
        flips += [(-2,), (-2, -1)]
    total = None
    for dims in flips:
        with setup.autocast():
            out = model(x.flip(dims) if dims else x)
        out = out.float()
        out = out.flip(dims) if dims else out
        total = out if total is None else total + out
    return total if len(flips) == 1 else total / len(flips)


def average_states(states: "Sequence[dict[str, torch.Tensor]]") -> dict[str, torch.Tensor]:
    """The element-wise mean of several state dicts (integer buffers from the first)."""
    averaged = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            averaged[key] = torch.stack([state[key] for state in states]).mean(0)
        else:
            averaged[key] = first.clone()
    return averaged


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
    loss_name: str = "bce",
    pos_weight: "Sequence[float] | None" = None,
    crop_width: int = 0,
) -> float:
    """One pass over `loader` with accumulation; returns the mean training loss per image."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=setup.device)
    seen = 0
    batches = len(loader) if max_batches is None else min(max_batches, len(loader))
    for index, (images, masks) in enumerate(itertools.islice(loader, batches)):
        images = images.to(setup.device, non_blocking=True)
        masks = masks.to(setup.device, non_blocking=True)
        images, masks = random_flip(images, masks, flip_generator)
        if crop_width:
            images, masks = random_crop(images, masks, crop_width, flip_generator)
        x = prepare_images(images, setup)
        y = masks.float()
        with setup.autocast():
            logits = model(x)
        loss = segmentation_loss(logits.float(), y, loss_name, pos_weight)
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
def label_planes(planes: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions of a (P, H, W) boolean stack: 8-connected in a plane, none across."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    return ndimage.label(planes, structure=structure)


def remove_small(masks: np.ndarray, min_size: "int | Sequence[int]") -> np.ndarray:
    """Keep only connected regions with more than `min_size` pixels in each 2-D plane.

    `min_size` is one size for every plane, or one per class: a sequence as
    long as axis -3 of `masks` (the class axis of (N, C, H, W) masks).
    Only planes with a predicted pixel are labelled, and region sizes are
    counted over predicted pixels only: most of a batch is background.
    """
    planes = masks.reshape(-1, *masks.shape[-2:]).astype(bool, copy=False)
    kept = np.zeros(planes.shape, dtype=bool)
    active = np.flatnonzero(planes.any(axis=(1, 2)))
    plane_min = _per_plane(min_size, masks, "remove_small: {} per-class sizes")
    if active.size:
        chosen = planes[active]
        labels, count = label_planes(chosen)
        picked = labels[chosen]
        sizes = np.bincount(picked, minlength=count + 1)
        label_min = np.zeros(count + 1, dtype=np.int64)
        plane_of_pixel = np.nonzero(chosen)[0]
        label_min[picked] = plane_min[active][plane_of_pixel]
        keep = sizes > label_min
        keep[0] = False
        kept[active] = keep[labels]
    return kept.reshape(masks.shape)


def _per_plane(value: "int | Sequence[int]", masks: np.ndarray, what: str) -> np.ndarray:
    """One value per 2-D plane of `masks`: the same for all, or one per class (axis -3)."""
    planes = int(np.prod(masks.shape[:-2], dtype=np.int64))
    if not np.ndim(value):
        return np.full(planes, int(value), dtype=np.int64)
    per_class = np.asarray(value, dtype=np.int64)
    if masks.ndim < 3 or per_class.size != masks.shape[-3]:
        raise ValueError(f"{what.format(per_class.size)} for masks of shape {masks.shape}")
    return np.tile(per_class, planes // per_class.size)


def drop_small_totals(masks: np.ndarray, min_area: "int | Sequence[int]") -> np.ndarray:
    """Empty every 2-D plane whose mask covers fewer than `min_area` pixels in all.

    `min_area` is one value for every plane or one per class, as in `remove_small`;
    0 keeps every plane. The 1st-place 2019 solution dropped a class's mask below a
    per-class total area (600/600/900/2000 px) after dropping small components.
    """
    area = masks.reshape(-1, *masks.shape[-2:]).sum(axis=(1, 2))
    keep = area >= _per_plane(min_area, masks, "drop_small_totals: {} per-class areas")
    return masks & keep.reshape(*masks.shape[:-2], 1, 1)


def tune_class(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = TUNE_THRESHOLDS,
    min_sizes: Sequence[int] = TUNE_MIN_SIZES,
    prefer: tuple[float, int, int] = (0.5, 3500, 0),
    min_areas: Sequence[int] = TUNE_MIN_AREAS,
) -> tuple[float, int, int, float, np.ndarray]:
    """Best (pixel threshold, min region size, min total area) for one class on validation maps.

    `probs` (N, H, W): probabilities in [0, 1], or uint8 holding round(255 p);
    `truth` (N, H, W) binary. Per threshold, regions are labelled once for all
    images; each region's size and overlap with the truth come from two
    bincounts, and every minimum size is then scored at once: per (size,
    image) predicted area and overlap are summed with one bincount, and every
    minimum total area is a comparison on those sums. Returns the best
    threshold, size, area, its mean Dice (1 for empty-empty pairs) and the
    whole (threshold, size, area) score grid. When every entry scores the same
    (e.g. no pixel predicted on the split) the entry nearest `prefer` (the
    untuned rule) is kept; among other ties, the threshold and then the area
    nearest `prefer`'s, and the middle of the tied sizes, away from the edges of
    the plateau.
    """
    n = probs.shape[0]
    sizes_grid = np.asarray(min_sizes, dtype=np.int64)
    areas_grid = np.asarray(min_areas, dtype=np.int64)
    truth = truth.astype(bool, copy=False)
    truth_area = truth.reshape(n, -1).sum(axis=1).astype(np.float64)
    scale = 255.0 if probs.dtype == np.uint8 else 1.0
    grid = np.zeros((len(thresholds), sizes_grid.size, areas_grid.size), dtype=np.float64)
    for row, threshold in enumerate(thresholds):
        pred = probs > threshold * scale
        labels, count = label_planes(pred)
        picked = labels[pred]
        area = np.bincount(picked, minlength=count + 1)[1:]
        overlap = np.bincount(picked, weights=truth[pred], minlength=count + 1)[1:]
        image = np.zeros(count + 1, dtype=np.int64)
        image[picked] = np.nonzero(pred)[0]
        image = image[1:]
        keep = area[None, :] > sizes_grid[:, None]  # (sizes, regions)
        slot = (np.arange(sizes_grid.size)[:, None] * n + image[None, :])[keep]
        pred_area = np.bincount(
            slot, weights=np.broadcast_to(area, keep.shape)[keep], minlength=sizes_grid.size * n
        ).reshape(sizes_grid.size, n)
        inter = np.bincount(
            slot, weights=np.broadcast_to(overlap, keep.shape)[keep],
            minlength=sizes_grid.size * n,
        ).reshape(sizes_grid.size, n)
        whole = pred_area[None] >= areas_grid[:, None, None]  # (areas, sizes, images)
        total = np.where(whole, pred_area[None], 0.0) + truth_area
        inter_kept = np.where(whole, inter[None], 0.0)
        dice = np.where(total > 0, 2.0 * inter_kept / np.maximum(total, 1.0), 1.0)
        grid[row] = dice.mean(axis=2).T
    tied = grid >= grid.max() - 1e-12
    threshold_grid = np.asarray(thresholds)
    if tied.all():  # nothing to learn from: keep the configured rule (nearest grid entry)
        row = int(np.argmin(np.abs(threshold_grid - prefer[0])))
        col = int(np.argmin(np.abs(sizes_grid - prefer[1])))
        depth = int(np.argmin(np.abs(areas_grid - prefer[2])))
    else:  # threshold, then area nearest the configured ones; the middle of the tied sizes
        rows = np.flatnonzero(tied.any(axis=(1, 2)))
        row = int(rows[np.argmin(np.abs(threshold_grid[rows] - prefer[0]))])
        depths = np.flatnonzero(tied[row].any(axis=0))
        depth = int(depths[np.argmin(np.abs(areas_grid[depths] - prefer[2]))])
        cols = np.flatnonzero(tied[row, :, depth])
        col = int(cols[(cols.size - 1) // 2])
    return (
        float(thresholds[row]),
        int(sizes_grid[col]),
        int(areas_grid[depth]),
        float(grid[row, col, depth]),
        grid,
    )


def search_postprocess(
    probs: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = TUNE_THRESHOLDS,
    min_sizes: Sequence[int] = TUNE_MIN_SIZES,
    prefer: tuple[float, int, int] = (0.5, 3500, 0),
    min_areas: Sequence[int] = TUNE_MIN_AREAS,
) -> dict[str, dict]:
    """Per class, the threshold, min region size and min total area that score best;
    (N, C, H, W) in.

    Returns `{"1": {"pixel_threshold": t, "min_size": m, "min_area": a, "dice": d}, ...}`,
    the content of `postprocess.json`.
    """
    chosen: dict[str, dict] = {}
    for index, class_id in enumerate(CLASS_IDS[: probs.shape[1]]):
        threshold, size, area, score, _ = tune_class(
            probs[:, index], truth[:, index], thresholds, min_sizes, prefer, min_areas
        )
        chosen[str(class_id)] = {
            "pixel_threshold": threshold,
            "min_size": size,
            "min_area": area,
            "dice": score,
        }
    return chosen


def full_size_probs(
    model: nn.Module, loader: DataLoader, setup: DeviceSetup, tta: str = "none"
) -> np.ndarray:
    """Sigmoid maps at 256x1600 for every image of `loader` (items may carry masks),
    as uint8 holding round(255 p): a validation split of real size fits in memory."""
    model.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            logits = flip_logits(model, prepare_images(images, setup), setup, tta)
            if tuple(logits.shape[-2:]) != IMAGE_SHAPE:
                logits = F.interpolate(
                    logits, size=IMAGE_SHAPE, mode="bilinear", align_corners=False
                )
            out.append(
                torch.round(torch.sigmoid(logits) * 255).to(torch.uint8).cpu().numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES, *IMAGE_SHAPE), np.uint8)


def predict(
    model: nn.Module,
    loader: DataLoader,
    setup: DeviceSetup,
    threshold: "float | Sequence[float]",
    min_size: "int | Sequence[int]",
    tta: str = "none",
    min_area: "int | Sequence[int]" = 0,
) -> list[list[str]]:
    """Per image (loader order), the RLE of each class after threshold, size filter and
    total-area filter.

    `threshold`, `min_size` and `min_area` are one value for all classes or one per
    class; `tta` averages the logits over flips (see `flip_logits`).
    """
    if np.ndim(threshold):
        threshold = torch.tensor(list(threshold), dtype=torch.float32).view(1, -1, 1, 1)
        threshold = threshold.to(setup.device)
    model.eval()
    encoded: list[list[str]] = []
    with torch.no_grad():
        for images in loader:
            logits = flip_logits(model, prepare_images(images, setup), setup, tta)
            if tuple(logits.shape[-2:]) != IMAGE_SHAPE:
                logits = F.interpolate(
                    logits, size=IMAGE_SHAPE, mode="bilinear", align_corners=False
                )
            masks = (torch.sigmoid(logits) > threshold).cpu().numpy()
            kept = drop_small_totals(remove_small(masks, min_size), min_area)
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
    sample, test_names = sample_test_names(test_dir, sample_path)
    check_images(train_dir, train_names)
    check_images(test_dir, test_names)
    if len(train_names) < 2:
        raise InputError(f"{train_dir}: need at least 2 train images, found {len(train_names)}")

    torch.manual_seed(params.seed)
    device = pick_device()
    setup = DeviceSetup.create(params, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = build_unet(params.pretrained, params.encoder, params.decoder).to(
        device, memory_format=setup.memory_format
    )
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
    top: list[tuple[float, int, dict]] = []  # (val loss, epoch, weights) of the best epochs
    pos_weight = class_pos_weight(params)
    rows: list[dict] = []
    for epoch in range(1, params.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(
            model, train_loader, optimizer, scaler, setup, flip_generator,
            loss_name=params.loss, pos_weight=pos_weight, crop_width=params.crop_width,
        )
        metrics = validate(model, val_loader, setup, params.pixel_threshold)
        scheduler.step(metrics["loss"])
        if params.average_best > 1:
            top.append((metrics["loss"], epoch, cpu_state(model)))
            top = sorted(top, key=lambda item: item[:2])[: params.average_best]
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
    averaged_epochs = sorted(e for _, e, _ in top) if len(top) > 1 else []
    if averaged_epochs:
        model.load_state_dict(average_states([state for _, _, state in top]))
        print(f"predicting with the average of epochs {averaged_epochs}")
    test_loader = make_loader(
        SteelSegDataset(test_dir, test_names, *size),
        params.batch_size, params.workers, device, shuffle_seed=None,
    )
    thresholds, min_sizes = class_pixel_thresholds(params), class_min_sizes(params)
    min_areas = class_min_areas(params)
    if params.tune_postprocess:
        val_loader = make_loader(
            SteelSegDataset(train_dir, val_ids, *size),
            params.batch_size, params.workers, device, shuffle_seed=None,
        )
        probs = full_size_probs(model, val_loader, setup, params.tta)
        del val_loader
        truth = np.stack(
            [decode_masks(defects.get(name, []), *IMAGE_SHAPE, source) for name in val_ids]
        )
        chosen = search_postprocess(
            probs, truth, prefer=(params.pixel_threshold, params.min_size, params.min_area)
        )
        del probs, truth
        (working / "postprocess.json").write_text(json.dumps(chosen, indent=2) + "\n")
        thresholds = tuple(chosen[str(c)]["pixel_threshold"] for c in CLASS_IDS)
        min_sizes = tuple(chosen[str(c)]["min_size"] for c in CLASS_IDS)
        min_areas = tuple(chosen[str(c)]["min_area"] for c in CLASS_IDS)
        print(
            "postprocess.json (tuned on the validation split): "
            + "; ".join(
                f"class {c}: threshold {chosen[str(c)]['pixel_threshold']}, "
                f"min size {chosen[str(c)]['min_size']}, min area {chosen[str(c)]['min_area']}, "
                f"dice {chosen[str(c)]['dice']:.4f}"
                for c in CLASS_IDS
            )
        )
    encoded = predict(model, test_loader, setup, thresholds, min_sizes, params.tta, min_areas)
    # model.pth ends as the segmenter these masks came from: the averaged weights when
    # averaging, and the post-processing applied, so an inference kernel predicts the same.
    final = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if averaged_epochs:
        final.pop("optimizer", None)
        final.update(state_dict=cpu_state(model), averaged_epochs=averaged_epochs)
    final["postprocess"] = {
        "pixel_thresholds": list(thresholds),
        "min_sizes": list(min_sizes),
        "min_areas": list(min_areas),
    }
    save_checkpoint(checkpoint, final)
    submission = fill_submission(sample, test_names, encoded)
    write_submission(submission, working / "submission.csv")
    frame = submission.frame
    filled = int((frame["EncodedPixels"] != "").sum())
    print(
        f"best validation loss {best_loss:.4f}; submission.csv: {len(test_names)} test images, "
        f"{filled} of {len(frame)} (image, class) masks non-empty ({sample.fmt} format)"
    )
