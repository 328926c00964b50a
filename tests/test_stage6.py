"""Stage 6's own pieces: the stage 4 checkpoints it loads (one, or one per fold), the
ensemble's prediction and post-processing, and the submission it fills."""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kernelgen.build.modules import collect_modules
from kernelgen.runtime import InputError
from stages.lib.seg.checkpoint import Segmenter, load_segmenter, save_checkpoint
from stages.lib.seg.device import DeviceSetup, make_loader
from stages.lib.seg.ensemble import ensemble_of, ensemble_post
from stages.lib.seg.model import build_unet
from stages.lib.seg.oof import SearchStats
from stages.lib.seg.postprocess import PostProcess, drop_small_totals, remove_small
from stages.lib.seg.predict import mean_probs, predict, predict_mean
from stages.lib.seg.tune import TUNE_MIN_AREAS, TUNE_MIN_SIZES, TUNE_THRESHOLDS
from stages.lib.segdata import SteelSegDataset
from stages.lib.submission import Submission, fill_submission, read_submission
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
    assert loaded.search is None


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


# ---------------------------------------------------------------------------------------
# Several fold models: the mean of their probabilities, one post-processing

CPU = torch.device("cpu")
SMALL = SegParams(train_height=64, train_width=128, batch_size=2, min_size=0, pretrained=False, amp=False)


def fold_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unet(pretrained=False).eval()


def fold_segmenter(seed: int, post: PostProcess, search: SearchStats | None = None, tta: str = "none") -> Segmenter:
    return Segmenter(fold_model(seed), 64, 128, 2, tta, False, post, search)


def search_peaking_at(entries: dict[tuple[int, int, int], float], images: int) -> SearchStats:
    """Statistics whose Dice sums are 0 but at the given (threshold, size, area) indexes."""
    stats = SearchStats.from_maps(np.zeros((1, 4, 8, 8), np.float32), np.zeros((1, 4, 8, 8), bool))
    sums = np.zeros_like(stats.sums)
    for (t, m, a), value in entries.items():
        sums[:, t, m, a] = value
    return SearchStats(images, sums, stats.prefer)


@pytest.fixture(scope="module")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    from stages.synth import generate

    data = generate(tmp_path_factory.mktemp("stage6-ensemble") / "data", n_train=2, n_test=3, seed=4)
    folder = data.competition_dir / "test_images"
    return folder, sorted(p.name for p in folder.iterdir())


def test_the_mean_of_models_is_the_mean_of_each_ones_sigmoid_and_one_model_is_itself() -> None:
    setup = DeviceSetup.create(CPU, amp=False)
    images = torch.randint(0, 256, (2, 3, 64, 128), dtype=torch.uint8)
    a, b = fold_model(1), fold_model(2)
    with torch.no_grad():
        pa = mean_probs([(a, "none")], images, setup)
        pb = mean_probs([(b, "h")], images, setup)
        both = mean_probs([(a, "none"), (b, "h")], images, setup)
    assert pa.shape == (2, 4, 256, 1600)
    assert torch.allclose(both, (pa + pb) / 2, atol=1e-7)
    assert not torch.allclose(pa, pb, atol=1e-3)


def test_an_ensemble_of_one_model_predicts_bit_for_bit_as_that_model(test_images: tuple[Path, list[str]]) -> None:
    folder, names = test_images
    setup = DeviceSetup.create(CPU, amp=False)
    loader = make_loader(SteelSegDataset(folder, names, 64, 128), 2, 0, CPU, shuffle_seed=None)
    model = fold_model(3)
    alone = predict(model, loader, setup, (0.5, 0.5, 0.49, 0.51), (0, 10, 100, 0), "h", (0, 0, 50, 0))
    assert predict_mean([(model, "h")], loader, setup, (0.5, 0.5, 0.49, 0.51), (0, 10, 100, 0), (0, 0, 50, 0)) == alone
    assert any(rle for row in alone for rle in row)  # something was predicted, so it is a real comparison


def test_folds_with_search_statistics_are_post_processed_by_the_search_on_their_sum() -> None:
    """Fold A alone prefers entry X, fold B entry Y; their sum prefers Y, and each class
    takes Y's (threshold, size, area) from the grid."""
    x, y = (5, 0, 0), (4, 7, 2)  # indexes into the default grid
    fold_a = search_peaking_at({x: 2.0, y: 1.5}, images=3)
    fold_b = search_peaking_at({x: 0.5, y: 1.5}, images=2)
    def rule_at(t: int, m: int, a: int) -> PostProcess:
        return PostProcess((TUNE_THRESHOLDS[t],) * 4, (TUNE_MIN_SIZES[m],) * 4, (TUNE_MIN_AREAS[a],) * 4)

    own = rule_at(*x)
    assert PostProcess.chosen(fold_a.chosen()) == own
    post, rule = ensemble_post([fold_segmenter(1, own, fold_a), fold_segmenter(2, own, fold_b)])
    assert post == rule_at(*y) != own
    assert rule == "searched on the out-of-fold predictions of 5 validation images of 2 folds"


def test_folds_without_statistics_take_each_class_median() -> None:
    posts = [
        PostProcess((0.5, 0.6, 0.4, 0.5), (100, 3500, 0, 600), (0, 0, 900, 2000)),
        PostProcess((0.6, 0.4, 0.5, 0.5), (300, 0, 50, 600), (0, 600, 900, 0)),
        PostProcess((0.55, 0.7, 0.45, 0.5), (200, 800, 0, 600), (300, 0, 0, 0)),
        PostProcess((0.7, 0.3, 0.45, 0.5), (0, 100, 0, 600), (0, 0, 0, 0)),
    ]
    three, rule = ensemble_post([fold_segmenter(i, p) for i, p in enumerate(posts[:3])])
    assert three == PostProcess((0.55, 0.6, 0.45, 0.5), (200, 800, 0, 600), (0, 0, 900, 0))
    assert rule == "per class the median of 3 checkpoints' own"
    four, _ = ensemble_post([fold_segmenter(i, p) for i, p in enumerate(posts)])  # the lower middle
    assert four == PostProcess((0.55, 0.4, 0.45, 0.5), (100, 100, 0, 600), (0, 0, 0, 0))
    # One fold without statistics: the median rule, even if the others have them.
    stats = search_peaking_at({(4, 7, 2): 1.0}, images=1)
    mixed = [fold_segmenter(0, posts[0], stats), fold_segmenter(1, posts[1])]
    assert ensemble_post(mixed)[1] == "per class the median of 2 checkpoints' own"
    # A single checkpoint keeps its own, statistics or not.
    assert ensemble_post([fold_segmenter(0, posts[2], stats)]) == (posts[2], "the checkpoint's own")


def test_models_of_different_input_sizes_are_refused_in_one_line() -> None:
    post = PostProcess((0.5,) * 4, (0,) * 4, (0,) * 4)
    wide = Segmenter(fold_model(1), 64, 256, 2, "none", False, post)
    with pytest.raises(InputError, match=r"^stage 4's models must share one input size to predict together: "
                       r"a/model.pth 64x128, b/model.pth 64x256$"):
        ensemble_of([fold_segmenter(0, post), wide], [Path("a/model.pth"), Path("b/model.pth")])


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_stage6_predicts_with_every_fold_of_a_matrix_stage4(tmp_path: Path, test_images: tuple[Path, list[str]], capsys) -> None:
    """Stage 4 as a matrix of two folds, each with its checkpoint and search statistics:
    stage 6 loads both, thresholds the mean of their probabilities with the post-processing
    searched on the folds' summed statistics, and gates nothing at threshold 1."""
    import keras

    from kernelgen.runtime import Layout
    from stages.stage6_inference import run

    folder, names = test_images
    root = tmp_path / "kaggle"
    comp = root / "input" / "severstal-steel-defect-detection"
    shutil.copytree(folder.parent, comp)
    searches = [search_peaking_at({(5, 0, 0): 2.0, (4, 0, 0): 1.5}, 3), search_peaking_at({(5, 0, 0): 0.5, (4, 0, 0): 1.5}, 2)]
    for fold, search in enumerate(searches):
        model = fold_model(10 + fold)
        path = root / "input" / "stage4" / f"fold-{fold}" / "model.pth"
        path.parent.mkdir(parents=True)
        record = {"pixel_thresholds": [0.55] * 4, "min_sizes": [0] * 4, "min_areas": [0] * 4}
        save_checkpoint(path, {"state_dict": model.state_dict(), "params": asdict(replace(SMALL, fold=fold)),
                               "postprocess": record, "search": search.record()})
    (root / "input" / "stage1").mkdir(parents=True)
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    classifier.save(root / "input" / "stage1" / "model.h5")

    layout = Layout(root, matrix={"stage4": [{"fold": 0}, {"fold": 1}]})
    run(Params(threshold=1.0, workers=0), layout)
    out = capsys.readouterr().out
    assert "ensemble of 2 stage 4 models; post-processing searched on the out-of-fold predictions of 5 " \
           "validation images of 2 folds: pixel thresholds [0.5, 0.5, 0.5, 0.5]" in out

    models = [fold_model(10), fold_model(11)]
    setup = DeviceSetup.create(CPU, amp=False)
    loader = make_loader(SteelSegDataset(folder, names, 64, 128), 2, 0, CPU, shuffle_seed=None)
    with torch.no_grad():
        probs = torch.cat([(torch.sigmoid(_full(models[0], b, setup)) + torch.sigmoid(_full(models[1], b, setup))) / 2
                           for b in loader])
    expected = drop_small_totals(remove_small((probs > 0.5).numpy(), 0), 0)
    sub = read_submission(root / "working" / "submission.csv").frame
    from stages.lib.rle import rle_encode

    by_pair = {(n, c): rle_encode(expected[i, c - 1]) for i, n in enumerate(names) for c in (1, 2, 3, 4)}
    assert sub["EncodedPixels"].tolist() == [by_pair[(n, c)] for n, c in zip(sub["ImageId"], sub["ClassId"], strict=True)]
    assert (sub["EncodedPixels"] != "").any()


def _full(model: torch.nn.Module, images: torch.Tensor, setup: DeviceSetup) -> torch.Tensor:
    """One model's logits at 256x1600, written out here as stage 4's prediction makes them."""
    x = (images.float() - setup.pixel_mean) * setup.pixel_inv_std
    return torch.nn.functional.interpolate(model(x), size=(256, 1600), mode="bilinear", align_corners=False)
