# %% [markdown]
# ## Prediction at full size
# Logits go back to 256x1600 (bilinear) before the sigmoid, whatever size the
# network ran at; then the threshold, the region and area filters and the RLE.
# An ensemble thresholds the mean of its models' probabilities, summed a batch
# at a time. For the post-processing search the probabilities themselves are
# handed on a batch at a time, as uint8.

# %%
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from stages.lib.rle import rle_encode
from stages.lib.seg.device import DeviceSetup, prepare_images
from stages.lib.seg.model import flip_logits
from stages.lib.seg.postprocess import drop_small_totals, remove_small
from stages.lib.severstal import IMAGE_SHAPE


def _full_size_logits(
    model: nn.Module, images: torch.Tensor, setup: DeviceSetup, tta: str
) -> torch.Tensor:
    return _to_full_size(flip_logits(model, prepare_images(images, setup), setup, tta))


def _to_full_size(logits: torch.Tensor) -> torch.Tensor:
    if tuple(logits.shape[-2:]) != IMAGE_SHAPE:
        logits = F.interpolate(logits, size=IMAGE_SHAPE, mode="bilinear", align_corners=False)
    return logits


def mean_probs(
    members: Sequence[tuple[nn.Module, str]], images: torch.Tensor, setup: DeviceSetup
) -> torch.Tensor:
    """The mean over `members` (model, flips) of each model's sigmoid map at 256x1600, its
    logits averaged over its flips first, as stage 4 predicts with one model. One batch's
    maps at a time: the sum is kept, never each model's."""
    x = prepare_images(images, setup)
    total = None
    for model, tta in members:
        probs = torch.sigmoid(_to_full_size(flip_logits(model, x, setup, tta)))
        total = probs if total is None else total.add_(probs)
    return total if len(members) == 1 else total.div_(len(members))


def full_size_probs(
    model: nn.Module, loader: DataLoader, setup: DeviceSetup, tta: str = "none"
) -> Iterator[np.ndarray]:
    """Per batch of `loader` (items may carry masks), the sigmoid maps at 256x1600 as
    uint8 holding round(255 p)."""
    model.eval()
    with torch.no_grad():
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            logits = _full_size_logits(model, images, setup, tta)
            yield torch.round(torch.sigmoid(logits) * 255).to(torch.uint8).cpu().numpy()


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
    return predict_mean([(model, tta)], loader, setup, threshold, min_size, min_area)


def predict_mean(
    members: Sequence[tuple[nn.Module, str]],
    loader: DataLoader,
    setup: DeviceSetup,
    threshold: "float | Sequence[float]",
    min_size: "int | Sequence[int]",
    min_area: "int | Sequence[int]" = 0,
) -> list[list[str]]:
    """`predict` with the mean probability of several (model, flips) members (`mean_probs`);
    with one member it is that model's prediction, bit for bit."""
    if np.ndim(threshold):
        threshold = torch.tensor(list(threshold), dtype=torch.float32).view(1, -1, 1, 1)
        threshold = threshold.to(setup.device)
    for model, _ in members:
        model.eval()
    encoded: list[list[str]] = []
    with torch.no_grad():
        for images in loader:
            masks = (mean_probs(members, images, setup) > threshold).cpu().numpy()
            kept = drop_small_totals(remove_small(masks, min_size), min_area)
            encoded.extend([rle_encode(plane) for plane in image] for image in kept)
    return encoded
