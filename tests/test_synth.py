"""The synthetic competition data: valid RLE, both CSV formats, determinism, refusals.

Every learning test trains on this data, so a mask that does not match its image or an
RLE the pipeline would reject would make those tests meaningless.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from stages import synth
from stages.lib.rle import rle_decode, rle_encode
from stages.lib.severstal import COMPETITION, IMAGE_SHAPE
from stages.synth import SynthDataset, generate

N_TRAIN, N_TEST = 32, 8


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle))


def _masks_by_image(rows: list[dict[str, str]]) -> dict[str, dict[int, np.ndarray]]:
    masks: dict[str, dict[int, np.ndarray]] = {}
    for row in rows:
        mask = np.asarray(rle_decode(row["EncodedPixels"], IMAGE_SHAPE), dtype=bool)
        masks.setdefault(row["ImageId"], {})[int(row["ClassId"])] = mask
    return masks


def _check_rles(rows: list[dict[str, str]], least: int = 3500) -> None:
    """Each RLE is well formed, round-trips exactly, and classes never share a pixel."""
    for row in rows:
        text = row["EncodedPixels"]
        numbers = np.array(text.split(), dtype=np.int64)
        starts, lengths = numbers[0::2], numbers[1::2]
        assert len(numbers) % 2 == 0 and len(numbers) > 0
        assert (starts >= 1).all() and (lengths >= 1).all()
        assert (starts[1:] > starts[:-1] + lengths[:-1]).all()  # sorted, apart
        assert starts[-1] + lengths[-1] - 1 <= IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
        mask = rle_decode(text, IMAGE_SHAPE)
        assert rle_encode(mask) == text
        # the pipeline drops components under 3,500 pixels; generated ones must survive
        assert mask.sum() > least
    for image_id, by_class in _masks_by_image(rows).items():
        stacked = np.stack(list(by_class.values())).astype(np.int64)
        assert stacked.sum(axis=0).max() <= 1, f"classes overlap in {image_id}"


@pytest.fixture(scope="module")
def new_ds(tmp_path_factory: pytest.TempPathFactory) -> SynthDataset:
    return generate(
        tmp_path_factory.mktemp("synth") / "data", n_train=N_TRAIN, n_test=N_TEST, seed=7
    )


@pytest.fixture(scope="module")
def old_ds(tmp_path_factory: pytest.TempPathFactory) -> SynthDataset:
    return generate(
        tmp_path_factory.mktemp("synth") / "old", n_train=10, n_test=3, seed=7, fmt="old"
    )


def test_layout_is_kaggle_shaped_with_truth_outside(new_ds: SynthDataset) -> None:
    comp = new_ds.competition_dir
    assert comp == new_ds.root / "input" / COMPETITION
    assert sorted(p.name for p in comp.iterdir()) == [
        "sample_submission.csv",
        "test_images",
        "train.csv",
        "train_images",
    ]
    assert new_ds.test_truth == new_ds.root / "truth" / "test_truth.csv"
    assert new_ds.test_truth.is_file()
    assert comp not in new_ds.test_truth.parents
    assert len(list((comp / "train_images").iterdir())) == N_TRAIN
    assert len(list((comp / "test_images").iterdir())) == N_TEST


def test_images_are_three_channel_gray_jpegs_with_real_style_ids(new_ds: SynthDataset) -> None:
    paths = sorted(new_ds.competition_dir.glob("*_images/*"))
    names = [p.name for p in paths]
    assert len(set(names)) == len(names)  # train and test never share an id
    for path in paths:
        assert len(path.stem) == 9 and int(path.stem, 16) >= 0 and path.suffix == ".jpg"
    for path in paths[:6]:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == (IMAGE_SHAPE[1], IMAGE_SHAPE[0])
            pixels = np.asarray(image)
        assert pixels.shape == (*IMAGE_SHAPE, 3)
        assert np.abs(pixels.astype(int) - pixels[:, :, :1]).max() <= 2  # gray replicated
        assert pixels.std() > 5  # textured, not flat


def test_new_format_train_csv(new_ds: SynthDataset) -> None:
    path = new_ds.competition_dir / "train.csv"
    assert _header(path) == ["ImageId", "ClassId", "EncodedPixels"]
    rows = _rows(path)
    images = {p.name for p in (new_ds.competition_dir / "train_images").iterdir()}
    assert {r["ImageId"] for r in rows} <= images
    assert {r["ClassId"] for r in rows} == {"1", "2", "3", "4"}
    keys = [(r["ImageId"], r["ClassId"]) for r in rows]
    assert len(set(keys)) == len(keys)
    _check_rles(rows)


def test_about_half_defect_free_and_class_3_most_common(new_ds: SynthDataset) -> None:
    rows = _rows(new_ds.competition_dir / "train.csv")
    per_image = Counter(r["ImageId"] for r in rows)
    assert 0.35 <= len(per_image) / N_TRAIN <= 0.65
    assert 2 in per_image.values()  # so the overlap check in _check_rles is not vacuous
    class3 = sum(r["ClassId"] == "3" for r in rows)
    assert class3 == max(Counter(r["ClassId"] for r in rows).values())  # most common, as in reality


def test_truth_matches_test_images(new_ds: SynthDataset) -> None:
    assert _header(new_ds.test_truth) == ["ImageId", "ClassId", "EncodedPixels"]
    rows = _rows(new_ds.test_truth)
    tests = {p.name for p in (new_ds.competition_dir / "test_images").iterdir()}
    assert rows and {r["ImageId"] for r in rows} <= tests
    assert {r["ClassId"] for r in rows} == {"1", "2", "3", "4"}
    assert 0 < len({r["ImageId"] for r in rows}) < N_TEST
    _check_rles(rows)


def test_new_sample_submission(new_ds: SynthDataset) -> None:
    path = new_ds.competition_dir / "sample_submission.csv"
    assert _header(path) == ["ImageId", "EncodedPixels", "ClassId"]
    rows = _rows(path)
    tests = sorted(p.name for p in (new_ds.competition_dir / "test_images").iterdir())
    assert len(rows) == len(tests) * 4
    assert sorted({(r["ImageId"], r["ClassId"]) for r in rows}) == [
        (t, c) for t in tests for c in "1234"
    ]
    assert {r["EncodedPixels"] for r in rows} == {"1 1"}


def test_defects_stand_out_from_their_surroundings(new_ds: SynthDataset) -> None:
    """A small network must see them: a clear shift in brightness or texture at each defect."""
    rows = _rows(new_ds.competition_dir / "train.csv")
    for image_id, by_class in list(_masks_by_image(rows).items())[:8]:
        with Image.open(new_ds.competition_dir / "train_images" / image_id) as image:
            gray = np.asarray(image)[:, :, 0].astype(float)
        for class_id, mask in by_class.items():
            ring = ndimage.binary_dilation(mask, iterations=12) & ~mask
            inside, around = gray[mask], gray[ring]
            shift = abs(inside.mean() - around.mean())
            assert shift > 12 or inside.std() > 2 * around.std(), (image_id, class_id)


def test_old_format(old_ds: SynthDataset) -> None:
    comp = old_ds.competition_dir
    train = comp / "train.csv"
    assert _header(train) == ["ImageId_ClassId", "EncodedPixels"]
    rows = _rows(train)
    images = sorted(p.name for p in (comp / "train_images").iterdir())
    assert [r["ImageId_ClassId"] for r in rows] == [f"{i}_{c}" for i in images for c in "1234"]
    filled = [
        {
            "ImageId": r["ImageId_ClassId"].rsplit("_", 1)[0],
            "ClassId": r["ImageId_ClassId"].rsplit("_", 1)[1],
            "EncodedPixels": r["EncodedPixels"],
        }
        for r in rows
        if r["EncodedPixels"]
    ]
    assert filled and len(filled) < len(rows)
    _check_rles(filled)

    sample = comp / "sample_submission.csv"
    assert _header(sample) == ["ImageId_ClassId", "EncodedPixels"]
    tests = sorted(p.name for p in (comp / "test_images").iterdir())
    assert [(r["ImageId_ClassId"], r["EncodedPixels"]) for r in _rows(sample)] == [
        (f"{t}_{c}", "1 1") for t in tests for c in "1234"
    ]
    # the hidden truth keeps the new format whatever train.csv uses
    assert _header(old_ds.test_truth) == ["ImageId", "ClassId", "EncodedPixels"]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", n_train=4, n_test=2, seed=11)
    again = generate(tmp_path / "b", n_train=4, n_test=2, seed=11)
    other = generate(tmp_path / "c", n_train=4, n_test=2, seed=12)
    assert _digest(first.root) == _digest(again.root)
    assert set(_digest(first.root).values()).isdisjoint(_digest(other.root).values())


def test_every_class_shows_up_from_24_images() -> None:
    """Coverage is by construction, whatever the seed; two-class images occur too."""
    two_class = 0
    for seed in range(30):
        for n in (8, 24, 48):
            plans = synth._class_plans(np.random.default_rng(seed), n)
            assert len(plans) == n
            assert {c for plan in plans for c in plan} == {1, 2, 3, 4}
            assert sum(not plan for plan in plans) == n // 2
            two_class += sum(len(plan) == 2 for plan in plans)
    assert two_class > 0


def test_progress_is_reported_per_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate(
        tmp_path / "p",
        n_train=2,
        n_test=1,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_other_sizes_scale_the_defects(tmp_path: Path) -> None:
    ds = generate(tmp_path / "small", n_train=6, n_test=1, height=64, width=400, seed=2)
    with Image.open(next((ds.competition_dir / "train_images").iterdir())) as image:
        assert image.size == (400, 64)
    rows = _rows(ds.competition_dir / "train.csv")
    assert rows
    for row in rows:
        mask = rle_decode(row["EncodedPixels"], (64, 400))
        assert rle_encode(mask) == row["EncodedPixels"]


def test_small_defects_for_classes_1_and_2(tmp_path: Path) -> None:
    """defects="small": class 1/2 regions of a few hundred to a few thousand pixels (below
    stage 4's 3,500 filter), classes 3/4 as before, and the same image ids and plans."""
    ds = generate(tmp_path / "small", n_train=40, n_test=1, seed=1, defects="small")
    normal = generate(tmp_path / "normal", n_train=40, n_test=1, seed=1)
    rows = _rows(ds.competition_dir / "train.csv")
    _check_rles(rows, least=0)
    areas: dict[int, list[int]] = {}
    for row in rows:
        area = int(rle_decode(row["EncodedPixels"], IMAGE_SHAPE).sum())
        areas.setdefault(int(row["ClassId"]), []).append(area)
    assert set(areas) == {1, 2, 3, 4}
    for class_id in (1, 2):
        assert all(150 <= a < 3500 for a in areas[class_id]), areas[class_id]
    for class_id in (3, 4):
        assert min(areas[class_id]) >= 5000
    keys = [(r["ImageId"], r["ClassId"]) for r in _rows(normal.competition_dir / "train.csv")]
    assert [(r["ImageId"], r["ClassId"]) for r in rows] == keys


def test_refuses_non_empty_output_and_leaves_it_alone(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        generate(out, n_train=1, n_test=1)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        generate(a_file, n_train=1, n_test=1)
    assert a_file.read_text() == "x"


def test_accepts_an_existing_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    ds = generate(out, n_train=1, n_test=1)
    assert (ds.competition_dir / "train.csv").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_train": 0}, "n_train"),
        ({"n_test": 0}, "n_test"),
        ({"fmt": "csv"}, "format"),
        ({"seed": -1}, "seed"),
        ({"n_train": 2.5}, "n_train"),
        ({"height": 8}, "height"),
        ({"width": 100}, "width"),
        ({"defects": "tiny"}, "defects"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved: list[Path] = []

    def failing_save(pixels: np.ndarray, path: Path) -> None:
        if saved:
            raise OSError("disk full")
        saved.append(path)
        Image.fromarray(pixels).save(path, format="JPEG")

    monkeypatch.setattr(synth, "_save_jpeg", failing_save)
    with pytest.raises(OSError, match="disk full"):
        generate(tmp_path / "out", n_train=3, n_test=1)
    assert saved and list(tmp_path.iterdir()) == []
