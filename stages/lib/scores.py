# %% [markdown]
# ## Classifier scores
# Stages 1 and 2 write one `allMissing` score per image (`ImageId,allMissing`),
# the classifier's belief that the image has no defect. Later stages look
# scores up by image, so a missing, duplicated or non-numeric score must stop
# the run with the file named rather than turn into a silent NaN.

# %%
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from kernelgen.runtime import InputError
from stages.lib.csvtext import read_text_csv

SCORE_COLUMNS = ("ImageId", "allMissing")


def read_scores(
    path: Path,
    expected_ids: Iterable[str] | None = None,
    *,
    expected_from: str | None = None,
) -> pd.Series:
    """The `allMissing` scores of `path` as a float Series indexed by ImageId.

    With `expected_ids`, every one of those images must have a score; extra
    images in the file are kept, since a score file may cover more images than
    the consumer needs. `expected_from` names where the expected ids came from,
    for the error message.
    """
    path = Path(path)
    raw = read_text_csv(path, "score file")
    missing_columns = [c for c in SCORE_COLUMNS if c not in raw.columns]
    if missing_columns:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing_columns)}; "
            f"expected {','.join(SCORE_COLUMNS)}, found {','.join(map(str, raw.columns))}"
        )
    ids = raw["ImageId"].astype(str)
    text = raw["allMissing"].astype(str)
    values = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{path}: line {pos + 2}: allMissing {text.iloc[pos]!r} for image "
            f"{ids.iloc[pos]} is not a number ({int(bad.sum())} such row(s))"
        )
    duplicated = ids.duplicated().to_numpy(dtype=bool)
    if duplicated.any():
        pos = int(np.flatnonzero(duplicated)[0])
        raise InputError(
            f"{path}: line {pos + 2}: image {ids.iloc[pos]} has more than one score "
            f"({int(duplicated.sum())} duplicate row(s))"
        )
    scores = pd.Series(values, index=pd.Index(ids, name="ImageId"), name="allMissing")
    if expected_ids is not None:
        wanted = pd.Index(pd.unique(pd.Series(list(expected_ids), dtype=str)))
        absent = wanted[~wanted.isin(scores.index)]
        if len(absent):
            shown = ", ".join(map(str, absent[:5]))
            more = ", ..." if len(absent) > 5 else ""
            source = f" listed in {expected_from}" if expected_from else ""
            raise InputError(
                f"{path}: no score for {len(absent)} of {len(wanted)} image(s){source} "
                f"({shown}{more})"
            )
    return scores
