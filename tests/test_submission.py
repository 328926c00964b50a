"""Reading and writing submissions in both formats: round trips and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelgen.runtime import InputError
from stages.lib.rle import rle_encode
from stages.lib.submission import Submission, read_submission, write_submission

NEW = (
    "ImageId,EncodedPixels,ClassId\n"
    "0002cc93b.jpg,29102 12 29346 24 29602 24,1\n"
    "0002cc93b.jpg,,2\n"
    "0002cc93b.jpg,,3\n"
    "0002cc93b.jpg,1 1 409600 1,4\n"
    "00031f466.jpg,,1\n"
)
OLD = (
    "ImageId_ClassId,EncodedPixels\n"
    "0002cc93b.jpg_1,29102 12 29346 24 29602 24\n"
    "0002cc93b.jpg_2,\n"
    "0002cc93b.jpg_3,\n"
    "0002cc93b.jpg_4,1 1 409600 1\n"
    "00031f466.jpg_1,\n"
)


def write(tmp_path: Path, text: str, name: str = "submission.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "fmt"), [(NEW, "new"), (OLD, "old")])
def test_read_gives_one_shape_and_round_trips_bytes(tmp_path: Path, text: str, fmt: str) -> None:
    sub = read_submission(write(tmp_path, text))
    assert sub.fmt == fmt
    assert list(sub.frame.columns) == ["ImageId", "ClassId", "EncodedPixels"]
    assert sub.frame["ImageId"].tolist() == ["0002cc93b.jpg"] * 4 + ["00031f466.jpg"]
    assert sub.frame["ClassId"].tolist() == [1, 2, 3, 4, 1]
    assert sub.frame["ClassId"].dtype == np.int64
    assert sub.frame["EncodedPixels"].tolist()[1:4] == ["", "", "1 1 409600 1"]
    out = tmp_path / "out.csv"
    write_submission(sub, out)
    assert out.read_bytes() == text.encode()
    assert not list(tmp_path.glob("*.partial"))


def test_write_switches_format_on_request(tmp_path: Path) -> None:
    sub = read_submission(write(tmp_path, NEW))
    write_submission(Submission(frame=sub.frame, fmt="old"), tmp_path / "old.csv")
    assert (tmp_path / "old.csv").read_text() == OLD
    with pytest.raises(ValueError, match="unknown submission format 'csv'"):
        write_submission(Submission(frame=sub.frame, fmt="csv"), tmp_path / "x.csv")


def test_columns_in_another_order_are_read(tmp_path: Path) -> None:
    sub = read_submission(write(tmp_path, "ClassId,ImageId,EncodedPixels\n2,a.jpg,3 4\n"))
    assert sub.fmt == "new"
    assert sub.frame.iloc[0].tolist() == ["a.jpg", 2, "3 4"]


def test_touching_runs_are_valid(tmp_path: Path) -> None:
    sub = read_submission(write(tmp_path, "ImageId_ClassId,EncodedPixels\na.jpg_1,1 3 4 2\n"))
    assert sub.frame["EncodedPixels"].iloc[0] == "1 3 4 2"


@st.composite
def submissions(draw) -> tuple[list[tuple[str, int, str]], str]:
    n_images = draw(st.integers(1, 4))
    rows = []
    for i in range(n_images):
        for cls in range(1, 5):
            mask = np.zeros((8, 12), dtype=np.uint8)
            if draw(st.booleans()):
                cells = draw(st.lists(st.integers(0, 95), max_size=30))
                mask.flat[cells] = 1
            rows.append((f"{i:09x}.jpg", cls, rle_encode(mask)))
    return rows, draw(st.sampled_from(["new", "old"]))


@settings(max_examples=40, deadline=None)
@given(submissions())
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, case) -> None:
    rows, fmt = case
    frame = pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"])
    path = tmp_path_factory.mktemp("sub") / "s.csv"
    write_submission(Submission(frame=frame, fmt=fmt), path)
    back = read_submission(path, shape=(8, 12))
    assert back.fmt == fmt
    assert back.frame["ImageId"].tolist() == frame["ImageId"].tolist()
    assert back.frame["ClassId"].tolist() == frame["ClassId"].tolist()
    assert back.frame["EncodedPixels"].tolist() == frame["EncodedPixels"].tolist()
    again = path.with_name("again.csv")
    write_submission(back, again)
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ImageId,EncodedPixels\na.jpg,\n", "columns ImageId, EncodedPixels are neither"),
        ("ImageId,EncodedPixels,ClassId,Extra\na.jpg,,1,x\n", "are neither"),
        ("ImageId_ClassId,EncodedPixels\na.jpg1,\n", "line 2: ImageId_ClassId 'a.jpg1' is not"),
        (
            "ImageId_ClassId,EncodedPixels\na.jpg_1,\na.jpg_5,\n",
            "line 3: ImageId_ClassId 'a.jpg_5'",
        ),
        ("ImageId_ClassId,EncodedPixels\n_1,\n", "line 2: ImageId_ClassId '_1'"),
        ("ImageId,EncodedPixels,ClassId\na.jpg,,0\n", "line 2: ClassId '0' is not one of"),
        ("ImageId,EncodedPixels,ClassId\na.jpg,,x\n", "line 2: ClassId 'x' is not one of"),
        ("ImageId,EncodedPixels,ClassId\n,,1\n", "line 2: empty ImageId"),
        (
            "ImageId,EncodedPixels,ClassId\na.jpg,,1\nb.jpg,,1\na.jpg,1 1,1\n",
            r"line 4 \(image a.jpg, class 1\): duplicate row",
        ),
        ("ImageId,EncodedPixels,ClassId\na.jpg,1 2 3,1\n", "odd number of tokens"),
        ("ImageId,EncodedPixels,ClassId\na.jpg,1 2.5,1\n", "'2.5' is not an integer"),
        ("ImageId,EncodedPixels,ClassId\na.jpg,5 0,1\n", "length 0 in pair 1 is not positive"),
        ("ImageId,EncodedPixels,ClassId\na.jpg,5 -2,1\n", "length -2 .token 2. is negative"),
        ("ImageId,EncodedPixels,ClassId\na.jpg,9 2 5 1,1\n", "runs are not sorted"),
        ("ImageId,EncodedPixels,ClassId\na.jpg,5 3 7 1,1\n", "runs overlap"),
        ("ImageId,EncodedPixels,ClassId\na.jpg,409601 1,1\n", "past the last pixel"),
        (
            "ImageId,EncodedPixels,ClassId\na.jpg,1 99999999999999999999999,1\n",
            "past the last pixel",
        ),
        ("", "submission file is empty"),
        ('ImageId,EncodedPixels,ClassId\na.jpg,"1 2,1\n', "not a readable CSV"),
    ],
)
def test_malformed_submission_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text, "bad.csv")
    with pytest.raises(InputError, match=message) as err:
        read_submission(path)
    assert str(err.value).startswith(str(path))
    assert "\n" not in str(err.value)


def test_first_bad_line_is_reported(tmp_path: Path) -> None:
    rows = "".join(f"i{n}.jpg,{n + 1} 1,1\n" for n in range(50))
    text = "ImageId,EncodedPixels,ClassId\n" + rows + "z.jpg,3 3 1 1,2\ny.jpg,1 2 3,1\n"
    with pytest.raises(InputError, match=r"line 52 \(image z.jpg, class 2\): RLE runs are not"):
        read_submission(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothere\.csv: submission file not found"):
        read_submission(tmp_path / "nothere.csv")
