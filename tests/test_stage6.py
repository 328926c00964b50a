"""Stage 6's own pieces: the stage 4 checkpoint it loads and the submission it fills."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch

from kernelgen.runtime import InputError
from stages.lib.submission import Submission, fill_submission
from stages.stage4_segmentation import Params as SegParams
from stages.stage4_segmentation import build_unet, save_checkpoint
from stages.stage6_inference import Params, load_segmenter


def test_the_checkpoint_gives_stage_4s_weights_and_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_unet(pretrained=False)
    params = SegParams(train_height=64, train_width=128, min_size=7, pixel_threshold=0.3, pretrained=False)
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"epoch": 1, "best_loss": 0.5, "state_dict": model.state_dict(), "params": asdict(params)})
    loaded, seg_params = load_segmenter(path, torch.device("cpu"))
    assert seg_params == params
    assert not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"model\.pth: not a stage 4 checkpoint \(") as info:
        load_segmenter(path, torch.device("cpu"))
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="model file not found"):
        load_segmenter(tmp_path / "absent.pth", torch.device("cpu"))


def test_fill_puts_each_class_mask_on_its_row_in_the_sample_order() -> None:
    frame = pd.DataFrame(
        {"ImageId": ["b.jpg"] * 4 + ["a.jpg"] * 4, "ClassId": [1, 2, 3, 4] * 2, "EncodedPixels": [""] * 8}
    )
    sample = Submission(frame=frame, fmt="new")
    filled = fill_submission(sample, ["a.jpg", "b.jpg"], [["1 2", "", "", ""], ["", "", "5 6", ""]])
    assert filled.frame["EncodedPixels"].tolist() == ["", "", "5 6", "", "1 2", "", "", ""]
    assert filled.fmt == "new"


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        Params(threshold=1.5)
    with pytest.raises(ValueError, match="classifier_batch_size must be at least 1"):
        Params(classifier_batch_size=0)
