# %% [markdown]
# ## One file of every cell of an input
# A stage that ran once per cell of a matrix (stage 4 once per fold) leaves one
# folder per cell; a stage that ran once leaves one. Either way its readers ask
# for the same file of each.

# %%
from pathlib import Path

from kernelgen.runtime import InputError, Layout


def cell_files(layout: Layout, slug: str, name: str) -> list[Path]:
    """File `name` of every cell of input `slug`, in cell order; InputError naming the
    first one missing."""
    paths = [folder / name for _, folder in layout.cells(slug)]
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: file not found in input {slug!r}")
    return paths
