"""Stage 1: labels and split, outputs and their formats, model reload, learning, bad input."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kernelgen.runtime import InputError, Layout
from stages.lib.classifier import RoundedBatchMetric, classifier_image_dataset
from stages.lib.scores import read_scores
from stages.lib.severstal import COMPETITION
from stages.lib.submission import read_submission
from stages.stage1_classifier import Params, run, split_validation, train_labels
from stages.synth import SynthDataset, generate
from tests.stage1_learning import LEARN, LEARN_DATA, auc, truth_labels
from tests.stage_params import (
    assert_refused,
    assert_renderer_checks,
    params_alone,
    smoke_profile,
)

# Keras' HDF5 writer trips a numpy 2 deprecation once per weight; it says nothing about us.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# Params as the kernel builds it (module imported) and as rendering does (module not run).
PARAMS_CLASSES = [
    pytest.param(Params, id="imported"),
    pytest.param(params_alone("stages.stage1_classifier"), id="alone"),
]
OUTPUTS = (
    "model.h5",
    "dense121_model.h5",
    "history.csv",
    "test_missing_count.csv",
    "split.csv",
    "learning_curve_loss.png",
    "learning_curve_accuracy.png",
    "learning_curve_f1_precision_recall.png",
    "learning_rate.png",
)


def smoke_params(**changes: object) -> Params:
    """The smoke profile of kernel-metadata/stage1.toml, so tests run what users run."""
    return Params(**{**smoke_profile(1), **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthDataset, Params]:
    """One training run of the image head, shared by the output tests and the learning test:
    they only read what it wrote."""
    data = generate(tmp_path_factory.mktemp("stage1") / "data", **LEARN_DATA)
    run(LEARN, Layout(data.root))
    return data, LEARN


@pytest.fixture
def tiny(tmp_path: Path) -> SynthDataset:
    """A small dataset for bad-input tests, which all stop before training."""
    return generate(tmp_path / "data", n_train=8, n_test=3, seed=1)


# ---------------------------------------------------------------------------------------
# Labels and split


def test_labels_mark_images_without_defect_rows(tiny: SynthDataset) -> None:
    table = train_labels(tiny.competition_dir)
    defects = pd.read_csv(tiny.competition_dir / "train.csv", dtype=str)
    files = sorted(p.name for p in (tiny.competition_dir / "train_images").iterdir())
    assert list(table["ImageId"]) == files
    expected = [0.0 if name in set(defects["ImageId"]) else 1.0 for name in files]
    assert list(table["allMissing"]) == expected
    assert 0 < sum(expected) < len(expected)


def test_labels_mark_each_class_the_image_lacks(tiny: SynthDataset) -> None:
    table = train_labels(tiny.competition_dir)
    defects = pd.read_csv(tiny.competition_dir / "train.csv", dtype=str)
    for class_id in (1, 2, 3, 4):
        present = set(defects.loc[defects["ClassId"] == str(class_id), "ImageId"])
        expected = [0.0 if name in present else 1.0 for name in table["ImageId"]]
        assert list(table[f"missing{class_id}"]) == expected
    # No defect at all exactly when every class is missing.
    every = table[[f"missing{c}" for c in (1, 2, 3, 4)]].min(axis=1)
    assert list(every) == list(table["allMissing"])


def test_labels_read_the_old_train_csv_format_the_same(tmp_path: Path) -> None:
    new = generate(tmp_path / "new", n_train=10, n_test=2, seed=3, fmt="new")
    old = generate(tmp_path / "old", n_train=10, n_test=2, seed=3, fmt="old")
    a = train_labels(new.competition_dir)
    b = train_labels(old.competition_dir)
    assert list(a["ImageId"]) == list(b["ImageId"])
    assert list(a["allMissing"]) == list(b["allMissing"])


def test_split_is_stratified_and_fixed_by_seed() -> None:
    labels = np.array([1.0] * 40 + [0.0] * 60)
    first = split_validation(labels, 0.15, seed=7)
    assert first.sum() == 15
    assert labels[first].sum() == 6  # 15% of each class
    assert np.array_equal(first, split_validation(labels, 0.15, seed=7))
    assert not np.array_equal(first, split_validation(labels, 0.15, seed=8))


# ---------------------------------------------------------------------------------------
# Parameters: checked when Params is built, at render time and in the kernel


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("image_size", 31, "must be at least 32 (DenseNet121 halves it five times)"),
        ("image_size", 0, "must be at least 32 (DenseNet121 halves it five times)"),
        ("batch_size", 0, "must be at least 1"),
        ("batch_size", -8, "must be at least 1"),
        ("epochs", 0, "must be at least 1"),
        ("epochs", -1, "must be at least 1"),
        ("validation_split", 0.0, "must be between 0 and 1 (exclusive)"),
        ("validation_split", 1.0, "must be between 0 and 1 (exclusive)"),
        ("validation_split", -0.15, "must be between 0 and 1 (exclusive)"),
        ("validation_split", 15.0, "must be between 0 and 1 (exclusive)"),
        ("validation_split", math.nan, "must be between 0 and 1 (exclusive)"),
        ("lr_patience", -1, "must be at least 0"),
        ("seed", -1, "must be between 0 and 4294967295"),
        ("seed", 2**32, "must be between 0 and 4294967295"),
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
        ("image_size", 32),
        ("batch_size", 1),
        ("epochs", 1),
        ("validation_split", 0.01),
        ("validation_split", 0.99),
        ("lr_patience", 0),
        ("seed", 0),
        ("seed", 2**32 - 1),
    ],
)
def test_edge_values_are_accepted(params: type, name: str, value: object) -> None:
    assert getattr(params(**{name: value}), name) == value


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_defaults_and_smoke_profile_are_accepted(params: type) -> None:
    assert asdict(params()) == asdict(Params())
    smoke = params(**smoke_profile(1))
    assert smoke.image_size == 64 and smoke.pretrained is False


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_head_is_image_or_class(params: type) -> None:
    assert params().head == "image" and params(head="class").head == "class"
    with pytest.raises(ValueError, match=r"^head must be one of image, class, got 'classes'$"):
        params(head="classes")


def test_renderer_checks_values_with_this_params() -> None:
    assert_renderer_checks("stages.stage1_classifier", 1, {"epochs": 0}, "epochs must be at least 1, got 0")


# ---------------------------------------------------------------------------------------
# Metrics


def test_rounded_batch_metrics_score_rounded_predictions() -> None:
    y_true = np.array([[1.0], [1.0], [0.0], [0.0]])
    y_pred = np.array([[0.9], [0.2], [0.7], [0.1]])  # one hit, one miss, one false alarm
    values = {}
    for kind in RoundedBatchMetric.KINDS:
        metric = RoundedBatchMetric(kind)
        metric.update_state(y_true, y_pred)
        values[kind] = float(metric.result())
    assert values["precision"] == pytest.approx(0.5, abs=1e-5)
    assert values["recall"] == pytest.approx(0.5, abs=1e-5)
    assert values["f1"] == pytest.approx(0.5, abs=1e-5)


# ---------------------------------------------------------------------------------------
# Outputs of one training run, and what it learned


@pytest.mark.slow
def test_a_run_writes_every_output(trained: tuple[SynthDataset, Params]) -> None:
    data, _ = trained
    working = data.root / "working"
    for name in OUTPUTS:
        assert (working / name).is_file(), name
        assert (working / name).stat().st_size > 0, name
    for name in OUTPUTS:
        if name.endswith(".png"):
            with Image.open(working / name) as image:
                assert image.format == "PNG"
    metrics = json.loads((working / "metrics.json").read_text())
    assert set(metrics) == {"val_auc", "val_accuracy"}
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert not list(working.glob("*.partial"))


@pytest.mark.slow
def test_split_lists_every_train_image_and_the_held_out_ones(
    trained: tuple[SynthDataset, Params],
) -> None:
    data, params = trained
    split = pd.read_csv(data.root / "working" / "split.csv", dtype={"ImageId": str})
    assert list(split.columns) == ["ImageId", "validation"]
    labels = train_labels(data.competition_dir)
    assert list(split["ImageId"]) == list(labels["ImageId"])
    expected = split_validation(labels["allMissing"].to_numpy(), params.validation_split, params.seed)
    assert list(split["validation"]) == [int(v) for v in expected]


@pytest.mark.slow
def test_history_has_one_row_per_epoch_with_metrics_and_rate(
    trained: tuple[SynthDataset, Params],
) -> None:
    data, params = trained
    history = pd.read_csv(data.root / "working" / "history.csv")
    assert list(history["epoch"]) == list(range(1, params.epochs + 1))
    for metric in ("loss", "accuracy", "f1", "precision", "recall"):
        assert metric in history and f"val_{metric}" in history, metric
    assert history["learning_rate"].iloc[0] == pytest.approx(1e-3)
    assert history.notna().all().all()


@pytest.mark.slow
def test_test_scores_cover_every_test_image_by_jpg_name(
    trained: tuple[SynthDataset, Params],
) -> None:
    data, _ = trained
    path = data.root / "working" / "test_missing_count.csv"
    frame = pd.read_csv(path, dtype={"ImageId": str})
    assert list(frame.columns) == ["ImageId", "allMissing"]
    sample = read_submission(data.competition_dir / "sample_submission.csv")
    expected = list(pd.unique(sample.frame["ImageId"]))
    assert list(frame["ImageId"]) == expected
    assert all(name.endswith(".jpg") for name in frame["ImageId"])
    scores = read_scores(path, expected_ids=expected)
    assert ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.slow
def test_saved_models_reload_with_metrics_and_give_the_written_scores(
    trained: tuple[SynthDataset, Params],
) -> None:
    data, params = trained
    working = data.root / "working"
    for name in ("model.h5", "dense121_model.h5"):
        model = keras.models.load_model(working / name)
        assert tuple(model.inputs[0].shape) == (None, params.image_size, params.image_size, 3)
        assert type(model.optimizer).__name__ == "Nadam"
        metrics = model.get_compile_config()["metrics"]
        kinds = {
            m["config"]["kind"]
            for m in metrics
            if isinstance(m, dict) and "kind" in m.get("config", {})
        }
        assert kinds == {"f1", "precision", "recall"}
    best = keras.models.load_model(working / "model.h5")
    written = pd.read_csv(working / "test_missing_count.csv", dtype={"ImageId": str})
    paths = [data.competition_dir / "test_images" / name for name in written["ImageId"]]
    images = classifier_image_dataset(paths, params.image_size, params.batch_size)
    again = best.predict(images, verbose=0).reshape(-1)
    assert np.allclose(again, written["allMissing"].to_numpy(), atol=1e-5)
    result = best.evaluate(
        classifier_image_dataset(paths, params.image_size, params.batch_size, [1.0] * len(paths)),
        verbose=0,
        return_dict=True,
    )
    assert {"f1", "precision", "recall", "accuracy"} <= set(result)


@pytest.mark.slow
def test_classifier_beats_majority_baseline_on_unseen_images(trained: tuple[SynthDataset, Params]) -> None:
    data, _ = trained
    written = pd.read_csv(data.root / "working" / "test_missing_count.csv", dtype={"ImageId": str})
    labels = truth_labels(data, list(written["ImageId"]))
    scores = written["allMissing"].to_numpy()
    majority = max(labels.mean(), 1.0 - labels.mean())
    accuracy = float(((scores > 0.5) == (labels == 1.0)).mean())
    print(
        f"unseen images: accuracy {accuracy:.3f} vs majority {majority:.3f}, AUC {auc(scores, labels):.3f}"
    )
    assert accuracy >= majority + 0.1, (accuracy, majority)
    assert auc(scores, labels) >= 0.6


# ---------------------------------------------------------------------------------------
# Bad input: one InputError naming the file, raised before anything is written


def run_expecting_error(data: SynthDataset, params: Params | None = None) -> str:
    with pytest.raises(InputError) as caught:
        run(params or smoke_params(), Layout(data.root))
    working = data.root / "working"
    assert not working.exists() or not any(working.iterdir())
    message = str(caught.value)
    assert "\n" not in message
    return message


def first_train_image(data: SynthDataset) -> Path:
    return sorted((data.competition_dir / "train_images").glob("*.jpg"))[0]


def test_wrong_size_image_is_named(tiny: SynthDataset) -> None:
    path = first_train_image(tiny)
    Image.new("RGB", (800, 256)).save(path, format="JPEG")
    message = run_expecting_error(tiny)
    assert str(path) in message and "256x800" in message


def test_grayscale_image_is_named(tiny: SynthDataset) -> None:
    path = sorted((tiny.competition_dir / "test_images").glob("*.jpg"))[0]
    Image.new("L", (1600, 256)).save(path, format="JPEG")
    message = run_expecting_error(tiny)
    assert str(path) in message and "3-channel" in message


def test_unreadable_image_is_named(tiny: SynthDataset) -> None:
    path = first_train_image(tiny)
    path.write_bytes(b"not a jpeg at all")
    message = run_expecting_error(tiny)
    assert str(path) in message and "unreadable" in message


def test_png_named_jpg_is_named(tiny: SynthDataset) -> None:
    path = first_train_image(tiny)
    Image.new("RGB", (1600, 256)).save(path, format="PNG")
    message = run_expecting_error(tiny)
    assert str(path) in message and "JPEG" in message


def test_train_csv_row_for_a_missing_image_is_named(tiny: SynthDataset) -> None:
    defects = pd.read_csv(tiny.competition_dir / "train.csv", dtype=str)
    missing = defects["ImageId"].iloc[0]
    (tiny.competition_dir / "train_images" / missing).unlink()
    message = run_expecting_error(tiny)
    assert missing in message and "train.csv" in message


def test_empty_test_set_is_an_error_naming_the_sample_submission(tiny: SynthDataset) -> None:
    sample = tiny.competition_dir / "sample_submission.csv"
    sample.write_text("ImageId,EncodedPixels,ClassId\n")
    message = run_expecting_error(tiny)
    assert str(sample) in message and "no test images" in message


def test_missing_test_image_is_named(tiny: SynthDataset) -> None:
    path = sorted((tiny.competition_dir / "test_images").glob("*.jpg"))[0]
    path.unlink()
    message = run_expecting_error(tiny)
    assert str(path) in message


def test_missing_train_csv_is_named(tiny: SynthDataset) -> None:
    path = tiny.competition_dir / "train.csv"
    path.unlink()
    assert str(path) in run_expecting_error(tiny)


def test_missing_competition_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=COMPETITION):
        run(smoke_params(), Layout(tmp_path))


def test_unreachable_pretrained_weights_say_how_to_go_on(
    tiny: SynthDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy on a closed port makes any download fail at once, online or not.
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tiny.root / "keras-home"))
    shutil.rmtree(tiny.root / "keras-home", ignore_errors=True)
    message = run_expecting_error(tiny, smoke_params(pretrained=True))
    assert "ImageNet weights" in message and "pretrained=false" in message
