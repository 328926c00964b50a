"""Stage 4 (UNet-ResNet18 segmentation): data handling, outputs, learning, bad input.

Training runs use synthetic competition data at small training sizes, one
torch thread (the CI machine has 2 shared cores), and no pretrained weights.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from kernelgen.runtime import InputError, Layout
from kernelgen.spec.params import check_values
from stages.lib.folds import fold_split, stratified_folds
from stages.lib.metrics import mean_dice_rle
from stages.lib.rle import rle_decode, rle_encode
from stages.lib.seg.device import DeviceSetup, make_loader
from stages.lib.seg.ensemble import load_ensemble
from stages.lib.seg.model import build_unet
from stages.lib.seg.oof import SearchStats
from stages.lib.seg.postprocess import remove_small
from stages.lib.seg.predict import predict
from stages.lib.seg.train import random_flip
from stages.lib.seg.validate import pair_metrics
from stages.lib.segdata import (
    SteelSegDataset,
    check_images,
    decode_masks,
    list_images,
    resize_nearest,
)
from stages.lib.severstal import CLASS_IDS, COMPETITION
from stages.lib.submission import read_submission
from stages.lib.traincsv import read_train_csv
from stages.stage4_segmentation import Params, run
from stages.synth import SynthDataset, generate
from tests.stage_params import (
    assert_refused,
    assert_renderer_checks,
    params_alone,
    smoke_profile,
    source_of,
    stage_profile,
)

# Params as the kernel builds it (module imported) and as rendering does (module not run).
PARAMS_CLASSES = [
    pytest.param(Params, id="imported"),
    pytest.param(params_alone("stages.stage4_segmentation"), id="alone"),
]

# The learning run: 64x384 (defects of every class stay several pixels wide), batch 4 for
# more optimizer steps per image, and a plateau patience that cannot cut the learning
# rate on a dozen noisy validation images (patience 3 did, and learning stopped).
LEARN_PARAMS = Params(
    train_height=64,
    train_width=384,
    batch_size=4,
    accumulate_to=4,
    epochs=14,
    lr=1e-3,
    lr_patience=100,
    pretrained=False,
    workers=0,
)
# Required lead of the learned submission over the all-empty one (competition metric).
LEARN_MARGIN = 0.02


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: two threads on two busy cores run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smoke_params() -> Params:
    """The `smoke` profile of kernel-metadata/stage4.toml applied to the defaults."""
    return replace(Params(), **smoke_profile(4))


@dataclass(frozen=True)
class TrainedRun:
    data: SynthDataset
    working: Path
    log: str


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedRun]:
    """One training run shared by the output and learning tests."""
    base = tmp_path_factory.mktemp("stage4-learn")
    data = generate(base / "data", n_train=64, n_test=24, seed=3)
    working = base / "working"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        run(LEARN_PARAMS, Layout(data.root, working))
    torch.set_num_threads(before)
    yield TrainedRun(data, working, log.getvalue())


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> SynthDataset:
    return generate(tmp_path_factory.mktemp("stage4-small") / "data", n_train=8, n_test=3, seed=1)


@pytest.fixture
def data_copy(small_data: SynthDataset, tmp_path: Path) -> Path:
    """A private copy of the small dataset to break in one test."""
    root = tmp_path / "root"
    shutil.copytree(small_data.root, root)
    return root


# ---------------------------------------------------------------------------------------
# Pure pieces


def holdout_split_before_folds(
    names: list[str], strata: list[int], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Stage 4's 80/20 split as it was made before it had folds (the 2019 rule, kept here
    as the reference that fold 0 of 5 must reproduce)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(strata)
    values, counts = np.unique(labels, return_counts=True)
    n_val = int(np.ceil(len(names) * val_fraction - 1e-9))
    exact = counts * (n_val / max(len(names), 1))
    take = np.floor(exact).astype(np.int64)
    remainder = exact - take
    order = np.lexsort((rng.random(values.size), -remainder))
    for index in order[: n_val - int(take.sum())]:
        take[index] += 1
    val_mask = np.zeros(len(names), dtype=bool)
    for value, count in zip(values, take, strict=True):
        members = np.flatnonzero(labels == value)
        val_mask[rng.permutation(members)[:count]] = True
    return [n for n, v in zip(names, val_mask, strict=True) if not v], [n for n, v in zip(names, val_mask, strict=True) if v]


def test_fold_0_of_5_is_the_80_20_split_stage_4_made_before_folds() -> None:
    rng = np.random.default_rng(17)
    cases = [(12568, [5902, 6239, 425, 2], 69)]  # the real train set's strata, the default seed
    cases += [(0, rng.integers(1, 60, int(rng.integers(1, 5))).tolist(), int(rng.integers(2**32))) for _ in range(200)]
    for _, counts, seed in cases:
        strata = np.repeat(np.arange(len(counts)), counts)
        strata = rng.permutation(strata).tolist()
        names = [f"{i:05d}.jpg" for i in range(len(strata))]
        assert fold_split(names, strata, 0, 5, seed) == holdout_split_before_folds(names, strata, 0.2, seed)


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_folds_partition_the_images_and_keep_each_stratum_share(n_folds: int) -> None:
    names = [f"{i:03d}.jpg" for i in range(103)]
    strata = [0] * 50 + [1] * 40 + [2] * 10 + [3] * 3
    splits = [fold_split(names, strata, fold, n_folds, seed=69) for fold in range(n_folds)]
    vals = [val for _, val in splits]
    assert sorted(name for val in vals for name in val) == names  # each image validated once
    for train, val in splits:
        assert sorted(train + val) == names and not set(train) & set(val)
    sizes = sorted(len(val) for val in vals)
    assert sizes[-1] - sizes[0] <= 1
    by_name = dict(zip(names, strata, strict=True))
    for val in vals:
        for value, count in zip((0, 1, 2, 3), (50, 40, 10, 3), strict=True):
            in_val = sum(by_name[n] == value for n in val)
            assert abs(in_val - count * len(val) / 103) < 1.0
    assert [fold_split(names, strata, f, n_folds, seed=69) for f in range(n_folds)] == splits
    assert fold_split(names, strata, 0, n_folds, seed=70)[1] != vals[0]
    assert list(stratified_folds(strata, n_folds, 69)).count(n_folds - 1) == len(vals[-1])


def test_remove_small_keeps_only_regions_larger_than_min_size() -> None:
    masks = np.zeros((2, 4, 256, 1600), dtype=bool)
    masks[0, 0, :35, :100] = True  # exactly 3500 pixels: dropped
    masks[0, 1, :35, :100] = True
    masks[0, 1, 35, 100] = True  # touches diagonally: 3501 pixels with 8-connectivity, kept
    masks[1, 2, 100:110, 200:210] = True  # small: dropped
    masks[1, 3, :, :20] = True  # 5120 pixels: kept
    masks[1, 2, :, :20] = True  # same place in another class plane: labelled separately
    kept = remove_small(masks, 3500)
    assert not kept[0, 0].any()
    assert kept[0, 1].sum() == 3501
    assert kept[1, 3].sum() == 5120
    assert kept[1, 2].sum() == 5120 and not kept[1, 2, 100:110, 200:210].any()
    assert kept.sum() == 3501 + 5120 + 5120


def test_pair_metrics_score_pairs_like_the_competition() -> None:
    # pairs: perfect positive, half-overlap positive, empty-empty, false positive
    inter = torch.tensor([[10.0, 5.0], [0.0, 0.0]])
    pred = torch.tensor([[10.0, 10.0], [0.0, 7.0]])
    truth = torch.tensor([[10.0, 10.0], [0.0, 0.0]])
    m = pair_metrics(inter, pred, truth)
    assert m["dice_pos"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["dice_neg"] == pytest.approx(0.5)
    assert m["dice"] == pytest.approx((1.0 + 0.5 + 1.0 + 0.0) / 4)
    assert m["iou"] == pytest.approx((1.0 + 5 / 15 + 1.0 + 0.0) / 4)


def test_masks_decode_per_class_and_resize_nearest() -> None:
    full = np.zeros((256, 1600), dtype=bool)
    full[64:128, 400:800] = True
    masks = decode_masks([(3, rle_encode(full))], 64, 400)
    assert masks.shape == (4, 64, 400) and masks.dtype == np.uint8
    assert not masks[[0, 1, 3]].any()
    assert masks[2].sum() == 16 * 100 and masks[2, 16:32, 100:200].all()
    same = decode_masks([(1, rle_encode(full))], 256, 1600)
    assert np.array_equal(same[0].astype(bool), full)
    assert resize_nearest(np.eye(4)[None], 2, 2).tolist() == [[[1.0, 0.0], [0.0, 1.0]]]


def test_flip_moves_image_and_masks_together() -> None:
    images = torch.arange(8 * 3 * 2 * 5, dtype=torch.uint8).view(8, 3, 2, 5)
    masks = images[:, :1].clone().expand(8, 4, 2, 5).contiguous()
    out_images, out_masks = random_flip(images, masks, torch.Generator().manual_seed(0))
    flipped = (out_images != images).flatten(1).any(1)
    assert 0 < int(flipped.sum()) < 8
    assert torch.equal(out_images[flipped], images[flipped].flip(-1))
    assert torch.equal(out_masks[:, 0], out_images[:, 0])


def test_image_check_names_the_file(tmp_path: Path) -> None:
    Image.new("RGB", (1600, 256)).save(tmp_path / "good.jpg")
    check_images(tmp_path, ["good.jpg"])
    Image.new("RGB", (800, 256)).save(tmp_path / "narrow.jpg")
    with pytest.raises(InputError, match=r"narrow\.jpg: image is 800x256"):
        check_images(tmp_path, ["good.jpg", "narrow.jpg"])


# ---------------------------------------------------------------------------------------
# Outputs and learning (one training run)


@pytest.mark.slow
def test_outputs_and_formats(learned: TrainedRun) -> None:
    working = learned.working
    history = pd.read_csv(working / "history.csv")
    assert list(history["epoch"]) == list(range(1, LEARN_PARAMS.epochs + 1))
    best_dice = float(history.loc[history["val_loss"].idxmin(), "dice"])
    assert json.loads((working / "metrics.json").read_text()) == {"val_dice": pytest.approx(best_dice)}
    for column in ("lr", "train_loss", "val_loss", "dice", "dice_pos", "dice_neg", "iou"):
        assert column in history.columns
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]
    for name in ("segmentation_loss.png", "segmentation_dice_iou.png", "segmentation_lr.png"):
        with Image.open(working / name) as image:
            assert image.format == "PNG"

    checkpoint = torch.load(working / "model.pth", map_location="cpu", weights_only=False)
    assert set(checkpoint) >= {"epoch", "best_loss", "state_dict", "optimizer"}
    best = history.loc[history["val_loss"].idxmin()]
    assert checkpoint["epoch"] == int(best["epoch"])
    assert checkpoint["best_loss"] == pytest.approx(float(best["val_loss"]))
    model = build_unet(pretrained=False)
    model.load_state_dict(checkpoint["state_dict"])
    optimizer = torch.optim.Adam(model.parameters())
    optimizer.load_state_dict(checkpoint["optimizer"])

    # The submission comes from the saved (best) weights, not the last epoch's.
    folder = learned.data.competition_dir / "test_images"
    names = list_images(folder)
    cpu = torch.device("cpu")
    loader = make_loader(
        SteelSegDataset(folder, names, LEARN_PARAMS.train_height, LEARN_PARAMS.train_width),
        4, 0, cpu, shuffle_seed=None,
    )
    setup = DeviceSetup.create(cpu, LEARN_PARAMS.amp)
    again = predict(model, loader, setup, LEARN_PARAMS.pixel_threshold, LEARN_PARAMS.min_size)
    written = read_submission(working / "submission.csv").frame
    expected = dict(zip(names, again, strict=True))
    rows = zip(written["ImageId"], written["ClassId"], written["EncodedPixels"], strict=True)
    assert all(rle == expected[name][cls - 1] for name, cls, rle in rows)

    sample = read_submission(learned.data.competition_dir / "sample_submission.csv")
    sub = read_submission(working / "submission.csv")
    assert sub.fmt == sample.fmt == "new"
    header = (working / "submission.csv").read_text().splitlines()[0]
    assert header == "ImageId,EncodedPixels,ClassId"
    assert sub.frame[["ImageId", "ClassId"]].equals(sample.frame[["ImageId", "ClassId"]])
    structure = np.ones((3, 3), dtype=bool)
    for rle in sub.frame["EncodedPixels"]:
        mask = rle_decode(rle)  # full 256x1600 masks although training ran at 32x192
        labels, count = ndimage.label(mask, structure=structure)
        assert (np.bincount(labels.ravel())[1:] > LEARN_PARAMS.min_size).all()
        assert count == 0 or mask.sum() > LEARN_PARAMS.min_size


@pytest.mark.slow
def test_network_drawing_or_one_line_saying_why(learned: TrainedRun) -> None:
    svg = learned.working / "Unet_visualization.svg"
    try:
        import torchviz  # noqa: F401
    except ImportError:
        lines = [x for x in learned.log.splitlines() if x.startswith("Unet_visualization.svg")]
        assert lines == ["Unet_visualization.svg not drawn: torchviz is not installed "
                         "(pip install torchviz)"]
        assert not svg.exists()
    else:
        assert svg.exists() or "graphviz failed" in learned.log


@pytest.mark.slow
def test_segmenter_beats_all_empty_on_unseen_images(learned: TrainedRun) -> None:
    truth = read_train_csv(learned.data.test_truth)
    learned_sub = read_submission(learned.working / "submission.csv").frame
    empty_sub = learned_sub.assign(EncodedPixels="")
    learned_score = mean_dice_rle(learned_sub, truth)
    empty_score = mean_dice_rle(empty_sub, truth)
    print(f"learned {learned_score:.4f} vs all-empty {empty_score:.4f}")
    assert learned_score >= empty_score + LEARN_MARGIN


# ---------------------------------------------------------------------------------------
# Smoke profile


def test_smoke_profile_names_only_parameters() -> None:
    assert set(smoke_profile(4)) <= {f.name for f in fields(Params)}
    assert smoke_params().pretrained is False and smoke_params().workers == 0


@pytest.mark.slow
def test_smoke_profile_run_with_old_format(tmp_path: Path) -> None:
    data = generate(tmp_path / "data", n_train=24, n_test=6, seed=5, fmt="old")
    working = tmp_path / "working"
    run(smoke_params(), Layout(data.root, working))
    sub = read_submission(working / "submission.csv")
    assert sub.fmt == "old"
    assert (working / "submission.csv").read_text().startswith("ImageId_ClassId,EncodedPixels\n")
    assert len(sub.frame) == 6 * 4
    assert len(pd.read_csv(working / "history.csv")) == smoke_params().epochs
    assert (working / "model.pth").is_file()


@pytest.mark.slow
def test_tuned_postprocessing_is_written_and_applied(small_data: SynthDataset, tmp_path: Path) -> None:
    """tune_postprocess: postprocess.json holds one entry per class and the test masks obey it."""
    working = tmp_path / "working"
    params = replace(smoke_params(), epochs=1, tune_postprocess=True)
    run(params, Layout(small_data.root, working))
    chosen = json.loads((working / "postprocess.json").read_text())
    assert set(chosen) == {"1", "2", "3", "4"}
    for entry in chosen.values():
        assert 0 < entry["pixel_threshold"] < 1 and entry["min_size"] >= 0 and entry["min_area"] >= 0
        assert 0 <= entry["dice"] <= 1
    sub = read_submission(working / "submission.csv").frame
    structure = np.ones((3, 3), dtype=bool)
    for class_id, rle in zip(sub["ClassId"], sub["EncodedPixels"], strict=True):
        mask = rle_decode(rle)
        labels, _ = ndimage.label(mask, structure=structure)
        assert (np.bincount(labels.ravel())[1:] > chosen[str(class_id)]["min_size"]).all()
        assert not mask.any() or mask.sum() >= chosen[str(class_id)]["min_area"]


@pytest.mark.slow
def test_training_options_run_end_to_end(small_data: SynthDataset, tmp_path: Path) -> None:
    """bce_dice with pos_weight, crops, FPN, averaging of the best 2 epochs, h/v TTA and
    tuned post-processing; stage 6, loading model.pth, predicts stage 4's masks exactly."""
    working = tmp_path / "working"
    params = replace(
        smoke_params(), epochs=2, loss="bce_dice", pos_weight=(2.0, 2.0, 1.0, 1.5), crop_width=96,
        decoder="fpn", average_best=2, tta="hv", tune_postprocess=True,
    )
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        run(params, Layout(small_data.root, working))
    assert "predicting with the average of epochs [1, 2]" in log.getvalue()
    saved = torch.load(working / "model.pth", map_location="cpu", weights_only=True)
    assert saved["averaged_epochs"] == [1, 2] and "optimizer" not in saved
    chosen = json.loads((working / "postprocess.json").read_text())
    assert saved["postprocess"] == {
        "pixel_thresholds": [chosen[str(c)]["pixel_threshold"] for c in CLASS_IDS],
        "min_sizes": [chosen[str(c)]["min_size"] for c in CLASS_IDS],
        "min_areas": [chosen[str(c)]["min_area"] for c in CLASS_IDS],
    }
    # The search's statistics on the 2 validation images (fold 0 of 5 of 8) choose it again.
    search = SearchStats.from_record(saved["search"])
    assert search.images == 2 and search.chosen() == chosen
    sub = read_submission(working / "submission.csv").frame
    assert len(sub) == 3 * 4

    test_dir = small_data.competition_dir / "test_images"
    names = list(dict.fromkeys(sub["ImageId"]))
    ensemble = load_ensemble([working / "model.pth"], torch.device("cpu"))
    encoded = ensemble.segment(test_dir, names, 0, torch.device("cpu"))
    again = [rle for row in encoded for rle in row]
    assert again == [
        sub[(sub["ImageId"] == n) & (sub["ClassId"] == c)]["EncodedPixels"].item() for n in names for c in CLASS_IDS
    ]


# ---------------------------------------------------------------------------------------
# Bad input: one InputError naming the file, nothing written


def _run_expecting(root: Path, match: str, params: Params | None = None) -> None:
    working = root / "working"
    with pytest.raises(InputError, match=match) as info:
        run(params or replace(smoke_params(), epochs=1), Layout(root, working))
    assert "\n" not in str(info.value)
    assert not working.exists() or not any(working.iterdir())


def test_wrong_size_image(data_copy: Path) -> None:
    folder = data_copy / "input" / COMPETITION / "train_images"
    victim = sorted(folder.iterdir())[2]
    Image.new("RGB", (1600, 200)).save(victim, format="JPEG")
    _run_expecting(data_copy, rf"{victim.name}: image is 1600x200")


def test_unreadable_test_image(data_copy: Path) -> None:
    folder = data_copy / "input" / COMPETITION / "test_images"
    victim = sorted(folder.iterdir())[0]
    victim.write_bytes(b"not a jpeg at all")
    _run_expecting(data_copy, rf"{victim.name}: not a readable image")


def test_train_csv_row_for_missing_image(data_copy: Path) -> None:
    comp = data_copy / "input" / COMPETITION
    with (comp / "train.csv").open("a") as handle:
        handle.write("0000nothere.jpg,3,1 10\n")
    _run_expecting(data_copy, r"train\.csv: defect rows for 1 image\(s\) not in train_images")


def test_empty_test_set(data_copy: Path) -> None:
    folder = data_copy / "input" / COMPETITION / "test_images"
    for path in folder.iterdir():
        path.unlink()
    _run_expecting(data_copy, r"test_images: no images")


def test_test_image_listed_but_missing(data_copy: Path) -> None:
    folder = data_copy / "input" / COMPETITION / "test_images"
    victim = sorted(folder.iterdir())[1]
    victim.unlink()
    _run_expecting(data_copy, rf"{victim.name}: image file not found")


def test_missing_train_csv(data_copy: Path) -> None:
    (data_copy / "input" / COMPETITION / "train.csv").unlink()
    _run_expecting(data_copy, r"train\.csv")


def test_more_folds_than_images_is_refused(data_copy: Path) -> None:
    _run_expecting(
        data_copy, r"8 train images are too few for 9 folds \(fold 8 would have no validation image\)",
        replace(smoke_params(), epochs=1, fold=8, n_folds=9),
    )


def test_unreachable_pretrained_weights_say_how_to_go_on(
    data_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    _run_expecting(
        data_copy,
        r"ImageNet weights .* could not be fetched .*pretrained=false",
        replace(smoke_params(), pretrained=True),
    )


# ---------------------------------------------------------------------------------------
# Parameters: checked when Params is built, at render time and in the kernel

MULTIPLE = "must be a positive multiple of 32 (the encoder halves it five times)"


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("train_width", 400, MULTIPLE),
        ("train_width", 0, MULTIPLE),
        ("train_width", -32, MULTIPLE),
        ("train_height", 250, MULTIPLE),
        ("train_height", 16, MULTIPLE),
        ("batch_size", 0, "must be at least 1"),
        ("accumulate_to", 0, "must be at least 1"),
        ("accumulate_to", -32, "must be at least 1"),
        ("epochs", 0, "must be at least 1"),
        ("epochs", -2, "must be at least 1"),
        ("lr", 0.0, "must be positive"),
        ("lr", -5e-4, "must be positive"),
        ("lr", math.nan, "must be positive"),
        ("lr_patience", -1, "must be at least 0"),
        ("min_size", -1, "must be at least 0"),
        ("min_area", -1, "must be at least 0"),
        ("workers", -1, "must be at least 0"),
        ("pixel_threshold", 0.0, "must be between 0 and 1 (exclusive)"),
        ("pixel_threshold", 1.0, "must be between 0 and 1 (exclusive)"),
        ("pixel_threshold", 50.0, "must be between 0 and 1 (exclusive)"),
        ("pixel_threshold", math.nan, "must be between 0 and 1 (exclusive)"),
        ("seed", -1, "must be between 0 and 18446744073709551615"),
        ("seed", 2**64, "must be between 0 and 18446744073709551615"),
        ("n_folds", 1, "must be at least 2"),
        ("n_folds", 0, "must be at least 2"),
        ("fold", 5, "must be between 0 and n_folds - 1 (4)"),
        ("fold", -1, "must be between 0 and n_folds - 1 (4)"),
    ],
)
def test_bad_parameter_is_refused_naming_it(
    params: type, name: str, value: object, rule: str
) -> None:
    assert_refused(params, name, value, rule)


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("train_height", 32),
        ("train_width", 32),
        ("train_width", 1600),
        ("batch_size", 1),
        ("accumulate_to", 1),
        ("epochs", 1),
        ("lr", 1e-9),
        ("lr_patience", 0),
        ("min_size", 0),
        ("min_area", 0),
        ("workers", 0),
        ("pixel_threshold", 0.01),
        ("pixel_threshold", 0.99),
        ("seed", 0),
        ("fold", 4),
        ("n_folds", 2),
    ],
)
def test_edge_values_are_accepted(params: type, name: str, value: object) -> None:
    assert getattr(params(**{name: value}), name) == value


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_defaults_and_smoke_profile_are_accepted(params: type) -> None:
    assert asdict(params()) == asdict(Params())
    assert asdict(params(**smoke_profile(4))) == asdict(smoke_params())


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_best_profile_is_accepted_and_turns_on_the_levers(params: type) -> None:
    best = stage_profile(4, "best")
    assert set(best) <= {f.name for f in fields(Params)}
    built = params(**best)
    assert built.tune_postprocess is True
    assert asdict(built)["train_width"] == Params().train_width  # sizes stay the 2019 ones


@pytest.mark.parametrize("profile", ["full", "smoke", "best"])
def test_stage4_renders_with_every_builtin_profile(profile: str) -> None:
    """Parameter names may not clash with the module's top-level names, in any profile."""
    from kernelgen.spec.config import Config
    from kernelgen.spec.pipeline import load_pipeline
    from kernelgen.spec.project import Project
    from tests.rendering import render

    project = Project(pipeline=load_pipeline(), config=Config())
    (kernel,) = render(project, [4], username="someone", profile=profile)
    assert "stage4.ipynb" in kernel.files


def test_per_class_options_render_as_lists_and_comma_strings_are_refused() -> None:
    from kernelgen.errors import ParameterError
    from kernelgen.spec.config import Config
    from kernelgen.spec.pipeline import load_pipeline
    from kernelgen.spec.project import Project
    from tests.rendering import render

    project = Project(pipeline=load_pipeline(), config=Config())
    sets = ["stage4.pixel_thresholds=[0.5,0.6,0.55,0.5]", "stage4.min_sizes=[600, 600, 1000, 2000]"]
    (kernel,) = render(project, [4], username="someone", sets=sets)
    text = kernel.files["stage4.ipynb"].decode()
    assert "pixel_thresholds = [0.5, 0.6, 0.55, 0.5]  # --set" in text
    assert "min_sizes = [600, 600, 1000, 2000]  # --set" in text
    assert "pos_weight = []  # default" in text
    (best,) = render(project, [4], username="someone", profile="best")
    assert "pos_weight = [2.0, 2.0, 1.0, 1.5]  # profile best" in best.files["stage4.ipynb"].decode()
    with pytest.raises(ParameterError, match=r"^stage 4: pixel_thresholds takes a list of float in brackets: "
                       r"pixel_thresholds=\[0.5, 0.6, 0.55, 0.5\]; got '0.5,0.6,0.55,0.5'$"):
        render(project, [4], username="someone", sets=["stage4.pixel_thresholds=0.5,0.6,0.55,0.5"])
    with pytest.raises(ParameterError, match=r"^stage 4: min_sizes must be empty or 4 integers of at least 0"):
        render(project, [4], username="someone", sets=["stage4.min_sizes=[600, 600, 1000]"])


def test_renderer_checks_values_with_this_params() -> None:
    assert_renderer_checks("stages.stage4_segmentation", 4, {"train_width": 400}, "train_width must be a positive multiple of 32")
    check_values(source_of("stages.stage4_segmentation"), stage_profile(4, "best"), 4)
    assert_renderer_checks(
        "stages.stage4_segmentation", 4, {"fold": 3, "n_folds": 3}, "fold must be between 0 and n_folds - 1 (2), got 3"
    )
