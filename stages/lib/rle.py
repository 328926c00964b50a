# %% [markdown]
# ## Run-length encoding of defect masks
# Severstal masks travel as `start length` pairs over a 256x1600 mask whose
# pixels are numbered from 1, top to bottom and then left to right
# (column-major). Decoding parses a whole string in C and expands every run
# with one `np.repeat`; encoding finds run edges with array comparisons, so
# neither loops over pixels or runs in Python.

# %%
from collections.abc import Sequence

import numpy as np

from kernelgen.runtime import InputError
from stages.lib.severstal import IMAGE_SHAPE

# Bytes a well-formed RLE may contain; anything else sends the string to the
# slow path that names the offending token.
_ALLOWED = b"0123456789 \t\r\n"

# Segment values for strings of up to 4,096 runs, sliced instead of rebuilt.
_PATTERN = np.resize(np.array([0, 1], dtype=np.uint8), 2 * 4096 + 1)


def _fail(where: str, message: str) -> InputError:
    """The error for a bad RLE, prefixed with the caller's location when given."""
    return InputError(f"{where}: {message}" if where else message)


def _clip(token: str) -> str:
    """A token cut short for an error message when it is long."""
    return token if len(token) <= 20 else token[:17] + "..."


def _explain_tokens(rle: str, where: str) -> InputError:
    """Why a string with characters beyond digits and whitespace is not an RLE."""
    for position, token in enumerate(rle.split(), start=1):
        body = token[1:] if token.startswith("-") else token
        if not (body.isascii() and body.isdigit()):
            return _fail(where, f"RLE token {position} {_clip(token)!r} is not an integer")
        if token.startswith("-"):
            kind = "start" if position % 2 else "length"
            return _fail(
                where, f"RLE {kind} {token} (token {position}) is negative; must be positive"
            )
    return _fail(where, "RLE holds characters other than digits and spaces")


def _explain_values(rle: str, values: np.ndarray, size: int, where: str) -> InputError:
    """Why parsed pairs do not form sorted, non-overlapping runs inside the mask."""
    tokens = rle.split()
    starts = values[0::2]
    lengths = values[1::2]

    def pair_text(pair: int) -> str:
        return f"{_clip(tokens[2 * pair])} {_clip(tokens[2 * pair + 1])}"

    for name, column in (("start", starts), ("length", lengths)):
        bad = np.flatnonzero(column < 1)
        if bad.size:
            pair = int(bad[0])
            return _fail(
                where,
                f"RLE {name} {int(column[pair])} in pair {pair + 1} is not positive",
            )
    past = np.flatnonzero((starts > size) | (lengths > size - starts + 1))
    if past.size:
        pair = int(past[0])
        return _fail(
            where,
            f"RLE run ({pair_text(pair)}) in pair {pair + 1} runs past the last pixel ({size})",
        )
    ends = starts + lengths
    clash = np.flatnonzero(starts[1:] < ends[:-1])
    if clash.size == 0:
        return _fail(where, "RLE runs do not fit the mask")
    pair = int(clash[0])
    before = pair_text(pair)
    after = pair_text(pair + 1)
    if starts[pair + 1] <= starts[pair]:
        return _fail(
            where, f"RLE runs are not sorted: pair {pair + 2} ({after}) follows ({before})"
        )
    return _fail(
        where, f"RLE runs overlap: pair {pair + 2} ({after}) overlaps pair {pair + 1} ({before})"
    )


def _gaps(rle: str, size: int, where: str) -> np.ndarray:
    """Alternating background/defect segment lengths covering all `size` pixels.

    Element 0 is the background before the first run, odd elements are run
    lengths, even ones the gaps between runs, the last the background after
    the final run; they sum to `size`. Raises InputError for any malformed
    string, so this is also the validator.
    """
    rle = rle.strip()
    if not rle:
        return np.full(1, size, dtype=np.int64)
    if not rle.isascii() or rle.encode("ascii").translate(None, _ALLOWED):
        raise _explain_tokens(rle, where)
    # Only digits and whitespace remain, so every value parsed is >= 0 and the
    # C parser reads exactly the tokens `split` would.
    values = np.fromstring(rle, dtype=np.int64, sep=" ")
    count = values.size
    if count % 2:
        raise _fail(where, f"RLE has an odd number of tokens ({count})")
    # Values above `size` are never valid; ruling them out first also rules
    # out integer overflow in the sums below.
    if values.max() > size or np.count_nonzero(values) < count:
        raise _explain_values(rle, values, size, where)
    # Start from the values themselves (odd slots already hold the lengths)
    # and turn each start into the gap since the previous run's end.
    gaps = np.empty(count + 1, dtype=np.int64)
    gaps[:count] = values
    gaps[count] = size + 1
    gaps[2::2] -= values[0::2] + values[1::2]
    gaps[0] -= 1
    # Lengths are positive already; gaps may be zero (touching runs) but not
    # negative (unsorted or overlapping runs).
    if gaps[0::2].min() < 0:
        raise _explain_values(rle, values, size, where)
    return gaps


def _segment_values(segments: int) -> np.ndarray:
    """0, 1, 0, 1, ... : the pixel value of each segment `_gaps` returns."""
    if segments <= _PATTERN.size:
        return _PATTERN[:segments]
    values = np.zeros(segments, dtype=np.uint8)
    values[1::2] = 1
    return values


def rle_runs(
    rle: str, shape: tuple[int, int] = IMAGE_SHAPE, where: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Validated runs as (0-based column-major starts, lengths); areas without decoding.

    Raises InputError, prefixed with `where`, for any malformed string.
    """
    gaps = _gaps(rle, shape[0] * shape[1], where)
    lengths = gaps[1:-1:2]
    starts = np.cumsum(gaps[:-1])[0::2]
    return starts, lengths


def rle_decode(rle: str, shape: tuple[int, int] = IMAGE_SHAPE, where: str = "") -> np.ndarray:
    """Decode one RLE string into a uint8 0/1 mask of `shape` (height, width).

    The result is a Fortran-ordered view (pixels are stored in RLE order);
    use `np.ascontiguousarray` where C order matters. An empty or blank
    string gives an all-zero mask. Malformed strings raise InputError whose
    message starts with `where` (for example "train.csv line 7") when given.
    """
    height, width = shape
    gaps = _gaps(rle, height * width, where)
    flat = np.repeat(_segment_values(gaps.size), gaps)
    return flat.reshape(width, height).T


def rle_decode_many(
    rles: Sequence[str], shape: tuple[int, int] = IMAGE_SHAPE, where: str = ""
) -> np.ndarray:
    """Decode several RLE strings into one (N, height, width) uint8 array.

    One `np.repeat` expands every run of every string into shared storage
    (N, width, height), returned as a transposed view; for a few masks at a
    time (one image's classes) this saves the per-mask copies a stack would
    make. Error messages name the item as `where[i]`.
    """
    height, width = shape
    size = height * width
    if len(rles) == 0:
        return np.zeros((0, height, width), dtype=np.uint8)
    label = where or "RLE"
    parts = [_gaps(rle, size, f"{label}[{index}]") for index, rle in enumerate(rles)]
    gaps = np.concatenate(parts)
    values = np.concatenate([_segment_values(part.size) for part in parts])
    flat = np.repeat(values, gaps)
    return flat.reshape(len(rles), width, height).transpose(0, 2, 1)


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (any nonzero pixel is defect) as sorted, maximal runs.

    Returns "" for an empty mask. Run edges are found on the mask as stored,
    without a transposed copy: vertical neighbours inside each column, and
    the last pixel of each column against the first pixel of the next.
    """
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    height, width = mask.shape
    if mask.size == 0:
        return ""
    on = mask if mask.dtype == np.bool_ else mask != 0
    # An edge at column-major position p (0-based) lies between pixels p-1 and p.
    inside = np.flatnonzero(on[1:, :] != on[:-1, :])
    rows, cols = np.divmod(inside, width)
    across = np.flatnonzero(on[0, 1:] != on[-1, :-1])
    edges = np.concatenate(
        (
            np.zeros(1 if on[0, 0] else 0, dtype=np.int64),
            cols * height + rows + 1,
            (across + 1) * height,
            np.full(1 if on[-1, -1] else 0, height * width, dtype=np.int64),
        )
    )
    if edges.size == 0:
        return ""
    edges.sort()
    runs = edges.copy()
    runs[0::2] += 1
    runs[1::2] -= edges[0::2]
    return " ".join(map(str, runs.tolist()))
