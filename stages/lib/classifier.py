# %% [markdown]
# ## Defect / no-defect classifier: shared by stages 1 and 2
# Stage 1 trains the classifier and stage 2 scores the train images with it, so
# both must read images the same way and reload the same custom metrics. Images
# are decoded, resized and scaled inside a `tf.data` pipeline, in parallel, with
# no conversion pass over the disk.

# %%
import logging
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from kernelgen.runtime import InputError
from stages.lib.severstal import CLASS_IDS, IMAGE_HEIGHT, IMAGE_WIDTH

# The name the metrics are registered under, so a saved model finds them on reload.
METRIC_PACKAGE = "kernelgen"
# Batch-norm momentum when training from scratch (Keras' default, kept with ImageNet
# weights, is 0.99). See `build_classifier` for why.
SCRATCH_BN_MOMENTUM = 0.9


def check_classifier_images(paths: Sequence[Path]) -> None:
    """Fail early, naming the file, on an image the pipeline would choke on hours later.

    Every competition image is a three-channel JPEG of the competition's size. Only the
    header is read (PIL opens lazily), so checking all 12,568 train images costs
    seconds, while a bad file found by TensorFlow mid-epoch names no file at all.
    """
    expected = (IMAGE_WIDTH, IMAGE_HEIGHT)
    for path in paths:
        try:
            with Image.open(path) as image:
                fmt, size, mode = image.format, image.size, image.mode
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"{path}: unreadable image ({type(exc).__name__})") from exc
        if fmt != "JPEG":
            raise InputError(f"{path}: expected a JPEG image, found {fmt or 'unknown format'}")
        if size != expected:
            raise InputError(
                f"{path}: image is {size[1]}x{size[0]} (height x width), "
                f"expected {IMAGE_HEIGHT}x{IMAGE_WIDTH}"
            )
        if mode != "RGB":
            raise InputError(f"{path}: image has mode {mode}, expected 3-channel RGB")


def _load_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decode one JPEG, resize it to a square and scale it to [0, 1].

    Antialiasing matters here: squeezing 1600 columns into a few hundred with plain
    bilinear sampling skips most columns, and thin vertical defects disappear.
    """
    raw = tf.io.read_file(path)
    image = tf.io.decode_jpeg(raw, channels=3)
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def classifier_image_dataset(
    paths: Sequence[Path],
    image_size: int,
    batch_size: int,
    labels: Sequence[float] | np.ndarray | None = None,
    *,
    shuffle_seed: int | None = None,
    augmenter: keras.Model | None = None,
) -> tf.data.Dataset:
    """Batches of images (and labels when given) read straight from the JPEG files.

    `labels` holds one value per image, or one row of values per image (one per output).

    Shuffling (training only) happens on the file names, before decoding, so the
    buffer holds strings rather than images. Augmentation runs on whole batches after
    decoding, also inside the pipeline, so the accelerator never waits on it.
    """
    names = tf.constant([str(p) for p in paths], dtype=tf.string)
    if labels is None:
        data = tf.data.Dataset.from_tensor_slices(names)
    else:
        targets = np.asarray(labels, dtype=np.float32)
        targets = targets.reshape(len(paths), -1)  # (images, outputs), one output as a column
        data = tf.data.Dataset.from_tensor_slices((names, targets))
    if shuffle_seed is not None:
        data = data.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)

    def load(*item: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        image = _load_image(item[0], image_size)
        return image if len(item) == 1 else (image, item[1])

    data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    data = data.batch(batch_size)
    if augmenter is not None:
        if labels is None:
            raise ValueError("augmentation is for training batches, which need labels")

        def augment(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return augmenter(images, training=True), targets

        data = data.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


CLASSIFIER_TTAS = ("none", "h", "hv")
# What the classifier predicts: "image" one score per image (allMissing, the seed's),
# "class" one per defect class (the belief that the image has none of that class).
HEADS = ("image", "class")


def head_outputs(head: str) -> int:
    """The number of sigmoid outputs of a classifier with this head."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    return 1 if head == "image" else len(CLASS_IDS)


def predict_scores(model: keras.Model, data: tf.data.Dataset, tta: str = "none") -> np.ndarray:
    """The scores of every image of `data` (batches of images): (images, outputs), float64.

    `tta` "h" averages the scores of each image and its left-right mirror, "hv"
    also of its upside-down and its both-ways mirrors; "none" is one plain pass.
    """
    if tta not in CLASSIFIER_TTAS:
        raise ValueError(f"tta must be one of {', '.join(CLASSIFIER_TTAS)}, got {tta!r}")
    flips: list[list[int]] = [[]]
    if tta in ("h", "hv"):
        flips.append([2])
    if tta == "hv":
        flips += [[1], [1, 2]]
    total = None
    for axes in flips:
        view = data if not axes else data.map(lambda x, axes=axes: tf.reverse(x, axis=axes))
        scores = np.asarray(model.predict(view, verbose=0), dtype=np.float64)
        scores = scores.reshape(scores.shape[0], -1)
        total = scores if total is None else total + scores
    return total / len(flips)


def build_classifier_augmenter(seed: int) -> keras.Sequential:
    """The seed's training augmentation, as Keras 3 preprocessing layers.

    Zoom 0.1, rotation 15 degrees, height and width shift 0.1, both flips, constant
    fill with 0: the settings the original gave `ImageDataGenerator`, which Keras 3
    no longer has. Each layer draws a different transform for every image.
    """
    fill = {"fill_mode": "constant", "fill_value": 0.0}
    return keras.Sequential(
        [
            keras.layers.RandomZoom((-0.1, 0.1), (-0.1, 0.1), seed=seed, **fill),
            keras.layers.RandomRotation(15.0 / 360.0, seed=seed + 1, **fill),
            keras.layers.RandomTranslation(0.1, 0.1, seed=seed + 2, **fill),
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed + 3),
        ],
        name="augmentation",
    )


def _rounded_score(y_true: tf.Tensor, y_pred: tf.Tensor, kind: str) -> tf.Tensor:
    """Precision, recall or F1 of rounded predictions over one batch, as the seed had them."""
    eps = keras.backend.epsilon()
    predicted = keras.ops.round(keras.ops.clip(keras.ops.cast(y_pred, "float32"), 0.0, 1.0))
    actual = keras.ops.reshape(keras.ops.cast(y_true, "float32"), keras.ops.shape(predicted))
    true_pos = keras.ops.sum(actual * predicted)
    precision = true_pos / (keras.ops.sum(predicted) + eps)
    recall = true_pos / (keras.ops.sum(actual) + eps)
    if kind == "precision":
        return precision
    if kind == "recall":
        return recall
    return 2.0 * precision * recall / (precision + recall + eps)


@keras.saving.register_keras_serializable(package=METRIC_PACKAGE)
class RoundedBatchMetric(keras.metrics.MeanMetricWrapper):
    """Batch-wise F1, precision or recall of rounded predictions, averaged over batches.

    A registered class rather than a bare function so the metric keeps a short name
    (`f1`, ...) in the history and a model saved with it reloads in stage 2.
    """

    KINDS = ("f1", "precision", "recall")

    def __init__(self, kind: str = "f1", name: str | None = None, dtype: str | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        super().__init__(_rounded_score, name=name or kind, dtype=dtype, kind=kind)
        self.kind = kind

    def get_config(self) -> dict:
        return {"kind": self.kind, "name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict) -> "RoundedBatchMetric":
        return cls(**config)


def build_classifier(image_size: int, pretrained: bool, outputs: int = 1) -> keras.Model:
    """DenseNet121 without its top, then the seed's head, compiled as the seed compiled it.

    `outputs` sigmoid units end the head: 1 (allMissing, the seed's) or one per class
    (`head_outputs("class")`), each trained with binary cross-entropy.

    DenseNet121 pools five times, so `image_size` must be at least 32; stage 1's
    `Params` refuses smaller sizes before anything runs.

    When the ImageNet weights cannot be fetched the error says so in one line and
    points at `pretrained=false`, instead of Keras' download traceback.

    From scratch (`pretrained=False`, used offline and in smoke runs; the seed always
    started from ImageNet) every batch norm gets momentum 0.9 instead of 0.99. Its
    moving statistics start at 0 and 1, far from those of untrained layers, and with
    0.99 a short run never catches up: measured on synthetic data, the network
    separated unseen images in training mode (AUC 0.83) while inference mode gave
    one constant answer even after 480 steps. ImageNet weights bring matching
    statistics, so the pretrained model keeps Keras' default.
    """
    shape = (image_size, image_size, 3)
    try:
        base = keras.applications.DenseNet121(
            include_top=False, weights="imagenet" if pretrained else None, input_shape=shape
        )
    except Exception as exc:
        if not pretrained:
            raise
        raise InputError(
            "could not fetch the DenseNet121 ImageNet weights "
            f"({_first_line(exc)}); "
            "turn on the kernel's internet, or set pretrained=false to train from scratch"
        ) from exc
    momentum = 0.99 if pretrained else SCRATCH_BN_MOMENTUM
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    inputs = keras.Input(shape=shape, name="image")
    x = base(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(512, activation="relu")(x)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    x = keras.layers.Dropout(0.5)(x)
    name = "all_missing" if outputs == 1 else "class_missing"
    scores = keras.layers.Dense(outputs, activation="sigmoid", name=name)(x)
    model = keras.Model(inputs, scores, name="dense121_classifier")
    model.compile(
        optimizer=keras.optimizers.Nadam(),
        loss="binary_crossentropy",
        # Named explicitly: with several outputs Keras would read "accuracy" as categorical
        # accuracy (argmax), which means nothing for four independent classes.
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            *(RoundedBatchMetric(kind) for kind in RoundedBatchMetric.KINDS),
        ],
    )
    return model


def _first_line(exc: BaseException) -> str:
    """The exception's type and first message line, for one-line errors."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_classifier(path: Path) -> keras.Model:
    """A saved classifier, compiled with its metrics, or an InputError naming the file.

    Keras 3 warns on every such load that the saved optimizer state could not be
    restored (its HDF5 reader orders the Nadam slots by name, not as it builds them)
    and that the metrics are not built yet. Scoring uses neither, so warnings are
    held back while loading; errors still show.
    """
    if not Path(path).is_file():
        raise InputError(f"{path}: model file not found")
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        model = keras.models.load_model(path)
    except Exception as exc:
        raise InputError(f"{path}: not a Keras model file ({_first_line(exc)})") from exc
    finally:
        absl_log.setLevel(level)
    if not isinstance(model, keras.Model) or len(model.inputs) != 1:
        raise InputError(f"{path}: expected a Keras model with one image input")
    return model


def classifier_input_size(model: keras.Model, path: Path) -> int:
    """The square image size a loaded classifier was built for."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        raise InputError(f"{path}: model input shape {shape} is not (batch, size, size, 3)")
    return int(shape[1])
