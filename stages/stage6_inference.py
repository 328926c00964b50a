# %% [markdown]
# # Stage 6: the code-competition inference kernel
# In a code competition Kaggle reruns the submission kernel with the hidden test
# set swapped into the competition input, internet off. So this kernel predicts
# every image of `test_images/` itself: stage 4's segmenter (`model.pth`) with
# stage 4's own `predict` and `remove_small` post-processing, then stage 5's
# `blank_confident_images` gate with stage 1's classifier (`model.h5`) and
# stage 3's threshold. On the same models, threshold and images its submission
# is stage 5's, row for row.

# %%
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import segmentation_models_pytorch  # noqa: F401  (torchvision must load before TensorFlow: the other order crashes)
import torch

from kernelgen.runtime import InputError, Layout
from stages.lib.classifier import (
    check_classifier_images,
    classifier_image_dataset,
    classifier_input_size,
    load_classifier,
)
from stages.lib.segdata import SteelSegDataset, check_images, list_images
from stages.lib.severstal import COMPETITION
from stages.lib.submission import fill_submission, read_submission, write_submission
from stages.stage4_segmentation import (
    DeviceSetup,
    build_unet,
    make_loader,
    pick_device,
    predict,
)
from stages.stage4_segmentation import Params as SegParams
from stages.stage5_submission import blank_confident_images


@dataclass(frozen=True)
class Params:
    """`threshold`: blank an image when its allMissing score is strictly above it
    (stage 3 chooses it in a chain run); `classifier_batch_size`: images per
    classifier batch; `workers`: data-loader processes for the segmenter (0 loads
    in the main process). The segmenter's input size, pixel threshold, minimum
    region size and batch size are the ones stage 4 trained and predicted with,
    read from the checkpoint, so the post-processing is stage 4's."""

    threshold: float = 0.947
    classifier_batch_size: int = 32
    workers: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.classifier_batch_size < 1:
            raise ValueError(f"classifier_batch_size must be at least 1, got {self.classifier_batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be at least 0, got {self.workers}")


# %% [markdown]
# ## Models
# The checkpoint carries stage 4's parameters beside the weights; they say at
# what size the network runs and how its output is post-processed.


# %%
def load_segmenter(path: Path, device: torch.device) -> tuple[torch.nn.Module, SegParams]:
    """Stage 4's best weights in a fresh UNet, and the parameters stage 4 ran with."""
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        seg_params = SegParams(**checkpoint["params"])
        model = build_unet(pretrained=False)
        model.load_state_dict(checkpoint["state_dict"])
    except InputError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise InputError(f"{path}: not a stage 4 checkpoint ({type(exc).__name__}: {first})") from None
    return model.to(device).eval(), seg_params


def segment(
    model: torch.nn.Module, seg_params: SegParams, test_dir: Path, names: list[str], workers: int, device: torch.device
) -> list[list[str]]:
    """Per image of `names`, the RLE of each class, exactly as stage 4 predicts."""
    setup = DeviceSetup.create(seg_params, device)
    model = model.to(memory_format=setup.memory_format)
    loader = make_loader(
        SteelSegDataset(test_dir, names, seg_params.train_height, seg_params.train_width),
        seg_params.batch_size, workers, device, shuffle_seed=None,
    )
    return predict(model, loader, setup, seg_params.pixel_threshold, seg_params.min_size)


def classify(model_path: Path, test_dir: Path, names: list[str], batch_size: int) -> pd.Series:
    """Stage 1's allMissing score for each image, indexed by ImageId."""
    paths = [test_dir / name for name in names]
    check_classifier_images(paths)
    model = load_classifier(model_path)
    size = classifier_input_size(model, model_path)
    data = classifier_image_dataset(paths, size, batch_size)
    scores = np.asarray(model.predict(data, verbose=0), dtype=np.float64).reshape(-1)
    if scores.shape[0] != len(names):
        raise RuntimeError(f"classifier returned {scores.shape[0]} scores for {len(names)} images")
    return pd.Series(scores, index=pd.Index(names, name="ImageId"), name="allMissing")


# %% [markdown]
# ## Run
# The images are those the sample submission lists; each must be in
# `test_images/`, which at scoring time holds the hidden test set.


# %%
def run(params: Params, layout: Layout) -> None:
    comp = layout.input(COMPETITION)
    test_dir = comp / "test_images"
    sample_path = layout.input_file(COMPETITION, "sample_submission.csv")
    segmenter_path = layout.input_file("stage4", "model.pth")
    classifier_path = layout.input_file("stage1", "model.h5")
    list_images(test_dir)
    sample = read_submission(sample_path)
    names = list(dict.fromkeys(sample.frame["ImageId"].astype(str).tolist()))
    if not names:
        raise InputError(f"{sample_path}: no test images listed (empty test set)")
    check_images(test_dir, names)

    device = pick_device()
    start = time.perf_counter()
    model, seg_params = load_segmenter(segmenter_path, device)
    encoded = segment(model, seg_params, test_dir, names, params.workers, device)
    seg_seconds = time.perf_counter() - start
    scores = classify(classifier_path, test_dir, names, params.classifier_batch_size)
    total = time.perf_counter() - start
    result, blanked = blank_confident_images(fill_submission(sample, names, encoded), scores, params.threshold)
    write_submission(result, layout.working / "submission.csv")
    filled = int((result.frame["EncodedPixels"] != "").sum())
    print(
        f"stage 6 on {device.type}: {len(names)} test images in {total:.1f} s "
        f"({len(names) / total:.2f} images/s; segmentation {seg_seconds:.1f} s); "
        f"blanked {blanked} (allMissing > {params.threshold}); "
        f"{filled} of {len(result.frame)} masks non-empty; {sample.fmt}-format submission.csv written"
    )
