"""Stage 6's own pieces: the stage 4 checkpoint it loads and the submission it fills."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from kernelgen.build.modules import collect_modules
from kernelgen.runtime import InputError
from stages.lib.seg.checkpoint import load_segmenter, save_checkpoint
from stages.lib.seg.model import build_unet
from stages.lib.seg.postprocess import PostProcess
from stages.lib.submission import Submission, fill_submission
from stages.stage4_segmentation import Params as SegParams
from stages.stage6_inference import Params
from tests.stage_params import REPO


def test_the_checkpoint_gives_stage_4s_weights_and_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_unet(pretrained=False)
    params = SegParams(train_height=64, train_width=128, min_size=7, pixel_threshold=0.3, pretrained=False)
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"epoch": 1, "best_loss": 0.5, "state_dict": model.state_dict(), "params": asdict(params)})
    loaded = load_segmenter(path, torch.device("cpu"))
    assert (loaded.height, loaded.width, loaded.batch_size, loaded.tta, loaded.amp) == (64, 128, 16, "none", True)
    assert not loaded.model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)
    # Without a postprocess record, the parameters' own post-processing.
    assert loaded.post == PostProcess((0.3,) * 4, (7,) * 4, (0,) * 4)
    per_class = replace(params, min_sizes=(1, 2, 3, 4), min_areas=(5, 6, 7, 8), tta="h")
    save_checkpoint(path, {"state_dict": model.state_dict(), "params": asdict(per_class)})
    loaded = load_segmenter(path, torch.device("cpu"))
    assert loaded.post == PostProcess((0.3,) * 4, (1, 2, 3, 4), (5, 6, 7, 8)) and loaded.tta == "h"
    # With one, the post-processing stage 4 applied.
    record = {"pixel_thresholds": [0.4, 0.5, 0.6, 0.7], "min_sizes": [9, 8, 7, 6], "min_areas": [0, 1, 2, 3]}
    save_checkpoint(path, {"state_dict": model.state_dict(), "params": asdict(params), "postprocess": record})
    assert load_segmenter(path, torch.device("cpu")).post == PostProcess((0.4, 0.5, 0.6, 0.7), (9, 8, 7, 6), (0, 1, 2, 3))


def test_a_checkpoint_from_before_the_network_options_loads(tmp_path: Path) -> None:
    """Stage 4 checkpoints saved before encoder, decoder, tta and the area filter existed
    (and with the per-class options as strings, empty) load as the UNet-ResNet18 they are."""
    model = build_unet(pretrained=False)
    old = {k: v for k, v in asdict(SegParams(pretrained=False)).items()
           if k not in ("encoder", "decoder", "tta", "min_area", "min_areas")}
    old.update(pixel_thresholds="", min_sizes="")
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"state_dict": model.state_dict(), "params": old})
    loaded = load_segmenter(path, torch.device("cpu"))
    assert loaded.tta == "none" and loaded.post == PostProcess((0.5,) * 4, (3500,) * 4, (0,) * 4)


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
    with pytest.raises(ValueError, match="classifier_tta must be one of none, h, hv, got 'v'"):
        Params(classifier_tta="v")
    with pytest.raises(ValueError, match=r"^class_thresholds must be empty or 4 values between 0 and 1, one per class, got \[0.5, 0.5\]$"):
        Params(class_thresholds=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"^class_thresholds must be empty or 4 values between 0 and 1, one per class, got '0\.5,0\.6,0\.7,0\.8'$"):
        Params(class_thresholds="0.5,0.6,0.7,0.8")
    assert Params(class_thresholds=(0.5, 0.6, 0.7, 0.8)).class_thresholds == (0.5, 0.6, 0.7, 0.8)
    assert Params().class_thresholds == ()


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_classify_scores_each_class_as_stage_1_does(tmp_path: Path) -> None:
    """A four-output classifier gives missing1..missing4 and their product, with stage 1's
    flips: the scores stage 3's thresholds were chosen on."""
    import keras
    import numpy as np

    from stages.lib.classifier import classifier_image_dataset, predict_scores
    from stages.stage6_inference import classify
    from stages.synth import generate

    data = generate(tmp_path / "data", n_train=2, n_test=5, seed=3)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="sigmoid"),
        ]
    )
    model.save(tmp_path / "model.h5")
    test_dir = data.competition_dir / "test_images"
    names = sorted(p.name for p in test_dir.iterdir())
    scores = classify(tmp_path / "model.h5", test_dir, names, 2, "h")
    assert list(scores.index) == names
    assert list(scores.columns) == ["allMissing", "missing1", "missing2", "missing3", "missing4"]
    expected = predict_scores(model, classifier_image_dataset([test_dir / n for n in names], 32, 2), "h")
    np.testing.assert_allclose(scores.iloc[:, 1:].to_numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(scores["allMissing"], expected.prod(axis=1), atol=1e-9)


@pytest.mark.parametrize("module", sorted(p.stem for p in (REPO / "stages").glob("stage*.py")))
def test_stage_modules_import_the_library_not_each_other(module: str) -> None:
    """Stage 6 predicts with stage 4's parts and gates with stage 5's, from stages/lib."""
    found = collect_modules(f"stages.{module}", root=REPO, packages=("stages",), stage=0)
    carried = {unit.name for unit in found.modules}
    assert not {name for name in carried if name.startswith("stages.stage")}
    if module == "stage6_inference":
        assert {"stages.lib.seg.checkpoint", "stages.lib.seg.predict", "stages.lib.gates"} <= carried
