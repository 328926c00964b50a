"""Stage 4 training and prediction options: loss, pos_weight, crops, networks, averaging, TTA.

Each test checks one option on a known case with tiny tensors or an untrained network at
64x64; nothing here trains.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from stages.lib.seg.device import DeviceSetup
from stages.lib.seg.model import average_states, build_unet, flip_logits
from stages.lib.seg.train import random_crop, segmentation_loss
from stages.lib.severstal import CLASS_IDS
from stages.stage4_segmentation import DECODERS, ENCODERS, N_CLASSES, TTAS, Params
from tests.stage_params import params_alone

PARAMS_CLASSES = [Params, params_alone("stages.stage4_segmentation")]


def test_bce_loss_on_a_known_case() -> None:
    logits = torch.zeros(1, 4, 2, 2)  # p = 0.5 everywhere
    targets = torch.zeros(1, 4, 2, 2)
    targets[0, 0] = 1.0  # class 1 all defect, others empty
    assert float(segmentation_loss(logits, targets)) == pytest.approx(math.log(2))
    # pos_weight multiplies the loss of defect pixels only: class 1's 4 of 16 pixels.
    weighted = segmentation_loss(logits, targets, pos_weight=(2.0, 1.0, 1.0, 1.0))
    assert float(weighted) == pytest.approx(math.log(2) * (4 * 2 + 12) / 16)
    assert float(segmentation_loss(logits, targets, pos_weight=())) == pytest.approx(math.log(2))


def test_bce_dice_loss_on_a_known_case() -> None:
    logits = torch.zeros(1, 4, 2, 2)
    targets = torch.zeros(1, 4, 2, 2)
    targets[0, 0] = 1.0
    # soft Dice per class, smoothed by 1: class 1 (2*2+1)/(2+4+1) = 5/7, others 1/(2+1).
    dice_loss = ((1 - 5 / 7) + 3 * (1 - 1 / 3)) / 4
    expected = 0.75 * math.log(2) + 0.25 * dice_loss
    assert float(segmentation_loss(logits, targets, "bce_dice")) == pytest.approx(expected)
    # A confident, correct prediction costs almost nothing.
    sure = torch.where(targets > 0, 20.0, -20.0)
    assert float(segmentation_loss(sure, targets, "bce_dice")) < 1e-6


def test_crop_has_the_asked_width_and_keeps_image_and_masks_aligned() -> None:
    images = torch.arange(2 * 3 * 4 * 64, dtype=torch.int64).view(2, 3, 4, 64) % 251
    images = images.to(torch.uint8)
    masks = (images[:, :1].repeat(1, 4, 1, 1) % 2).to(torch.uint8)
    generator = torch.Generator().manual_seed(0)
    cropped, cmasks = random_crop(images, masks, 32, generator)
    assert cropped.shape == (2, 3, 4, 32) and cmasks.shape == (2, 4, 4, 32)
    for i in range(2):
        starts = [s for s in range(33) if torch.equal(images[i, ..., s : s + 32], cropped[i])]
        assert starts, "a crop is a window of its image"
        assert torch.equal(masks[i, ..., starts[0] : starts[0] + 32], cmasks[i])
    same, _ = random_crop(images, masks, 64, generator)
    assert same is images


@pytest.mark.parametrize("tta", ["h", "hv"])
def test_tta_average_is_flip_consistent(tta: str) -> None:
    """The TTA prediction of a flipped image, flipped back, is the original's prediction."""
    torch.manual_seed(0)
    model = build_unet(False).eval()
    setup = DeviceSetup.create(torch.device("cpu"), amp=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = flip_logits(model, x, setup, "none")
        base = flip_logits(model, x, setup, tta)
        mirrored = flip_logits(model, x.flip(-1), setup, tta).flip(-1)
        assert torch.allclose(mirrored, base, atol=1e-5)
        if tta == "hv":
            upside = flip_logits(model, x.flip(-2), setup, tta).flip(-2)
            assert torch.allclose(upside, base, atol=1e-5)
        assert torch.equal(plain, model(x))
    assert not torch.allclose(plain, base, atol=1e-5)  # the untrained net is not symmetric


def test_the_values_params_checks_are_the_ones_the_library_takes() -> None:
    """Params checks against literal constants (rendering runs nothing else of the module):
    one value per class of the competition, and each offered TTA is a distinct flip set."""
    assert len(CLASS_IDS) == N_CLASSES
    torch.manual_seed(0)
    model = build_unet(False).eval()
    setup = DeviceSetup.create(torch.device("cpu"), amp=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs = [flip_logits(model, x, setup, tta) for tta in TTAS]
    assert all(not torch.allclose(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1 :])


def test_average_states_is_the_mean_of_the_weights() -> None:
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    mean = average_states([a, b])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and int(mean["n"]) == 5


@pytest.mark.parametrize("decoder", DECODERS)
def test_decoders_build_with_four_outputs(decoder: str) -> None:
    model = build_unet(False, "resnet18", decoder).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_every_offered_encoder_is_known_to_smp() -> None:
    from segmentation_models_pytorch.encoders import encoders

    assert set(ENCODERS) <= set(encoders)


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_option_values_are_checked(params: type) -> None:
    ok = params(loss="bce_dice", pos_weight=(2.0, 2.0, 1.0, 1.5), crop_width=256, encoder="resnet34",
                decoder="fpn", average_best=3, tta="hv")
    assert ok.crop_width == 256 and ok.pos_weight == (2.0, 2.0, 1.0, 1.5)
    bad = [
        ("loss", "dice", "loss must be one of bce, bce_dice, got 'dice'"),
        ("encoder", "resnet1", "encoder must be one of"),
        ("decoder", "pspnet", "decoder must be one of unet, fpn, got 'pspnet'"),
        ("tta", "v", "tta must be one of none, h, hv, got 'v'"),
        ("pos_weight", (2.0, 2.0, 1.0), "pos_weight must be empty or 4 positive numbers, one per class, got [2.0, 2.0, 1.0]"),
        ("pos_weight", (2.0, 2.0, 0.0, 1.0), "pos_weight must be empty or 4 positive numbers, one per class"),
        ("pos_weight", (2.0, 2.0, math.inf, 1.0), "pos_weight must be empty or 4 positive numbers, one per class"),
        ("pos_weight", "2,2,1,1.5", "pos_weight must be empty or 4 positive numbers, one per class, got '2,2,1,1.5'"),
        ("crop_width", 100, "crop_width must be 0 or a multiple of 32 up to train_width"),
        ("crop_width", 1632, "crop_width must be 0 or a multiple of 32 up to train_width"),
        ("average_best", 0, "average_best must be at least 1, got 0"),
    ]
    for name, value, message in bad:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
            params(**{name: value})
