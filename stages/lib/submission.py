# %% [markdown]
# ## Submissions
# Kaggle accepts a submission only in the columns of the sample file it ships,
# and this competition's sample file exists in two formats: new
# (`ImageId,EncodedPixels,ClassId`) and old (`ImageId_ClassId,EncodedPixels`).
# A submission is read into one table shape whatever its format and written
# back in the format it came in. Every RLE is checked on reading, all rows at
# once, so a malformed file fails here with its line number instead of on
# Kaggle's scorer.

# %%
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kernelgen.runtime import InputError
from stages.lib.csvtext import read_text_csv
from stages.lib.rle import rle_runs
from stages.lib.severstal import CLASS_IDS, IMAGE_SHAPE

COLUMNS_NEW = ("ImageId", "EncodedPixels", "ClassId")
COLUMNS_OLD = ("ImageId_ClassId", "EncodedPixels")

_BLANKS = " \t\r\n"
_DIGITS = "0123456789"
# ClassId as it is written in a file.
_CLASS_TEXTS = tuple(str(class_id) for class_id in CLASS_IDS)


@dataclass
class Submission:
    """A submission as one row per (image, class), plus the format to write it back in.

    `frame` has columns ImageId (str), ClassId (int) and EncodedPixels (str,
    "" when the class is empty) in the file's row order; `fmt` is "new" or "old".
    """

    frame: pd.DataFrame
    fmt: str


def _where(path: Path, frame: pd.DataFrame, pos: int) -> str:
    """The file, line and (image, class) of row `pos`, to start an error message."""
    row = frame.iloc[pos]
    return f"{path}: line {pos + 2} (image {row['ImageId']!s}, class {row['ClassId']!s})"


def _split_old(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    """Split `ImageId_ClassId` (e.g. `0002cc93b.jpg_1`) into image and class."""
    key = raw["ImageId_ClassId"].astype(str)
    parts = key.str.rpartition("_")
    ok = (parts[1] == "_") & (parts[0] != "") & parts[2].isin(_CLASS_TEXTS)
    if not ok.all():
        pos = int(np.flatnonzero(~ok.to_numpy(dtype=bool))[0])
        raise InputError(
            f"{path}: line {pos + 2}: ImageId_ClassId {key.iloc[pos]!r} is not "
            f"'<image>_<class>' with class one of {', '.join(_CLASS_TEXTS)}"
        )
    return pd.DataFrame(
        {
            "ImageId": parts[0].astype(str),
            "ClassId": parts[2].astype(np.int64),
            "EncodedPixels": raw["EncodedPixels"].astype(str),
        }
    )


def _from_new(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    """Check the new format's ImageId and ClassId columns and convert ClassId to int."""
    image = raw["ImageId"].astype(str)
    cls = raw["ClassId"].astype(str).str.strip()
    bad_image = (image.str.strip() == "").to_numpy(dtype=bool)
    if bad_image.any():
        pos = int(np.flatnonzero(bad_image)[0])
        raise InputError(f"{path}: line {pos + 2}: empty ImageId")
    ok = cls.isin(_CLASS_TEXTS).to_numpy(dtype=bool)
    if not ok.all():
        pos = int(np.flatnonzero(~ok)[0])
        raise InputError(
            f"{path}: line {pos + 2}: ClassId {cls.iloc[pos]!r} is not one of "
            f"{', '.join(_CLASS_TEXTS)}"
        )
    return pd.DataFrame(
        {
            "ImageId": image,
            "ClassId": cls.astype(np.int64),
            "EncodedPixels": raw["EncodedPixels"].astype(str),
        }
    )


def _first_rle_problem(rles: pd.Series, pixels: int) -> tuple[int, str] | None:
    """Position and a short reason for the first malformed RLE in `rles`, or None.

    Checks tokens rather than decoding masks, all rows at once: the strings
    are joined with a `-1` marker between rows (a value no valid RLE holds)
    and parsed by one numpy call; each rule (digits only, even token count,
    positive, inside 1..pixels, sorted and non-overlapping) is then one
    vectorised comparison.
    """
    texts = rles.astype(str).tolist()
    n_rows = len(texts)
    if not any(texts):
        return None
    problems: list[tuple[int, str]] = []
    allowed = (_DIGITS + _BLANKS).encode("ascii")
    joined = "".join(texts)
    if not joined.isascii() or joined.encode("ascii").translate(None, allowed):
        bad_chars = np.array(
            [not t.isascii() or bool(t.encode("ascii").translate(None, allowed)) for t in texts]
        )
        problems.append((int(np.argmax(bad_chars)), "EncodedPixels has a non-integer token"))
        texts = ["" if bad else text for text, bad in zip(texts, bad_chars, strict=True)]

    values = np.fromstring(" -1 ".join(texts) + " -1", dtype=np.int64, sep=" ")
    markers = np.flatnonzero(values < 0)
    if markers.size != n_rows:
        raise ValueError("RLE row count changed while parsing")
    counts = np.diff(markers, prepend=-1) - 1
    odd = counts % 2 == 1
    if odd.any():
        problems.append((int(np.argmax(odd)), "EncodedPixels has an odd number of tokens"))
    token_row = np.repeat(np.arange(n_rows), counts)
    values = np.delete(values, markers)[~odd[token_row]]
    run_row = token_row[~odd[token_row]][0::2]
    starts, lengths = values[0::2], values[1::2]
    # Huge values saturate at the int64 maximum: clip before adding.
    end = np.minimum(starts, pixels + 1) + np.minimum(lengths, pixels + 1)
    overlap = np.zeros(starts.size, dtype=bool)
    overlap[1:] = (run_row[1:] == run_row[:-1]) & (starts[1:] < end[:-1])
    past = (starts > pixels) | (lengths > pixels - starts + 1)
    checks = (
        ((starts < 1) | (lengths < 1), "EncodedPixels has a zero value"),
        (past, f"EncodedPixels has a run past pixel {pixels:,}"),
        (overlap, "EncodedPixels runs are unsorted or overlapping"),
    )
    for bad, reason in checks:
        if bad.any():
            problems.append((int(run_row[np.argmax(bad)]), reason))
    return min(problems) if problems else None


def read_submission(path: Path, shape: tuple[int, int] = IMAGE_SHAPE) -> Submission:
    """Read a submission in either format, refusing anything Kaggle's scorer would choke on."""
    path = Path(path)
    raw = read_text_csv(path, "submission file")
    columns = tuple(str(c) for c in raw.columns)
    if set(columns) == set(COLUMNS_NEW) and len(columns) == 3:
        fmt, frame = "new", _from_new(path, raw)
    elif set(columns) == set(COLUMNS_OLD) and len(columns) == 2:
        fmt, frame = "old", _split_old(path, raw)
    else:
        raise InputError(
            f"{path}: columns {', '.join(columns) or '(none)'} are neither "
            f"{','.join(COLUMNS_NEW)} nor {','.join(COLUMNS_OLD)}"
        )
    duplicated = frame.duplicated(["ImageId", "ClassId"]).to_numpy(dtype=bool)
    if duplicated.any():
        where = _where(path, frame, int(np.flatnonzero(duplicated)[0]))
        raise InputError(f"{where}: duplicate row for this image and class")
    problem = _first_rle_problem(frame["EncodedPixels"], shape[0] * shape[1])
    if problem is not None:
        pos, reason = problem
        where = _where(path, frame, pos)
        # The RLE module words the detailed reason (which token or pair is wrong).
        rle_runs(str(frame["EncodedPixels"].iloc[pos]), shape, where)
        raise InputError(f"{where}: {reason}")
    return Submission(frame=frame.reset_index(drop=True), fmt=fmt)


def write_submission(sub: Submission, path: Path) -> None:
    """Write `sub` in its own format, empty classes as empty fields.

    The file appears complete or not at all: it is written beside the target
    and renamed over it.
    """
    path = Path(path)
    frame = sub.frame
    classes = frame["ClassId"].astype(np.int64).astype(str)
    rles = frame["EncodedPixels"].astype(str)
    if sub.fmt == "new":
        out = pd.DataFrame(
            {"ImageId": frame["ImageId"].astype(str), "EncodedPixels": rles, "ClassId": classes}
        )
    elif sub.fmt == "old":
        keys = frame["ImageId"].astype(str) + "_" + classes
        out = pd.DataFrame({"ImageId_ClassId": keys, "EncodedPixels": rles})
    else:
        raise ValueError(f"unknown submission format {sub.fmt!r}; expected 'new' or 'old'")
    partial = path.with_name(path.name + ".partial")
    out.to_csv(partial, index=False, lineterminator="\n")
    os.replace(partial, path)


def fill_submission(sample: Submission, names: list[str], encoded: list[list[str]]) -> Submission:
    """The sample submission with each (image, class) row's mask from `encoded`.

    `encoded[i]` holds the RLEs of image `names[i]`, one per class in CLASS_IDS order.
    """
    lookup = {
        (name, class_id): rle
        for name, rles in zip(names, encoded, strict=True)
        for class_id, rle in zip(CLASS_IDS, rles, strict=True)
    }
    frame = sample.frame.copy()
    keys = zip(frame["ImageId"].astype(str), frame["ClassId"].astype(int), strict=True)
    frame["EncodedPixels"] = [lookup[key] for key in keys]
    return Submission(frame=frame, fmt=sample.fmt)
