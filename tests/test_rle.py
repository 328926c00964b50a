"""RLE encode/decode: column-major order, round trips, and strict validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kernelgen.runtime import InputError
from stages.lib.rle import rle_decode, rle_decode_many, rle_encode, rle_runs
from stages.lib.severstal import IMAGE_SHAPE

HEIGHT, WIDTH = IMAGE_SHAPE
PIXELS = HEIGHT * WIDTH


def reference_encode(mask: np.ndarray) -> str:
    """Pixel-by-pixel encoder, slow and obviously right, for small masks."""
    flat = [bool(v) for v in mask.T.reshape(-1)]
    runs: list[int] = []
    start = None
    for index, on in enumerate([*flat, False]):
        if on and start is None:
            start = index
        elif not on and start is not None:
            runs += [start + 1, index - start]
            start = None
    return " ".join(map(str, runs))


small_masks = st.tuples(st.integers(1, 9), st.integers(1, 9)).flatmap(
    lambda shape: arrays(np.uint8, shape, elements=st.sampled_from([0, 1, 7, 255]))
)


@st.composite
def run_lists(draw: st.DrawFn, size: int = PIXELS) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, length) pairs inside 1..size; runs may touch."""
    count = draw(st.integers(0, 30))
    cuts = sorted(draw(st.lists(st.integers(1, size + 1), min_size=2 * count, max_size=2 * count)))
    runs = []
    for left, right in zip(cuts[0::2], cuts[1::2], strict=True):
        if right > left:
            runs.append((left, right - left))
    return runs


def test_column_major_order_matches_a_hand_computed_mask() -> None:
    # 3 rows x 4 columns; pixel numbers run down each column first:
    #  1  4  7 10
    #  2  5  8 11
    #  3  6  9 12
    mask = rle_decode("2 3 9 2 12 1", (3, 4))
    expected = np.array(
        [
            [0, 1, 0, 1],
            [1, 0, 0, 0],
            [1, 0, 1, 1],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == np.uint8
    assert rle_encode(expected) == "2 3 9 2 12 1"


def test_default_shape_is_the_competition_mask() -> None:
    mask = rle_decode("257 2")
    assert mask.shape == (256, 1600)
    # Pixel 257 is the top of the second column.
    assert mask[0, 1] == 1 and mask[1, 1] == 1 and mask.sum() == 2


@pytest.mark.parametrize(
    ("rle", "area", "pixel"),
    [
        ("1 1", 1, (0, 0)),
        (f"{PIXELS} 1", 1, (HEIGHT - 1, WIDTH - 1)),
        (f"1 {HEIGHT}", HEIGHT, (HEIGHT - 1, 0)),
        (f"{PIXELS - HEIGHT + 1} {HEIGHT}", HEIGHT, (0, WIDTH - 1)),
        (f"1 {PIXELS}", PIXELS, (HEIGHT // 2, WIDTH // 2)),
    ],
    ids=["first-pixel", "last-pixel", "first-column", "last-column", "full-mask"],
)
def test_edge_pixels_round_trip(rle: str, area: int, pixel: tuple[int, int]) -> None:
    mask = rle_decode(rle)
    assert int(mask.sum()) == area
    assert mask[pixel] == 1
    assert rle_encode(mask) == rle


def test_empty_mask_and_blank_strings() -> None:
    empty = np.zeros(IMAGE_SHAPE, dtype=np.uint8)
    assert rle_encode(empty) == ""
    for blank in ("", " ", "\n", " \t "):
        decoded = rle_decode(blank)
        assert decoded.shape == IMAGE_SHAPE and not decoded.any()


def test_surrounding_whitespace_and_tabs_are_accepted() -> None:
    np.testing.assert_array_equal(rle_decode(" 1 2\t5 1\n", (3, 2)), rle_decode("1 2 5 1", (3, 2)))


@settings(max_examples=200, deadline=None)
@given(small_masks)
def test_encode_matches_reference_and_round_trips(mask: np.ndarray) -> None:
    rle = rle_encode(mask)
    assert rle == reference_encode(mask)
    np.testing.assert_array_equal(rle_decode(rle, mask.shape), (mask != 0).astype(np.uint8))


@settings(max_examples=100, deadline=None)
@given(run_lists())
def test_full_size_runs_round_trip_to_maximal_runs(runs: list[tuple[int, int]]) -> None:
    rle = " ".join(f"{start} {length}" for start, length in runs)
    mask = rle_decode(rle)
    flat = np.zeros(PIXELS, dtype=np.uint8)
    for start, length in runs:
        flat[start - 1 : start - 1 + length] = 1
    np.testing.assert_array_equal(mask, flat.reshape(WIDTH, HEIGHT).T)
    # Touching runs merge, so the encoding is the canonical (maximal) one.
    merged: list[list[int]] = []
    for start, length in runs:
        if merged and merged[-1][0] + merged[-1][1] == start:
            merged[-1][1] += length
        else:
            merged.append([start, length])
    encoded = rle_encode(mask)
    assert encoded == " ".join(f"{start} {length}" for start, length in merged)
    np.testing.assert_array_equal(rle_decode(encoded), mask)


@settings(max_examples=50, deadline=None)
@given(st.lists(run_lists(size=60), min_size=0, max_size=5))
def test_decode_many_equals_decoding_one_by_one(lists: list[list[tuple[int, int]]]) -> None:
    rles = [" ".join(f"{s} {n}" for s, n in runs) for runs in lists]
    many = rle_decode_many(rles, (6, 10))
    assert many.shape == (len(rles), 6, 10)
    for rle, mask in zip(rles, many, strict=True):
        np.testing.assert_array_equal(mask, rle_decode(rle, (6, 10)))


def test_runs_are_zero_based_starts_and_lengths() -> None:
    starts, lengths = rle_runs("1 3 10 2 12 5")
    assert starts.tolist() == [0, 9, 11]
    assert lengths.tolist() == [3, 2, 5]
    starts, lengths = rle_runs("")
    assert starts.size == 0 and lengths.size == 0


def test_encode_treats_any_nonzero_as_defect_and_refuses_non_2d() -> None:
    mask = np.zeros((4, 3), dtype=np.float32)
    mask[1, 0] = 0.25
    mask[3, 2] = -1.0
    assert rle_encode(mask) == "2 1 12 1"
    assert rle_encode(mask.astype(bool)) == "2 1 12 1"
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros((2, 2, 2)))


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 3", "odd number of tokens (3)"),
        ("1 2 3 4 5", "odd number of tokens (5)"),
        ("1 x", "token 2 'x' is not an integer"),
        ("1 2.5", "token 2 '2.5' is not an integer"),
        ("1e3 4", "token 1 '1e3' is not an integer"),
        ("1 ２", "token 2 '２' is not an integer"),
        ("1,2", "token 1 '1,2' is not an integer"),
        ("0 3", "start 0 in pair 1 is not positive"),
        ("1 0", "length 0 in pair 1 is not positive"),
        ("5 2 0 1", "start 0 in pair 2 is not positive"),
        ("-4 3", "start -4 (token 1) is negative"),
        ("4 -3", "length -3 (token 2) is negative"),
        ("5 1 3 1", "not sorted: pair 2 (3 1) follows (5 1)"),
        ("5 1 5 1", "not sorted: pair 2 (5 1) follows (5 1)"),
        ("5 3 6 1", "overlap: pair 2 (6 1) overlaps pair 1 (5 3)"),
        (f"{PIXELS} 2", f"run ({PIXELS} 2) in pair 1 runs past the last pixel ({PIXELS})"),
        (f"1 1 {PIXELS + 1} 1", f"run ({PIXELS + 1} 1) in pair 2 runs past the last pixel"),
        ("1 99999999999999999999999", "run (1 99999999999999999...) in pair 1 runs past"),
    ],
)
def test_malformed_rle_raises_input_error_saying_what(rle: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        rle_decode(rle, where="train.csv line 7")
    text = str(caught.value)
    assert text.startswith("train.csv line 7: RLE ")
    assert message in text
    assert "\n" not in text
    with pytest.raises(InputError):
        rle_runs(rle)


def test_touching_runs_are_valid() -> None:
    assert rle_encode(rle_decode("1 2 3 2", (5, 1))) == "1 4"


def test_decode_many_names_the_bad_item() -> None:
    with pytest.raises(InputError, match=r"^rows\[1\]: RLE has an odd number of tokens"):
        rle_decode_many(["1 1", "1 2 3"], where="rows")
    assert rle_decode_many([], (2, 3)).shape == (0, 2, 3)
