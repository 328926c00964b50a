# %% [markdown]
# ## Input errors
# One exception type for bad or missing inputs, so a failing kernel says what
# and where in one line.

# %%
class InputError(Exception):
    """An input file or folder is missing or malformed; the message names it."""
