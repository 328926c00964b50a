"""Stage 5 on fold submissions: the majority vote of RLE strings, and the stage run on
a stage 4 that ran once per fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kernelgen.runtime import InputError, Layout
from stages.lib.rle import rle_decode, rle_encode
from stages.lib.submission import read_submission
from stages.lib.vote import majority_vote, vote_rle
from stages.stage5_submission import Params, run

SHAPE = (256, 1600)
FOLDS = [{"fold": 0}, {"fold": 1}, {"fold": 2}]


def random_rle(rng: np.random.Generator) -> str:
    """A mask of a few random blocks (some touching, some overlapping), as an RLE."""
    mask = np.zeros(SHAPE, dtype=np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        y, x = int(rng.integers(0, 250)), int(rng.integers(0, 1590))
        mask[y : y + int(rng.integers(1, 40)), x : x + int(rng.integers(1, 30))] = 1
    return rle_encode(mask)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_vote_marks_the_pixels_enough_strings_mark(n: int) -> None:
    """Against the vote counted on decoded masks, for every threshold of n strings."""
    rng = np.random.default_rng(n)
    for _ in range(40):
        rles = [random_rle(rng) for _ in range(n)]
        counts = sum(rle_decode(rle).astype(int) for rle in rles)
        for need in range(1, n + 1):
            assert vote_rle(rles, need) == rle_encode((counts >= need).astype(np.uint8)), (rles, need)


def test_vote_of_no_runs_is_empty() -> None:
    assert vote_rle(["", " "], 1) == ""


def write(path: Path, rows: list[tuple[str, int, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("ImageId,ClassId,EncodedPixels\n" + "".join(f"{i},{c},{r}\n" for i, c, r in rows))
    return path


def test_majority_of_three_folds_per_image_and_class(tmp_path: Path) -> None:
    folds = [
        [("a.jpg", 1, "1 10"), ("a.jpg", 2, ""), ("b.jpg", 1, "100 4")],
        [("a.jpg", 1, "5 10"), ("a.jpg", 2, "50 5"), ("b.jpg", 1, "")],
        [("a.jpg", 1, "1 10"), ("a.jpg", 2, ""), ("b.jpg", 1, "")],
    ]
    paths = [write(tmp_path / f"fold-{k}.csv", rows) for k, rows in enumerate(folds)]
    voted = majority_vote([read_submission(p) for p in paths], paths)
    # a/1: pixels 1-10 by two folds and 5-14 by one: 1-10 win; a/2 and b/1: one fold each.
    assert voted.frame["EncodedPixels"].tolist() == ["1 10", "", ""]
    assert voted.frame[["ImageId", "ClassId"]].values.tolist() == [["a.jpg", 1], ["a.jpg", 2], ["b.jpg", 1]]


def test_two_folds_keep_only_what_both_mark(tmp_path: Path) -> None:
    """With an even count a tie is no defect: of two folds, the pixels both mark."""
    paths = [
        write(tmp_path / "f0.csv", [("a.jpg", 3, "1 10 40 5")]),
        write(tmp_path / "f1.csv", [("a.jpg", 3, "6 10")]),
    ]
    voted = majority_vote([read_submission(p) for p in paths], paths)
    assert voted.frame["EncodedPixels"].tolist() == ["6 5"]


def test_one_submission_is_kept_as_it_is(tmp_path: Path) -> None:
    path = write(tmp_path / "only.csv", [("a.jpg", 1, "1 10"), ("a.jpg", 2, "")])
    sub = read_submission(path)
    assert majority_vote([sub], [path]).frame.equals(sub.frame)


def test_folds_with_other_rows_are_refused_naming_the_file(tmp_path: Path) -> None:
    paths = [
        write(tmp_path / "f0.csv", [("a.jpg", 1, "1 10")]),
        write(tmp_path / "f1.csv", [("b.jpg", 1, "1 10")]),
    ]
    with pytest.raises(InputError, match=rf"^{tmp_path / 'f1.csv'}: its \(image, class\) rows differ"):
        majority_vote([read_submission(p) for p in paths], paths)


def fold_root(tmp_path: Path, folds: list[list[tuple[str, int, str]]], scores: str) -> Path:
    root = tmp_path / "kaggle"
    for k, rows in enumerate(folds):
        write(root / "input" / "stage4" / f"fold-{k}" / "submission.csv", rows)
    (root / "input" / "stage2").mkdir(parents=True)
    (root / "input" / "stage2" / "test_missing_count.csv").write_text(scores)
    return root


def test_stage5_gates_the_vote_of_stage4s_folds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folds = [
        [("a.jpg", 1, "1 10"), ("b.jpg", 1, "100 4"), ("c.jpg", 4, "7 3")],
        [("a.jpg", 1, "1 10"), ("b.jpg", 1, "100 4"), ("c.jpg", 4, "")],
        [("a.jpg", 1, ""), ("b.jpg", 1, "102 9"), ("c.jpg", 4, "")],
    ]
    scores = "ImageId,allMissing\na.jpg,0.2\nb.jpg,0.99\nc.jpg,0.1\n"
    root = fold_root(tmp_path, folds, scores)
    run(Params(threshold=0.9), Layout(root, matrix={"stage4": FOLDS}))
    written = read_submission(root / "working" / "submission.csv").frame
    # a: two folds of three mark it; b: voted 100-103 (and 102-103 by all), then gated;
    # c: one fold.
    assert written["EncodedPixels"].tolist() == ["1 10", "", ""]
    assert "majority vote of 3 stage 4 submissions" in capsys.readouterr().out


def test_stage5_names_the_fold_that_has_no_submission(tmp_path: Path) -> None:
    root = fold_root(tmp_path, [[("a.jpg", 1, "1 10")]] * 2, "ImageId,allMissing\na.jpg,0.2\n")
    (root / "input" / "stage4" / "fold-2").mkdir()
    with pytest.raises(InputError, match=r"fold-2/submission\.csv: file not found in input 'stage4'"):
        run(Params(), Layout(root, matrix={"stage4": FOLDS}))
    assert not (root / "working" / "submission.csv").exists()
