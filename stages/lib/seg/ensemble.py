# %% [markdown]
# ## An ensemble of stage 4's fold models
# Every fold's checkpoint is loaded; the ensemble predicts with the mean of the
# models' probabilities (each model's own flips averaged first) and then one
# post-processing. Each fold's checkpoint records its own: when every one also
# carries its search statistics, the statistics are added up and searched
# again, which chooses on the out-of-fold predictions of all the folds'
# validation images together; otherwise each class takes the median of the
# folds' thresholds, minimum sizes and minimum areas (the lower middle value for
# an even count, so each value is one a fold used). A single checkpoint keeps
# its own post-processing, so one model predicts exactly as stage 4 did.

# %%
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
import torch

from kernelgen.runtime import InputError
from stages.lib.seg.checkpoint import Segmenter, load_segmenter
from stages.lib.seg.device import DeviceSetup, make_loader
from stages.lib.seg.postprocess import PostProcess
from stages.lib.seg.predict import predict_mean
from stages.lib.segdata import SteelSegDataset


@dataclass(frozen=True)
class Ensemble:
    """Stage 4's models as they predict together: the input size they share, the first
    one's batch and precision, and the post-processing chosen for the mean (`rule` says
    how)."""

    segmenters: list[Segmenter]
    post: PostProcess
    rule: str

    @property
    def first(self) -> Segmenter:
        return self.segmenters[0]

    def segment(self, folder: Path, names: list[str], workers: int, device: torch.device) -> list[list[str]]:
        """Per image of `names` in `folder`, the RLE of each class from the mean of the
        models' probabilities; with one model, exactly as stage 4 predicts."""
        first = self.first
        setup = DeviceSetup.create(device, first.amp)
        members = [(s.model.to(memory_format=setup.memory_format), s.tta) for s in self.segmenters]
        loader = make_loader(
            SteelSegDataset(folder, names, first.height, first.width),
            first.batch_size, workers, device, shuffle_seed=None,
        )
        post = self.post
        return predict_mean(members, loader, setup, post.pixel_thresholds, post.min_sizes, post.min_areas)


def ensemble_of(segmenters: Sequence[Segmenter], paths: Sequence[Path] = ()) -> Ensemble:
    """The ensemble of `segmenters` (loaded from `paths`, named in errors); they must run at
    one input size, since they share each batch of images."""
    if not segmenters:
        raise ValueError("an ensemble needs at least one model")
    names = [str(path) for path in paths] or [f"model {i + 1}" for i in range(len(segmenters))]
    sizes = {(s.height, s.width) for s in segmenters}
    if len(sizes) > 1:
        shown = ", ".join(f"{name} {s.height}x{s.width}" for name, s in zip(names, segmenters, strict=True))
        raise InputError(f"stage 4's models must share one input size to predict together: {shown}")
    post, rule = ensemble_post(segmenters)
    return Ensemble(list(segmenters), post, rule)


def ensemble_post(segmenters: Sequence[Segmenter]) -> tuple[PostProcess, str]:
    """The post-processing of the mean of `segmenters`' probabilities, and one line on how
    it was chosen."""
    if len(segmenters) == 1:
        return segmenters[0].post, "the checkpoint's own"
    searches = [s.search for s in segmenters]
    if all(search is not None for search in searches) and len({s.grid() for s in searches}) == 1:
        combined = reduce(lambda a, b: a + b, searches)
        return (
            PostProcess.chosen(combined.chosen()),
            f"searched on the out-of-fold predictions of {combined.images} validation images "
            f"of {len(segmenters)} folds",
        )
    posts = [s.post for s in segmenters]
    return (
        PostProcess(
            tuple(float(v) for v in _lower_median([p.pixel_thresholds for p in posts])),
            tuple(int(v) for v in _lower_median([p.min_sizes for p in posts])),
            tuple(int(v) for v in _lower_median([p.min_areas for p in posts])),
        ),
        f"per class the median of {len(segmenters)} checkpoints' own",
    )


def _lower_median(rows: Sequence[Sequence[float]]) -> list:
    """Per column, the lower middle of the rows' values."""
    columns = np.sort(np.asarray(rows), axis=0)
    return columns[(len(rows) - 1) // 2].tolist()


def load_ensemble(paths: Sequence[Path], device: torch.device) -> Ensemble:
    """The checkpoints at `paths` (one per fold, in cell order) as one ensemble."""
    return ensemble_of([load_segmenter(path, device) for path in paths], paths)
