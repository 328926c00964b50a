# %% [markdown]
# ## Pictures beside the model
# The network's autograd graph (when torchviz and graphviz are there) and the
# learning curves by epoch: loss, validation Dice/IoU and the learning rate.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import nn

from stages.lib.seg.device import DeviceSetup

try:
    from torchviz import make_dot
except ImportError:  # optional: only the network drawing needs it
    make_dot = None


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
