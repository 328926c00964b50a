# %% [markdown]
# ## Validation
# Loss and the competition's per-(image, class) Dice at the training size. Pixel
# counts are gathered per pair on the device and every metric is computed from
# them in a few tensor operations, with no `.item()` per batch.

# %%
import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from stages.lib.seg.device import DeviceSetup, prepare_images


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
