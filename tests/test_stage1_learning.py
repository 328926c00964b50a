"""Stage 1's per-class head learns the classes on test images it never saw.

In a file of its own, outside the stage 1 group, so that with the suite spread over two
workers this training run and the stage 1 file's (the image head's) go to different ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from kernelgen.runtime import Layout
from stages.stage1_classifier import run
from stages.synth import generate
from tests.stage1_learning import LEARN, LEARN_DATA, auc, class_truth, truth_labels

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.mark.slow
def test_per_class_head_learns_the_classes_on_unseen_images(tmp_path: Path) -> None:
    """With `head = "class"`, the scores of the classes common enough to judge (both kinds
    of test image at least 5 times) separate on test images the network never saw, and
    so does their product, the image's allMissing (whose threshold stage 3 chooses)."""
    data = generate(tmp_path / "data", **LEARN_DATA)
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
