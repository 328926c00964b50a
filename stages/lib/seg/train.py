# %% [markdown]
# ## Training
# Batches are flipped (and cropped) on the device, the loss is BCE with logits
# or, with `bce_dice`, mostly BCE plus a soft Dice term, and gradients are
# accumulated to the effective batch. The running loss stays on the device (no
# `.item()` per batch, so the GPU is never made to wait). After each epoch the
# model is validated, the learning rate follows the validation loss, and the
# best epoch so far is saved.

# %%
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from stages.lib.seg.checkpoint import save_checkpoint
from stages.lib.seg.device import DeviceSetup, grad_scaler, prepare_images
from stages.lib.seg.model import average_states, cpu_state
from stages.lib.seg.validate import validate

BCE_SHARE = 0.75  # bce_dice: 0.75 BCE + 0.25 soft Dice, as the 2019 winners did


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


def segmentation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: str = "bce",
    pos_weight: "Sequence[float] | None" = None,
) -> torch.Tensor:
    """BCE with logits (defect pixels of class c weighted pos_weight[c]; none or empty:
    weight 1) or, with "bce_dice", 0.75 of it plus 0.25 soft Dice loss (1 - Dice of the
    probabilities, per class over the batch, smoothed by 1, averaged over classes)."""
    weight = None
    if pos_weight:
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


@dataclass(frozen=True)
class Fitted:
    """What training leaves: the best epoch's validation loss and weights, the best
    epochs kept for averaging as (loss, epoch, weights), and one history row an epoch."""

    best_loss: float
    best_state: dict[str, torch.Tensor]
    top: list[tuple[float, int, dict[str, torch.Tensor]]]
    history: pd.DataFrame

    @property
    def averaged_epochs(self) -> list[int]:
        """The epochs whose weights are averaged for prediction; [] when the best is used alone."""
        return sorted(epoch for _, epoch, _ in self.top) if len(self.top) > 1 else []

    def averaged_state(self) -> dict[str, torch.Tensor]:
        return average_states([state for _, _, state in self.top])


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    setup: DeviceSetup,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    *,
    epochs: int,
    seed: int,
    checkpoint: Path,
    history: Path,
    loss: str = "bce",
    pos_weight: Sequence[float] = (),
    crop_width: int = 0,
    threshold: float = 0.5,
    keep: int = 1,
    record: Mapping[str, object] | None = None,
) -> Fitted:
    """Train `epochs` epochs, validating after each at pixel `threshold`.

    Each better validation loss saves `checkpoint` (weights, optimizer and `record`),
    so an interrupted run leaves its best model; `history` is rewritten every epoch for
    the same reason. With `keep` above 1 the weights of the best `keep` epochs are kept
    to be averaged. `seed` seeds the flips and crops.
    """
    scaler = grad_scaler(setup)
    flip_generator = setup.flip_generator(seed)
    best_loss, best_state = math.inf, cpu_state(model)
    top: list[tuple[float, int, dict[str, torch.Tensor]]] = []
    rows: list[dict] = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_epoch(
            model, train_loader, optimizer, scaler, setup, flip_generator,
            loss_name=loss, pos_weight=pos_weight, crop_width=crop_width,
        )
        metrics = validate(model, val_loader, setup, threshold)
        scheduler.step(metrics["loss"])
        if keep > 1:
            top.append((metrics["loss"], epoch, cpu_state(model)))
            top = sorted(top, key=lambda item: item[:2])[:keep]
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
                    **(record or {}),
                },
            )
        seconds = time.perf_counter() - start
        rows.append(
            {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": metrics["loss"],
             **{k: metrics[k] for k in ("dice", "dice_pos", "dice_neg", "iou")},
             "seconds": round(seconds, 2)}
        )
        pd.DataFrame(rows).to_csv(history, index=False)
        print(
            f"epoch {epoch}/{epochs} lr {lr:.2e} train {train_loss:.4f} "
            f"val {metrics['loss']:.4f} dice {metrics['dice']:.4f} "
            f"(pos {metrics['dice_pos']:.4f}, neg {metrics['dice_neg']:.4f}) "
            f"iou {metrics['iou']:.4f} {seconds:.1f}s" + (" *saved" if improved else "")
        )
    return Fitted(best_loss, best_state, top, pd.DataFrame(rows))
