# %% [markdown]
# ## The checkpoint, `model.pth`
# Stage 4 saves its best epoch with the optimizer and its parameters; once the
# test images are predicted, the file becomes the segmenter those masks came
# from: the averaged weights when it averaged epochs, and the post-processing
# it applied (with, when it was searched, the search's statistics on the
# validation split, which an ensemble of folds adds up). An inference kernel that
# loads it predicts exactly what stage 4 did.

# %%
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kernelgen.runtime import InputError
from stages.lib.seg.model import build_unet
from stages.lib.seg.oof import SearchStats
from stages.lib.seg.postprocess import PostProcess, per_class

# Stage 4's behaviour before these parameters existed, for checkpoints saved then.
BEFORE_OPTIONS = {"encoder": "resnet18", "decoder": "unet", "tta": "none", "min_area": 0}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write beside the target and rename, so `model.pth` is always a whole checkpoint."""
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def record_prediction(
    path: Path,
    post: PostProcess,
    averaged_state: dict[str, torch.Tensor] | None = None,
    averaged_epochs: Sequence[int] = (),
    search: SearchStats | None = None,
) -> None:
    """Add the post-processing the test masks went through to the checkpoint at `path`,
    and the statistics it was searched on, if it was; when the masks came from averaged
    weights, those replace the best epoch's (and the optimizer, which belongs to no
    averaged state, goes)."""
    final = torch.load(path, map_location="cpu", weights_only=True)
    if averaged_state is not None:
        final.pop("optimizer", None)
        final.update(state_dict=averaged_state, averaged_epochs=list(averaged_epochs))
    final["postprocess"] = post.record()
    if search is not None:
        final["search"] = search.record()
    save_checkpoint(path, final)


@dataclass(frozen=True)
class Segmenter:
    """Stage 4's network as it predicted: the size it ran at, its batch, flips and
    precision, the post-processing of its masks and, when that was searched, the
    search's statistics on its validation split."""

    model: nn.Module
    height: int
    width: int
    batch_size: int
    tta: str
    amp: bool
    post: PostProcess
    search: SearchStats | None = None


def load_segmenter(path: Path, device: torch.device) -> Segmenter:
    """The weights stage 4 predicted with in a fresh network, and how it post-processed.

    A checkpoint without a `postprocess` record (stage 4 stopped before predicting)
    falls back to the post-processing its parameters name.
    """
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        settings = {**BEFORE_OPTIONS, **checkpoint["params"]}
        model = build_unet(False, settings["encoder"], settings["decoder"])
        model.load_state_dict(checkpoint["state_dict"])
        areas = per_class(settings.get("min_areas") or (), settings["min_area"])
        record = checkpoint.get("postprocess") or {
            "pixel_thresholds": per_class(settings.get("pixel_thresholds") or (), settings["pixel_threshold"]),
            "min_sizes": per_class(settings.get("min_sizes") or (), settings["min_size"]),
        }
        post = PostProcess(
            tuple(float(v) for v in record["pixel_thresholds"]),
            tuple(int(v) for v in record["min_sizes"]),
            tuple(int(v) for v in record.get("min_areas", areas)),
        )
        segmenter = Segmenter(
            model.to(device).eval(),
            height=int(settings["train_height"]),
            width=int(settings["train_width"]),
            batch_size=int(settings["batch_size"]),
            tta=str(settings["tta"]),
            amp=bool(settings["amp"]),
            post=post,
            search=SearchStats.from_record(checkpoint["search"]) if "search" in checkpoint else None,
        )
    except InputError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise InputError(f"{path}: not a stage 4 checkpoint ({type(exc).__name__}: {first})") from None
    return segmenter
