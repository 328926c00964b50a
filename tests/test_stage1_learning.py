"""Stage 1 learns: the classifier beats the majority class on test images it never saw.

In a file of its own so that, with the suite spread over two workers, the longest
training run goes to one worker while the other takes the rest of stage 1.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kernelgen.runtime import Layout
from stages.stage1_classifier import Params, run
from stages.synth import SynthDataset, generate

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


# Small images, from scratch, a dozen epochs: about a minute and a half on two cores.
LEARN = Params(
    image_size=64,
    batch_size=16,
    epochs=12,
    validation_split=0.15,
    lr_patience=10,
    pretrained=False,
    seed=0,
)


def truth_labels(data: SynthDataset, image_ids: list[str]) -> np.ndarray:
    """allMissing of the hidden test truth: 1.0 for images with no truth row."""
    truth = pd.read_csv(data.test_truth, dtype=str, keep_default_na=False)
    defective = set(truth["ImageId"])
    return np.array([0.0 if i in defective else 1.0 for i in image_ids])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@pytest.mark.slow
def test_classifier_beats_majority_baseline_on_unseen_images(tmp_path: Path) -> None:
    data = generate(tmp_path / "data", n_train=160, n_test=48, seed=1)
    run(LEARN, Layout(data.root))
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


def class_truth(data: SynthDataset, image_ids: list[str], class_id: int) -> np.ndarray:
    """1.0 where the hidden test truth has no defect of `class_id` on the image."""
    truth = pd.read_csv(data.test_truth, dtype=str, keep_default_na=False)
    present = set(truth.loc[truth["ClassId"] == str(class_id), "ImageId"])
    return np.array([0.0 if i in present else 1.0 for i in image_ids])


@pytest.mark.slow
def test_per_class_head_learns_the_classes_on_unseen_images(tmp_path: Path) -> None:
    """With `head = "class"`, the scores of the classes common enough to judge (both kinds
    of test image at least 5 times) separate on test images the network never saw, and
    so does their product, the image's allMissing (whose threshold stage 3 chooses)."""
    data = generate(tmp_path / "data", n_train=160, n_test=48, seed=1)
    run(replace(LEARN, head="class"), Layout(data.root))
    written = pd.read_csv(data.root / "working" / "test_missing_count.csv", dtype={"ImageId": str})
    assert list(written.columns) == ["ImageId", "allMissing", "missing1", "missing2", "missing3", "missing4"]
    ids = list(written["ImageId"])
    judged = {}
    for class_id in (1, 2, 3, 4):
        labels = class_truth(data, ids, class_id)
        if min(labels.sum(), (1 - labels).sum()) >= 5:
            judged[class_id] = auc(written[f"missing{class_id}"].to_numpy(), labels)
    image_auc = auc(written["allMissing"].to_numpy(), truth_labels(data, ids))
    print(f"unseen images: per-class AUC {judged}; allMissing AUC {image_auc:.3f}")
    assert judged and all(value >= 0.65 for value in judged.values()), judged
    assert image_auc >= 0.55
