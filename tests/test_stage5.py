"""Stage 5 on hand-written submissions in both formats, and its refusals of bad input."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from kernelgen.runtime import InputError, Layout
from stages.stage5_submission import Params, run
from tests.stage_params import (
    assert_renderer_checks,
    params_alone,
    smoke_profile,
)

# Params as the kernel builds it (module imported) and as rendering does (module not run).
PARAMS_CLASSES = [
    pytest.param(Params, id="imported"),
    pytest.param(params_alone("stages.stage5_submission"), id="alone"),
]

# Rows deliberately not grouped by image, to show that row order is kept.
ROWS = [
    ("t1.jpg", "1 10", 1),
    ("t2.jpg", "5 5", 1),
    ("t1.jpg", "", 2),
    ("t3.jpg", "300 4", 1),
    ("t1.jpg", "100 5 200 5", 3),
    ("t1.jpg", "", 4),
    ("t2.jpg", "", 2),
    ("t2.jpg", "", 3),
    ("t2.jpg", "409599 2", 4),
    ("t4.jpg", "", 1),
    ("t3.jpg", "", 2),
    ("t3.jpg", "", 3),
    ("t3.jpg", "7 1 9 1", 4),
    ("t4.jpg", "", 2),
    ("t4.jpg", "", 3),
    ("t4.jpg", "", 4),
]
# t1 is above 0.947 (blanked), t2 exactly at it (kept: blanking needs strictly above),
# t3 well below, t4 above but already empty; t9 is scored but not in the submission.
SCORES = "ImageId,allMissing\nt9.jpg,0.99\nt3.jpg,0.2\nt2.jpg,0.947\nt1.jpg,0.95\nt4.jpg,0.999\n"


def new_format(rows: list[tuple[str, str, int]]) -> str:
    return "ImageId,EncodedPixels,ClassId\n" + "".join(f"{i},{r},{c}\n" for i, r, c in rows)


def old_format(rows: list[tuple[str, str, int]]) -> str:
    return "ImageId_ClassId,EncodedPixels\n" + "".join(f"{i}_{c},{r}\n" for i, r, c in rows)


def blanked(rows: list[tuple[str, str, int]], images: set[str]) -> list[tuple[str, str, int]]:
    return [(i, "" if i in images else r, c) for i, r, c in rows]


def make_root(tmp_path: Path, submission: str, scores: str = SCORES) -> Path:
    root = tmp_path / "kaggle"
    (root / "input" / "stage4").mkdir(parents=True)
    (root / "input" / "stage2").mkdir(parents=True)
    (root / "input" / "stage4" / "submission.csv").write_text(submission)
    (root / "input" / "stage2" / "test_missing_count.csv").write_text(scores)
    return root


def output(root: Path) -> Path:
    return root / "working" / "submission.csv"


@pytest.mark.parametrize("fmt", [new_format, old_format])
def test_blanks_images_above_threshold_in_input_format(tmp_path: Path, fmt, capsys) -> None:
    root = make_root(tmp_path, fmt(ROWS))
    run(Params(), Layout(root))
    assert output(root).read_text() == fmt(blanked(ROWS, {"t1.jpg", "t4.jpg"}))
    out = capsys.readouterr().out
    assert "blanked 2 of 4 test images" in out
    assert "2 non-empty masks removed" in out


def test_threshold_parameter_moves_the_cut(tmp_path: Path) -> None:
    root = make_root(tmp_path, new_format(ROWS))
    run(Params(threshold=0.5), Layout(root))
    assert output(root).read_text() == new_format(blanked(ROWS, {"t1.jpg", "t2.jpg", "t4.jpg"}))


def test_nothing_above_threshold_keeps_bytes(tmp_path: Path) -> None:
    root = make_root(tmp_path, old_format(ROWS))
    run(Params(threshold=0.9999), Layout(root))
    assert output(root).read_bytes() == (root / "input/stage4/submission.csv").read_bytes()


def test_dataset_mounted_under_datasets_owner(tmp_path: Path) -> None:
    root = make_root(tmp_path, new_format(ROWS))
    (root / "input" / "datasets" / "someone").mkdir(parents=True)
    (root / "input" / "stage4").rename(root / "input" / "datasets" / "someone" / "stage4")
    run(Params(), Layout(root))
    assert output(root).read_text() == new_format(blanked(ROWS, {"t1.jpg", "t4.jpg"}))


# Per-class scores. t1 goes by its image score (0.95 > 0.947); t2's class 1 mask goes
# (0.8 > 0.7) and its class 4 mask stays (0.3); t3's class 1 mask stays (0.7 is not
# above 0.7) and its class 4 mask goes (0.9 > 0.85).
CLASS_SCORES = (
    "ImageId,allMissing,missing1,missing2,missing3,missing4\n"
    "t1.jpg,0.95,0.99,0.99,0.99,0.99\n"
    "t2.jpg,0.5,0.8,0.9,0.9,0.3\n"
    "t3.jpg,0.2,0.7,0.9,0.9,0.9\n"
    "t4.jpg,0.999,0.99,0.99,0.99,0.99\n"
)
GATES = (0.7, 0.5, 0.5, 0.85)


def test_per_class_gates_blank_single_classes(tmp_path: Path, capsys) -> None:
    root = make_root(tmp_path, new_format(ROWS), CLASS_SCORES)
    run(Params(class_thresholds=GATES), Layout(root))
    expected = [
        ("" if i in ("t1.jpg", "t4.jpg") or (i, c) in {("t2.jpg", 1), ("t3.jpg", 4)} else r, i, c)
        for i, r, c in ROWS
    ]
    assert output(root).read_text() == new_format([(i, r, c) for r, i, c in expected])
    assert f"per-class gates {list(GATES)}: 2 more masks removed" in capsys.readouterr().out


def test_without_class_thresholds_per_class_scores_change_nothing(tmp_path: Path) -> None:
    root = make_root(tmp_path, new_format(ROWS), CLASS_SCORES)
    run(Params(), Layout(root))
    assert output(root).read_text() == new_format(blanked(ROWS, {"t1.jpg", "t4.jpg"}))


def test_class_thresholds_without_per_class_scores_are_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path, new_format(ROWS))
    with pytest.raises(InputError) as err:
        run(Params(class_thresholds=GATES), Layout(root))
    message = str(err.value)
    assert message.startswith(str(root / "input" / "stage2" / "test_missing_count.csv"))
    assert "missing column(s) missing1, missing2, missing3, missing4" in message
    assert 'head = "class"' in message
    assert not output(root).exists()


def test_missing_stage4_folder_names_places_tried(tmp_path: Path) -> None:
    root = make_root(tmp_path, new_format(ROWS))
    (root / "input" / "stage4" / "submission.csv").unlink()
    (root / "input" / "stage4").rmdir()
    with pytest.raises(InputError) as err:
        run(Params(), Layout(root))
    assert str(root / "input" / "stage4") in str(err.value)
    assert str(root / "input" / "competitions" / "stage4") in str(err.value)
    assert not output(root).exists()


@pytest.mark.parametrize(
    ("folder", "name"), [("stage4", "submission.csv"), ("stage2", "test_missing_count.csv")]
)
def test_missing_input_file_names_path(tmp_path: Path, folder: str, name: str) -> None:
    root = make_root(tmp_path, new_format(ROWS))
    (root / "input" / folder / name).unlink()
    with pytest.raises(InputError, match=str(root / "input" / folder / name)):
        run(Params(), Layout(root))
    assert not output(root).exists()


def test_submission_missing_column(tmp_path: Path) -> None:
    root = make_root(tmp_path, "ImageId,EncodedPixels\nt1.jpg,1 10\n")
    with pytest.raises(InputError, match=r"submission\.csv: columns ImageId, EncodedPixels are"):
        run(Params(), Layout(root))
    assert not output(root).exists()


def test_score_file_missing_columns(tmp_path: Path) -> None:
    root = make_root(tmp_path, new_format(ROWS), scores="image,allMissing\nt1.jpg,0.5\n")
    with pytest.raises(InputError, match=r"test_missing_count\.csv: missing column\(s\) ImageId"):
        run(Params(), Layout(root))


def test_score_file_missing_images(tmp_path: Path) -> None:
    scores = "ImageId,allMissing\nt1.jpg,0.95\nt4.jpg,0.1\n"
    root = make_root(tmp_path, new_format(ROWS), scores=scores)
    with pytest.raises(InputError) as err:
        run(Params(), Layout(root))
    message = str(err.value)
    assert message.startswith(str(root / "input" / "stage2" / "test_missing_count.csv"))
    assert "no score for 2 of 4 image(s) listed in" in message
    assert "t2.jpg, t3.jpg" in message
    assert not output(root).exists()


@pytest.mark.parametrize(
    ("rle", "reason"),
    [
        ("1 10 20", "odd number of tokens"),
        ("1 x", "token 2 'x' is not an integer"),
        ("1 +3", "token 2 '\\+3' is not an integer"),
        ("0 5", "start 0 in pair 1 is not positive"),
        ("-3 5", "start -3 \\(token 1\\) is negative"),
        ("10 5 12 3", "runs overlap"),
        ("10 5 5 3", "runs are not sorted"),
        ("409600 2", "runs past the last pixel \\(409600\\)"),
    ],
)
def test_bad_rle_in_submission(tmp_path: Path, rle: str, reason: str) -> None:
    rows = list(ROWS)
    rows[7] = ("t2.jpg", rle, 3)
    root = make_root(tmp_path, new_format(rows))
    with pytest.raises(
        InputError, match=rf"submission\.csv: line 9 \(image t2\.jpg, class 3\).*{reason}"
    ):
        run(Params(), Layout(root))
    assert not output(root).exists()


# ---------------------------------------------------------------------------------------
# Parameters: checked when Params is built, at render time and in the kernel


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize("threshold", [-0.001, 1.001, 2.0, -1.0, math.nan])
def test_threshold_outside_zero_and_one_is_refused(params: type, threshold: float) -> None:
    message = f"threshold must be between 0 and 1, got {threshold}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        params(threshold=threshold)


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize("threshold", [0.0, 0.001, 0.5, 0.999, 1.0])
def test_threshold_inside_zero_and_one_is_accepted(params: type, threshold: float) -> None:
    assert params(threshold=threshold).threshold == threshold


@pytest.mark.parametrize("params", PARAMS_CLASSES)
@pytest.mark.parametrize(
    "gates",
    [(0.5, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5, 0.5), ("a", "b", "c", "d"), (0.5, 0.5, 0.5, 1.5), (0.5, None, 0.5, 0.5),
     "0.5,0.5,0.5,0.5"],
)
def test_bad_class_thresholds_are_refused(params: type, gates: object) -> None:
    shown = list(gates) if isinstance(gates, tuple) else gates
    message = f"class_thresholds must be empty or 4 values between 0 and 1, one per class, got {shown!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        params(class_thresholds=gates)


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_class_thresholds_are_one_per_class(params: type) -> None:
    assert params(class_thresholds=(0.0, 1.0, 0.5, 0.25)).class_thresholds == (0.0, 1.0, 0.5, 0.25)
    assert params(class_thresholds=[0, 1, 0.5, 0.25]).class_thresholds == [0, 1, 0.5, 0.25]  # as TOML gives them
    assert params().class_thresholds == ()


@pytest.mark.parametrize("params", PARAMS_CLASSES)
def test_defaults_and_smoke_profile_are_accepted(params: type) -> None:
    assert params() == params(**smoke_profile(5))
    assert params().threshold == Params().threshold == 0.947


def test_renderer_checks_values_with_this_params() -> None:
    assert_renderer_checks("stages.stage5_submission", 5, {"threshold": 1.5}, "threshold must be between 0 and 1, got 1.5")
