"""The competition metric against hand-computed cases."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kernelgen.runtime import InputError
from stages.lib.metrics import batch_dice, dice, mean_dice_rle, roc_auc, write_metrics
from stages.lib.rle import rle_decode, rle_encode


def frame(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"])


def test_dice_hand_cases() -> None:
    empty = np.zeros((2, 3), dtype=np.uint8)
    assert dice(empty, empty) == 1.0
    one = empty.copy()
    one[0, 0] = 1
    assert dice(one, empty) == 0.0
    assert dice(empty, one) == 0.0
    assert dice(one, one) == 1.0
    # |X| = 2, |Y| = 3, |X ∩ Y| = 1 -> 2 / 5.
    x = np.array([[1, 1, 0], [0, 0, 0]])
    y = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)
    assert dice(x, y) == pytest.approx(0.4)
    assert dice(x * 255, y) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="one shape"):
        dice(x, y[:, :2])


def test_batch_dice_per_sample_and_class() -> None:
    pred = np.zeros((2, 2, 2, 2), dtype=np.uint8)
    truth = np.zeros_like(pred)
    pred[0, 0, 0, :] = 1  # 2 pixels
    truth[0, 0, :, 0] = 1  # 2 pixels, 1 shared -> 0.5
    pred[0, 1, 1, 1] = 1  # prediction on an empty truth -> 0
    truth[1, 0, 1, 1] = 1  # missed truth -> 0
    # (1, 1): both empty -> 1
    scores = batch_dice(pred, truth)
    assert scores.shape == (2, 2) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, [[0.5, 0.0], [0.0, 1.0]])
    flat = batch_dice(pred.reshape(2, 2, 4), truth.reshape(2, 2, 4))
    np.testing.assert_allclose(flat, scores)
    with pytest.raises(ValueError, match="one shape"):
        batch_dice(pred, truth[:1])


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint8, (3, 2, 4, 5), elements=st.integers(0, 1)),
    arrays(np.uint8, (3, 2, 4, 5), elements=st.integers(0, 1)),
)
def test_batch_dice_agrees_with_dice(pred: np.ndarray, truth: np.ndarray) -> None:
    scores = batch_dice(pred, truth)
    for n in range(3):
        for c in range(2):
            assert scores[n, c] == pytest.approx(dice(pred[n, c], truth[n, c]))


def test_mean_dice_rle_hand_case() -> None:
    pred = frame(
        [
            ("a.jpg", 1, "1 4"),  # truth 3 4: pixels 3..4 shared, 2*2/(4+4) = 0.5
            ("a.jpg", 2, ""),  # both empty: 1
            ("b.jpg", 1, "1 1"),  # false positive on an empty pair: 0
            ("b.jpg", 3, ""),  # missed defect: 0
        ]
    )
    truth = frame([("a.jpg", 1, "3 4"), ("b.jpg", 3, "10 5"), ("c.jpg", 4, "1 1")])
    assert mean_dice_rle(pred, truth) == pytest.approx((0.5 + 1 + 0 + 0) / 4)


def test_mean_dice_rle_all_empty_submission() -> None:
    pred = frame([(f"{i}.jpg", c, "") for i in range(5) for c in (1, 2, 3, 4)])
    truth = frame([("0.jpg", 3, "1 100"), ("4.jpg", 1, "5 5")])
    assert mean_dice_rle(pred, truth) == pytest.approx(18 / 20)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint8, (2, 6, 7), elements=st.integers(0, 1)),
    arrays(np.uint8, (2, 6, 7), elements=st.integers(0, 1)),
)
def test_mean_dice_rle_agrees_with_decoded_dice(pred: np.ndarray, truth: np.ndarray) -> None:
    shape = (6, 7)
    pred_rows = [("x.jpg", c + 1, rle_encode(pred[c])) for c in range(2)]
    truth_rows = [("x.jpg", c + 1, rle_encode(truth[c])) for c in range(2) if truth[c].any()]
    expected = np.mean(
        [dice(rle_decode(p, shape), truth[c]) for c, (_, _, p) in enumerate(pred_rows)]
    )
    assert mean_dice_rle(frame(pred_rows), frame(truth_rows), shape) == pytest.approx(expected)


def test_mean_dice_rle_bad_input() -> None:
    good = frame([("a.jpg", 1, "1 1")])
    with pytest.raises(InputError, match="predictions: missing column"):
        mean_dice_rle(good.drop(columns="ClassId"), good)
    with pytest.raises(InputError, match=r"predictions: image 'a\.jpg' class 1 appears more"):
        mean_dice_rle(pd.concat([good, good]), good)
    with pytest.raises(InputError, match=r"predictions, image a\.jpg class 1: RLE has an odd"):
        mean_dice_rle(frame([("a.jpg", 1, "1 1 1")]), good)
    with pytest.raises(InputError, match=r"truth, image a\.jpg class 1: RLE runs are not sorted"):
        mean_dice_rle(good, frame([("a.jpg", 1, "9 1 3 1")]))
    with pytest.raises(ValueError, match="at least one"):
        mean_dice_rle(good.iloc[:0], good)


def pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_counts_pairs_with_ties_as_half(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 40) / 5.0  # many ties
    labels = rng.integers(0, 2, 40)
    assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels))
    assert roc_auc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert np.isnan(roc_auc(np.array([0.1, 0.9]), np.array([1, 1])))


def test_write_metrics_keeps_finite_figures(tmp_path: Path) -> None:
    path = write_metrics(tmp_path, {"b": 2, "a": 0.5, "bad": float("nan")})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 2.0}
    assert list(json.loads(path.read_text())) == ["a", "b"]
