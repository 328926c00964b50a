"""Classifier test-time augmentation: scores averaged over flips (stages 1 and 2)."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from stages.lib.classifier import predict_scores
from stages.stage1_classifier import Params as Stage1Params
from stages.stage2_scoring import Params as Stage2Params
from tests.stage_params import params_alone


def _model(outputs: int = 1) -> keras.Model:
    """A tiny classifier that is not flip-invariant (a dense layer over a flattened map)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(2, 3, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(outputs, activation="sigmoid"),
        ]
    )


@pytest.mark.parametrize("outputs", [1, 4])
@pytest.mark.parametrize("tta", ["h", "hv"])
def test_classifier_tta_is_flip_consistent(tta: str, outputs: int) -> None:
    model = _model(outputs)
    images = np.random.default_rng(0).random((3, 8, 8, 3)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices(images).batch(2)
    base = predict_scores(model, data, tta)
    plain = predict_scores(model, data, "none")
    assert base.shape == (3, outputs) and base.dtype == np.float64
    assert not np.allclose(base, plain, atol=1e-6)  # the flips change the score
    mirrored = tf.data.Dataset.from_tensor_slices(images[:, :, ::-1].copy()).batch(2)
    np.testing.assert_allclose(predict_scores(model, mirrored, tta), base, atol=1e-6)
    if tta == "hv":
        upside = tf.data.Dataset.from_tensor_slices(images[:, ::-1].copy()).batch(2)
        np.testing.assert_allclose(predict_scores(model, upside, tta), base, atol=1e-6)
    manual = np.mean(
        [model.predict(images[:, :, ::-1], verbose=0), plain], axis=0
    ) if tta == "h" else None
    if manual is not None:
        np.testing.assert_allclose(base, manual, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [Stage1Params, Stage2Params, params_alone("stages.stage1_classifier"),
     params_alone("stages.stage2_scoring")],
)
def test_tta_values_are_checked(params: type) -> None:
    assert params().tta == "none" and params(tta="hv").tta == "hv"
    with pytest.raises(ValueError, match=re.escape("tta must be one of none, h, hv, got 'v'")):
        params(tta="v")
