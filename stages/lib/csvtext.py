# %% [markdown]
# ## CSV files as text
# Input CSVs are read with every cell as text ("" when empty), so no id or RLE
# is turned into a number or NaN behind our back, and each reader checks its own
# columns. A missing, empty or unparsable file stops the run naming the file.

# %%
from pathlib import Path

import pandas as pd

from kernelgen.runtime import InputError


def read_text_csv(path: Path, what: str) -> pd.DataFrame:
    """Every cell of `path` as text; `what` names the kind of file in error messages."""
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: {what} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        lines = str(exc).strip().splitlines()
        detail = lines[-1] if lines else type(exc).__name__
        raise InputError(f"{path}: not a readable CSV ({detail})") from None
