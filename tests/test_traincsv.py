"""train.csv in both formats: one frame of defect rows, and a clear error for each bad file."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kernelgen.runtime import InputError
from stages.lib.rle import rle_decode
from stages.lib.traincsv import (
    defect_count_per_image,
    image_masks,
    read_train_csv,
    read_train_csv_images,
)

NEW = """ImageId,ClassId,EncodedPixels
0002cc93b.jpg,1,29102 12 29346 24 29602 24
0007a71bf.jpg,3,18661 28 18863 82
000a4bcdd.jpg,1,37607 3 37858 8
000a4bcdd.jpg,3,1 10
"""

OLD = """ImageId_ClassId,EncodedPixels
0002cc93b.jpg_1,29102 12 29346 24 29602 24
0002cc93b.jpg_2,
0002cc93b.jpg_3,
0002cc93b.jpg_4,
00031f466.jpg_1,
00031f466.jpg_2,
00031f466.jpg_3,
00031f466.jpg_4,
0007a71bf.jpg_1,
0007a71bf.jpg_2,
0007a71bf.jpg_3,18661 28 18863 82
0007a71bf.jpg_4,
000a4bcdd.jpg_1,37607 3 37858 8
000a4bcdd.jpg_2,
000a4bcdd.jpg_3,1 10
000a4bcdd.jpg_4,
"""


def write(tmp_path: Path, text: str, name: str = "train.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_both_formats_give_the_same_frame(tmp_path: Path) -> None:
    new = read_train_csv(write(tmp_path, NEW, "new.csv"))
    old = read_train_csv(write(tmp_path, OLD, "old.csv"))
    assert list(new.columns) == ["ImageId", "ClassId", "EncodedPixels"]
    pd.testing.assert_frame_equal(new, old)
    assert new["ImageId"].tolist() == [
        "0002cc93b.jpg",
        "0007a71bf.jpg",
        "000a4bcdd.jpg",
        "000a4bcdd.jpg",
    ]
    assert new["ClassId"].tolist() == [1, 3, 1, 3]
    assert new["ClassId"].dtype == np.int64
    assert new["EncodedPixels"].iloc[1] == "18661 28 18863 82"
    assert all(isinstance(value, str) for value in new["ImageId"])
    assert list(new.index) == [0, 1, 2, 3]


def test_old_format_lists_every_image_new_format_does_not(tmp_path: Path) -> None:
    defects, images = read_train_csv_images(write(tmp_path, OLD))
    assert images == ["0002cc93b.jpg", "00031f466.jpg", "0007a71bf.jpg", "000a4bcdd.jpg"]
    assert len(defects) == 4
    _, none = read_train_csv_images(write(tmp_path, NEW, "new.csv"))
    assert none is None


def test_header_only_file_has_no_defects(tmp_path: Path) -> None:
    empty = read_train_csv(write(tmp_path, "ImageId,ClassId,EncodedPixels\n"))
    assert empty.empty and list(empty.columns) == ["ImageId", "ClassId", "EncodedPixels"]


def test_image_masks_stack_classes_in_order(tmp_path: Path) -> None:
    defects = read_train_csv(write(tmp_path, NEW))
    masks = image_masks(defects, "000a4bcdd.jpg")
    assert masks.shape == (4, 256, 1600) and masks.dtype == np.uint8
    assert masks.flags.c_contiguous
    np.testing.assert_array_equal(masks[0], rle_decode("37607 3 37858 8"))
    np.testing.assert_array_equal(masks[2], rle_decode("1 10"))
    assert not masks[1].any() and not masks[3].any()
    assert not image_masks(defects, "no-such.jpg").any()


def test_defect_count_per_image(tmp_path: Path) -> None:
    defects = read_train_csv(write(tmp_path, NEW))
    counts = defect_count_per_image(defects)
    assert counts.to_dict() == {"0002cc93b.jpg": 1, "0007a71bf.jpg": 1, "000a4bcdd.jpg": 2}
    everyone = defect_count_per_image(defects, ["00031f466.jpg", "000a4bcdd.jpg", "0002cc93b.jpg"])
    assert everyone.index.tolist() == ["00031f466.jpg", "000a4bcdd.jpg", "0002cc93b.jpg"]
    assert everyone.tolist() == [0, 2, 1]
    assert everyone.dtype == np.int64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Image,Class,Pixels\na,1,1 1\n", "missing column(s) ImageId, ClassId, EncodedPixels"),
        ("ImageId,EncodedPixels\na.jpg,1 1\n", "missing column(s) ClassId"),
        ("ImageId_ClassId\na.jpg_1\n", "missing column(s) EncodedPixels"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,5,1 1\n", "line 2: ClassId '5' is not one of"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,x,1 1\n", "line 2: ClassId 'x' is not one of"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,1,1 1\n,2,1 1\n", "line 3: empty ImageId"),
        ("ImageId_ClassId,EncodedPixels\na.jpg_1,\na.jpg,1 1\n", "line 3: malformed"),
        ("ImageId_ClassId,EncodedPixels\n_1,1 1\n", "line 2: malformed ImageId_ClassId '_1'"),
        ("ImageId_ClassId,EncodedPixels\na.jpg_0,1 1\n", "line 2: ClassId '0' is not one of"),
        (
            "ImageId,ClassId,EncodedPixels\na.jpg,1,1 1\nb.jpg,2,1 1\na.jpg,1,5 1\n",
            "line 4: duplicate row for image 'a.jpg' class 1 (first on line 2)",
        ),
        (
            "ImageId_ClassId,EncodedPixels\na.jpg_1,\na.jpg_1,\n",
            "line 3: duplicate row for image 'a.jpg' class 1",
        ),
        (
            "ImageId,ClassId,EncodedPixels\na.jpg,1,1 1\nb.jpg,2,1 2 3\n",
            "line 3: EncodedPixels: RLE has an odd number of tokens (3)",
        ),
        (
            "ImageId_ClassId,EncodedPixels\na.jpg_1,5 1 3 1\n",
            "line 2: EncodedPixels: RLE runs are not sorted",
        ),
        (
            "ImageId,ClassId,EncodedPixels\na.jpg,1,409600 2\n",
            "line 2: EncodedPixels: RLE run (409600 2) in pair 1 runs past the last pixel",
        ),
        ("ImageId,ClassId,EncodedPixels\na.jpg,1,0 2\n", "RLE start 0 in pair 1 is not positive"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,1,3 -2\n", "RLE length -2 (token 2) is negative"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,1,3 x\n", "RLE token 2 'x' is not an integer"),
        ("ImageId,ClassId,EncodedPixels\na.jpg,1,2 3 3 1\n", "RLE runs overlap"),
        ("", "file is empty"),
        ('ImageId,ClassId,EncodedPixels\n"a.jpg,1,1 1\n', "not a readable CSV"),
    ],
)
def test_bad_train_csv_names_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        read_train_csv(path)
    error = str(caught.value)
    assert error.startswith(f"{path}: ")
    assert message in error
    assert "\n" not in error


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "train.csv"
    with pytest.raises(InputError, match=r"absent/train\.csv: file not found"):
        read_train_csv(path)


def test_extra_columns_and_blank_rle_rows_are_ignored(tmp_path: Path) -> None:
    text = "Note,ImageId,ClassId,EncodedPixels\nx,a.jpg,2, \ny,b.jpg,4,3 2\n"
    defects = read_train_csv(write(tmp_path, text))
    assert defects.to_dict("list") == {
        "ImageId": ["b.jpg"],
        "ClassId": [4],
        "EncodedPixels": ["3 2"],
    }
