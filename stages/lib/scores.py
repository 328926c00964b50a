# %% [markdown]
# ## Classifier scores
# Stages 1 and 2 write one `allMissing` score per image (`ImageId,allMissing`),
# the classifier's belief that the image has no defect. A per-class classifier
# (stage 1's `head = "class"`) also writes `missing1` to `missing4`, its belief
# that the image has no defect of that class; its `allMissing` is their product.
# Later stages look scores up by image, so a missing, duplicated or non-numeric
# score must stop the run with the file named rather than turn into a silent NaN.

# %%
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kernelgen.runtime import InputError
from stages.lib.csvtext import read_text_csv
from stages.lib.severstal import CLASS_IDS

SCORE_COLUMNS = ("ImageId", "allMissing")
CLASS_SCORE_COLUMNS: tuple[str, ...] = tuple(f"missing{c}" for c in CLASS_IDS)
# What to do about absent per-class columns, for error messages.
CLASS_SCORES_HINT = 'per-class scores come from stage 1 with head = "class"'


def score_table(image_ids: Sequence[str], scores: np.ndarray) -> pd.DataFrame:
    """The score file's rows for `image_ids`, from a classifier's (N, outputs) scores.

    One output is `allMissing`; one output per class gives `missing1`..`missing4` and
    an `allMissing` that is their product (the classes taken as independent).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.shape[0] != len(image_ids):
        raise RuntimeError(f"classifier returned {scores.shape[0]} scores for {len(image_ids)} images")
    frame = pd.DataFrame({"ImageId": list(image_ids)})
    if scores.shape[1] == 1:
        frame["allMissing"] = scores[:, 0]
    elif scores.shape[1] == len(CLASS_SCORE_COLUMNS):
        frame["allMissing"] = scores.prod(axis=1)
        for index, column in enumerate(CLASS_SCORE_COLUMNS):
            frame[column] = scores[:, index]
    else:
        raise RuntimeError(
            f"classifier has {scores.shape[1]} outputs; expected 1 (allMissing) "
            f"or {len(CLASS_SCORE_COLUMNS)} (one per class)"
        )
    return frame


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write a score table whole or not at all (through a partial file)."""
    partial = path.with_name(path.name + ".partial")
    frame.to_csv(partial, index=False, lineterminator="\n")
    os.replace(partial, path)


def read_score_table(
    path: Path,
    columns: Sequence[str] = ("allMissing",),
    expected_ids: Iterable[str] | None = None,
    *,
    expected_from: str | None = None,
    missing_hint: str = "",
    optional: Sequence[str] = (),
) -> pd.DataFrame:
    """The numeric `columns` of score file `path`, as floats indexed by ImageId, and the
    `optional` columns too when the file has all of them.

    With `expected_ids`, every one of those images must have a row; extra images
    in the file are kept, since a score file may cover more images than the
    consumer needs. `expected_from` names where the expected ids came from, and
    `missing_hint` what to do about absent columns, for the error messages.
    """
    path = Path(path)
    raw = read_text_csv(path, "score file")
    if optional and all(column in raw.columns for column in optional):
        columns = (*columns, *optional)
    missing_columns = [c for c in ("ImageId", *columns) if c not in raw.columns]
    if missing_columns:
        hint = f"; {missing_hint}" if missing_hint else ""
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing_columns)}; "
            f"expected {','.join(('ImageId', *columns))}, found {','.join(map(str, raw.columns))}{hint}"
        )
    ids = raw["ImageId"].astype(str)
    values = {}
    for column in columns:
        text = raw[column].astype(str)
        numbers = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numbers)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{path}: line {pos + 2}: {column} {text.iloc[pos]!r} for image "
                f"{ids.iloc[pos]} is not a number ({int(bad.sum())} such row(s))"
            )
        values[column] = numbers
    duplicated = ids.duplicated().to_numpy(dtype=bool)
    if duplicated.any():
        pos = int(np.flatnonzero(duplicated)[0])
        raise InputError(
            f"{path}: line {pos + 2}: image {ids.iloc[pos]} has more than one score "
            f"({int(duplicated.sum())} duplicate row(s))"
        )
    table = pd.DataFrame(values, index=pd.Index(ids, name="ImageId"), columns=list(columns))
    if expected_ids is not None:
        wanted = pd.Index(pd.unique(pd.Series(list(expected_ids), dtype=str)))
        absent = wanted[~wanted.isin(table.index)]
        if len(absent):
            shown = ", ".join(map(str, absent[:5]))
            more = ", ..." if len(absent) > 5 else ""
            source = f" listed in {expected_from}" if expected_from else ""
            raise InputError(
                f"{path}: no score for {len(absent)} of {len(wanted)} image(s){source} "
                f"({shown}{more})"
            )
    return table


def read_scores(
    path: Path,
    expected_ids: Iterable[str] | None = None,
    *,
    expected_from: str | None = None,
) -> pd.Series:
    """The `allMissing` scores of `path` as a float Series indexed by ImageId."""
    table = read_score_table(path, ("allMissing",), expected_ids, expected_from=expected_from)
    return table["allMissing"]


def read_class_scores(
    path: Path,
    expected_ids: Iterable[str] | None = None,
    *,
    expected_from: str | None = None,
) -> pd.DataFrame:
    """The per-class scores `missing1`..`missing4` of `path`, indexed by ImageId."""
    return read_score_table(
        path,
        CLASS_SCORE_COLUMNS,
        expected_ids,
        expected_from=expected_from,
        missing_hint=CLASS_SCORES_HINT,
    )
