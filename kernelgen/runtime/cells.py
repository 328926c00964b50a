# %% [markdown]
# ## Matrix cells
# A matrix stage runs once per cell: one value of each matrix field. A cell's name
# (`fold-0`, `fold-0-seed-1`) is the suffix of its kernel's slug and the folder that
# holds its files in a dataset.

# %%
import re
from collections.abc import Mapping

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def cell_name(values: Mapping[str, object]) -> str:
    """The slug-safe name of the cell holding `values`, in the matrix's field order."""
    return "-".join(f"{_token(key)}-{_token(value)}" for key, value in values.items())


def _token(value: object) -> str:
    text = str(value).lower() if not isinstance(value, bool) else ("true" if value else "false")
    return _NOT_SLUG.sub("-", text).strip("-") or "x"
