"""Reading `ImageId,allMissing` score files and refusing broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kernelgen.runtime import InputError
from stages.lib.scores import (
    CLASS_SCORE_COLUMNS,
    read_class_scores,
    read_score_table,
    read_scores,
    score_table,
    write_table,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scores.csv"
    path.write_text(text)
    return path


def test_reads_float_scores_indexed_by_image(tmp_path: Path) -> None:
    path = write(tmp_path, "ImageId,allMissing,extra\na.jpg,0.25,x\nb.jpg,1e-3,y\nc.jpg,1,z\n")
    scores = read_scores(path, expected_ids=["b.jpg", "a.jpg", "a.jpg"])
    assert scores.to_dict() == {"a.jpg": 0.25, "b.jpg": 0.001, "c.jpg": 1.0}
    assert scores.index.name == "ImageId"
    assert scores.dtype == "float64"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ImageId,score\na.jpg,0.1\n", r"missing column\(s\) allMissing"),
        ("image,allMissing\na.jpg,0.1\n", r"missing column\(s\) ImageId"),
        ("ImageId,allMissing\na.jpg,0.1\nb.jpg,\n", r"line 3: allMissing '' for image b.jpg"),
        ("ImageId,allMissing\na.jpg,nan\n", r"allMissing 'nan' .* is not a number"),
        (
            "ImageId,allMissing\na.jpg,0.1\nb.jpg,0.2\na.jpg,0.3\n",
            r"line 4: image a.jpg has more than one score \(1 duplicate",
        ),
        ("", "score file is empty"),
    ],
)
def test_malformed_score_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as err:
        read_scores(path)
    assert str(err.value).startswith(str(path))


def test_missing_images_are_counted_and_some_named(tmp_path: Path) -> None:
    path = write(tmp_path, "ImageId,allMissing\na.jpg,0.5\n")
    expected = ["a.jpg"] + [f"m{n}.jpg" for n in range(7)]
    with pytest.raises(InputError) as err:
        read_scores(path, expected_ids=expected, expected_from="sub.csv")
    message = str(err.value)
    assert "no score for 7 of 8 image(s) listed in sub.csv" in message
    assert "m0.jpg, m1.jpg, m2.jpg, m3.jpg, m4.jpg, ..." in message
    assert "m5.jpg" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"none\.csv: score file not found"):
        read_scores(tmp_path / "none.csv")


def test_score_table_of_one_output_is_allmissing() -> None:
    table = score_table(["a.jpg", "b.jpg"], np.array([[0.25], [0.75]]))
    assert list(table.columns) == ["ImageId", "allMissing"]
    assert table["allMissing"].tolist() == [0.25, 0.75]


def test_score_table_of_four_outputs_has_each_class_and_their_product(tmp_path: Path) -> None:
    scores = np.array([[0.5, 1.0, 0.8, 0.25], [1.0, 1.0, 1.0, 1.0]])
    table = score_table(["a.jpg", "b.jpg"], scores)
    assert list(table.columns) == ["ImageId", "allMissing", *CLASS_SCORE_COLUMNS]
    assert table["allMissing"].tolist() == [0.1, 1.0]
    path = tmp_path / "scores.csv"
    write_table(table, path)
    assert list(read_score_table(path, optional=CLASS_SCORE_COLUMNS).columns) == ["allMissing", *CLASS_SCORE_COLUMNS]
    classes = read_class_scores(path, expected_ids=["b.jpg"])
    assert classes.loc["a.jpg"].tolist() == [0.5, 1.0, 0.8, 0.25]
    assert read_scores(path).tolist() == [0.1, 1.0]


def test_score_table_refuses_other_output_counts() -> None:
    with pytest.raises(RuntimeError, match=r"classifier has 2 outputs; expected 1 \(allMissing\) or 4"):
        score_table(["a.jpg"], np.array([[0.5, 0.5]]))
    with pytest.raises(RuntimeError, match="classifier returned 1 scores for 2 images"):
        score_table(["a.jpg", "b.jpg"], np.array([[0.5]]))


def test_class_scores_missing_say_where_they_come_from(tmp_path: Path) -> None:
    path = write(tmp_path, "ImageId,allMissing\na.jpg,0.5\n")
    assert list(read_score_table(path, optional=CLASS_SCORE_COLUMNS).columns) == ["allMissing"]
    with pytest.raises(InputError) as err:
        read_class_scores(path)
    assert str(err.value).startswith(f"{path}: missing column(s) missing1, missing2, missing3, missing4")
    assert 'stage 1 with head = "class"' in str(err.value)
