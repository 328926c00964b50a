# %% [markdown]
# ## The network
# A UNet (or FPN) from segmentation_models_pytorch with one logit channel per
# defect class. Test-time augmentation averages its logits over flips, each
# flipped back first; weights are copied to the CPU to be kept or averaged.

# %%
from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
from torch import nn

from kernelgen.runtime import InputError
from stages.lib.seg.device import DeviceSetup
from stages.lib.severstal import CLASS_IDS


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


def flip_logits(model: nn.Module, x: torch.Tensor, setup: DeviceSetup, tta: str) -> torch.Tensor:
    """Float logits of `x`, averaged over the flips of `tta` ("none", "h" or "hv")."""
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


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights as contiguous CPU tensors, loadable anywhere.

    Always a copy: on CPU, `.to("cpu")` would return the live tensors, and the
    "best" weights would keep training.
    """
    return {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }


def average_states(states: "Sequence[dict[str, torch.Tensor]]") -> dict[str, torch.Tensor]:
    """The element-wise mean of several state dicts (integer buffers from the first)."""
    averaged = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            averaged[key] = torch.stack([state[key] for state in states]).mean(0)
        else:
            averaged[key] = first.clone()
    return averaged
