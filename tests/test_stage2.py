"""Stage 2: scores every train image with stage 1's model; bad input fails naming the file."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kernelgen.runtime import InputError, Layout
from stages.lib.classifier import RoundedBatchMetric, build_classifier
from stages.lib.scores import CLASS_SCORE_COLUMNS, read_scores
from stages.stage2_scoring import Params, run
from stages.synth import SynthDataset, generate
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

SIZE = 32
# Params as the kernel builds it (module imported) and as rendering does (module not run).
PARAMS_CLASSES = [
    pytest.param(Params, id="imported"),
    pytest.param(params_alone("stages.stage2_scoring"), id="alone"),
]


def brightness_model(size: int) -> keras.Model:
    """A model whose score is the mean pixel value of its input, compiled like stage 1's.

    Its output is known in advance for any image, so the test can check that stage 2
    scaled the pixels to [0, 1] and wrote each score beside the right image.
    """
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    mean = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(1 / 3))(pooled)
    model = keras.Model(inputs, mean)
    model.compile(
        optimizer=keras.optimizers.Nadam(),
        loss="binary_crossentropy",
        metrics=["accuracy", *(RoundedBatchMetric(kind) for kind in RoundedBatchMetric.KINDS)],
    )
    return model


def mount_model(data: SynthDataset, model: keras.Model) -> Path:
    """Place `model` where the Stage1 dataset is mounted, as `model.h5`, with a
    `split.csv` that holds out every third train image."""
    folder = data.root / "input" / "stage1"
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.h5")
    write_split(data, {name: int(n % 3 == 0) for n, name in enumerate(train_names(data))})
    return folder / "model.h5"


def train_names(data: SynthDataset) -> list[str]:
    return [p.name for p in sorted((data.competition_dir / "train_images").glob("*.jpg"))]


def write_split(data: SynthDataset, split: dict[str, int | str]) -> Path:
    path = data.root / "input" / "stage1" / "split.csv"
    rows = "".join(f"{name},{flag}\n" for name, flag in split.items())
    path.write_text("ImageId,validation\n" + rows)
    return path


def output(data: SynthDataset) -> Path:
    return data.root / "working" / "train_missing_count.csv"


@pytest.fixture
def data(tmp_path: Path) -> SynthDataset:
    return generate(tmp_path / "data", n_train=12, n_test=2, seed=4)


def test_scores_every_train_image_under_its_jpg_name(data: SynthDataset) -> None:
    mount_model(data, brightness_model(SIZE))
    run(Params(image_size=SIZE, batch_size=5), Layout(data.root))
    frame = pd.read_csv(output(data), dtype={"ImageId": str})
    assert list(frame.columns) == ["ImageId", "allMissing", "validation"]
    files = sorted((data.competition_dir / "train_images").glob("*.jpg"))
    assert list(frame["ImageId"]) == [p.name for p in files]
    # The held-out flags are stage 1's split, image by image.
    assert list(frame["validation"]) == [int(n % 3 == 0) for n in range(len(files))]
    read_scores(output(data), expected_ids=[p.name for p in files])
    # Resizing keeps the mean brightness, so each score is its own image's mean in [0, 1].
    expected = [np.asarray(Image.open(p), dtype=np.float64).mean() / 255.0 for p in files]
    assert np.allclose(frame["allMissing"], expected, atol=0.01)
    assert np.std(expected) > 0.03  # images differ enough for a mix-up to show


@pytest.mark.slow
def test_scores_with_a_densenet_classifier_as_stage1_saves_it(data: SynthDataset) -> None:
    mount_model(data, build_classifier(SIZE, pretrained=False))
    run(Params(image_size=SIZE, batch_size=8), Layout(data.root))
    scores = read_scores(output(data))
    assert len(scores) == 12
    assert ((scores >= 0) & (scores <= 1)).all()


def test_a_per_class_classifier_gives_per_class_scores_and_their_product(data: SynthDataset) -> None:
    """Four outputs: missing1..missing4 written as the model gives them, allMissing their product."""
    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    # Output k is (k + 1) / 5 times the mean brightness: four different, known scores.
    scale = np.array([[(k + 1) / 15 for k in range(4)]] * 3, dtype=np.float32)
    outputs = keras.layers.Dense(4, use_bias=False, kernel_initializer=keras.initializers.Constant(scale))(pooled)
    mount_model(data, keras.Model(inputs, outputs))
    run(Params(image_size=SIZE, batch_size=5), Layout(data.root))
    frame = pd.read_csv(output(data), dtype={"ImageId": str})
    assert list(frame.columns) == ["ImageId", "allMissing", *CLASS_SCORE_COLUMNS, "validation"]
    brightness = frame["missing1"] * 5
    for k, column in enumerate(CLASS_SCORE_COLUMNS):
        assert np.allclose(frame[column], brightness * (k + 1) / 5, atol=1e-6)
    product = np.prod(frame[list(CLASS_SCORE_COLUMNS)].to_numpy(), axis=1)
    assert np.allclose(frame["allMissing"], product, atol=1e-9)
    assert brightness.std() > 0.03


def test_smoke_profile_names_only_stage2_parameters() -> None:
    params = Params(**smoke_profile(2))
    assert params.image_size == smoke_profile(1)["image_size"]


# ---------------------------------------------------------------------------------------
# Parameters: checked when Params is built, at render time and in the kernel


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("image_size", 31, "must be at least 32 (stage 1 cannot train smaller)"),
        ("image_size", 0, "must be at least 32 (stage 1 cannot train smaller)"),
        ("batch_size", 0, "must be at least 1"),
        ("batch_size", -4, "must be at least 1"),
    ],
)
def test_bad_parameter_is_refused_naming_it(
    params: type, name: str, value: int, rule: str
) -> None:
    assert_refused(params, name, value, rule)


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_defaults_smoke_profile_and_edges_are_accepted(params: type) -> None:
    assert asdict(params()) == asdict(Params())
    assert params(**smoke_profile(2)).image_size == 64
    edge = params(image_size=32, batch_size=1)
    assert (edge.image_size, edge.batch_size) == (32, 1)


def test_renderer_checks_values_with_this_params() -> None:
    assert_renderer_checks("stages.stage2_scoring", 2, {"image_size": 16}, "image_size must be at least 32")


# ---------------------------------------------------------------------------------------
# Bad input


def expect_error(data: SynthDataset, params: Params | None = None) -> str:
    with pytest.raises(InputError) as caught:
        run(params or Params(image_size=SIZE, batch_size=4), Layout(data.root))
    assert not output(data).exists()
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_missing_stage1_dataset_is_named(data: SynthDataset) -> None:
    assert "stage1" in expect_error(data)


def test_missing_model_file_is_named(data: SynthDataset) -> None:
    (data.root / "input" / "stage1").mkdir(parents=True)
    message = expect_error(data)
    assert str(data.root / "input" / "stage1" / "model.h5") in message


def test_model_file_that_is_not_a_keras_model_is_named(data: SynthDataset) -> None:
    folder = data.root / "input" / "stage1"
    folder.mkdir(parents=True)
    (folder / "model.h5").write_bytes(b"\x00 this is not HDF5 " * 20)
    write_split(data, dict.fromkeys(train_names(data), 1))
    message = expect_error(data)
    assert str(folder / "model.h5") in message and "not a Keras model" in message


def test_missing_split_file_is_named(data: SynthDataset) -> None:
    mount_model(data, brightness_model(SIZE))
    (data.root / "input" / "stage1" / "split.csv").unlink()
    assert str(data.root / "input" / "stage1" / "split.csv") in expect_error(data)


def test_split_without_a_train_image_is_refused(data: SynthDataset) -> None:
    mount_model(data, brightness_model(SIZE))
    names = train_names(data)
    path = write_split(data, {name: 0 for name in names[1:]})
    message = expect_error(data)
    assert message.startswith(str(path)) and f"train image {names[0]} is not in stage 1's split" in message


def test_split_flag_other_than_0_or_1_is_refused(data: SynthDataset) -> None:
    mount_model(data, brightness_model(SIZE))
    names = train_names(data)
    path = write_split(data, {name: "yes" if n == 2 else 1 for n, name in enumerate(names)})
    assert expect_error(data) == f"{path}: line 4: validation must be 0 or 1, got 'yes'"


def test_image_size_other_than_the_models_is_refused(data: SynthDataset) -> None:
    path = mount_model(data, brightness_model(SIZE))
    message = expect_error(data, Params(image_size=64, batch_size=4))
    assert str(path) in message and f"image_size={SIZE}" in message


def test_wrong_size_train_image_is_named(data: SynthDataset) -> None:
    mount_model(data, brightness_model(SIZE))
    path = sorted((data.competition_dir / "train_images").glob("*.jpg"))[3]
    Image.new("RGB", (1600, 128)).save(path, format="JPEG")
    assert str(path) in expect_error(data)


def test_unreadable_train_image_is_named(data: SynthDataset) -> None:
    mount_model(data, brightness_model(SIZE))
    path = sorted((data.competition_dir / "train_images").glob("*.jpg"))[0]
    path.write_bytes(b"")
    assert str(path) in expect_error(data)
