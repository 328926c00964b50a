"""Resolving a stage's inputs across the mount shapes Kaggle has used, and the kernel's root."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from kernelgen.runtime import InputError
from kernelgen.runtime.cells import cell_name
from kernelgen.runtime.layout import KAGGLE_ROOT, ROOT_ENV, WORKING_ENV, Layout

SLUG = "stage2"


@pytest.mark.parametrize(
    "mount",
    [
        "input/stage2",
        "input/competitions/stage2",
        "input/datasets/someone/stage2",
        "input/notebooks/someone/stage2",
    ],
)
def test_each_known_mount_is_found(tmp_path: Path, mount: str) -> None:
    (tmp_path / mount).mkdir(parents=True)
    (tmp_path / "input" / "other").mkdir()
    layout = Layout(tmp_path)
    assert layout.input(SLUG) == tmp_path / mount
    assert (tmp_path / mount) in layout.candidates(SLUG)


def test_most_specific_mount_wins(tmp_path: Path) -> None:
    for mount in (
        "input/notebooks/a/stage2",
        "input/datasets/b/stage2",
        "input/competitions/stage2",
    ):
        (tmp_path / mount).mkdir(parents=True)
    assert Layout(tmp_path).input(SLUG) == tmp_path / "input/competitions/stage2"
    (tmp_path / "input/stage2").mkdir()
    assert Layout(tmp_path).input(SLUG) == tmp_path / "input/stage2"


def test_several_owners_resolve_in_a_fixed_order(tmp_path: Path) -> None:
    for owner in ("zed", "amy"):
        (tmp_path / "input/datasets" / owner / SLUG).mkdir(parents=True)
    assert Layout(tmp_path).input(SLUG) == tmp_path / "input/datasets/amy/stage2"


def test_a_file_is_not_a_mount(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / SLUG).write_text("not a folder")
    (tmp_path / "input/competitions/stage2").mkdir(parents=True)
    assert Layout(tmp_path).input(SLUG) == tmp_path / "input/competitions/stage2"


def test_error_lists_every_path_tried(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        Layout(tmp_path).input(SLUG)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("input 'stage2' not found; looked in: ")
    for tried in (
        tmp_path / "input/stage2",
        tmp_path / "input/competitions/stage2",
        tmp_path / "input/datasets/<owner>/stage2",
        tmp_path / "input/notebooks/<owner>/stage2",
    ):
        assert str(tried) in message


def test_error_names_the_owner_folders_that_exist(tmp_path: Path) -> None:
    (tmp_path / "input/datasets/someone/stage1").mkdir(parents=True)
    (tmp_path / "input/datasets/someone/stage2").write_text("a file, not a mount")
    with pytest.raises(InputError) as info:
        Layout(tmp_path).input(SLUG)
    assert str(tmp_path / "input/datasets/someone/stage2") in str(info.value)
    assert "stage1" not in str(info.value)


def test_input_file(tmp_path: Path) -> None:
    folder = tmp_path / "input/datasets/someone/stage2"
    folder.mkdir(parents=True)
    (folder / "scores.csv").write_text("x\n")
    layout = Layout(tmp_path)
    assert layout.input_file(SLUG, "scores.csv") == folder / "scores.csv"
    with pytest.raises(InputError) as info:
        layout.input_file(SLUG, "missing.csv")
    assert str(info.value) == f"{folder / 'missing.csv'}: file not found in input 'stage2'"
    with pytest.raises(InputError, match="input 'stage9' not found"):
        layout.input_file("stage9", "scores.csv")


def test_working_is_created(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    assert layout.working == tmp_path / "root" / "working"
    assert layout.working.is_dir()
    elsewhere = Layout(tmp_path / "root", working_dir=tmp_path / "out" / "w")
    assert elsewhere.working == tmp_path / "out" / "w"
    assert elsewhere.working.is_dir()


def test_kaggle_layout_defaults_to_slash_kaggle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.delenv(WORKING_ENV, raising=False)
    layout = Layout.kaggle()
    assert layout.root == Path(KAGGLE_ROOT) == Path("/kaggle")
    assert layout.working_dir is None


def test_kaggle_layout_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "root"))
    monkeypatch.delenv(WORKING_ENV, raising=False)
    layout = Layout.kaggle()
    assert layout.root == tmp_path / "root"
    assert layout.working == tmp_path / "root" / "working"
    monkeypatch.setenv(WORKING_ENV, str(tmp_path / "scratch"))
    layout = Layout.kaggle()
    assert layout.root == tmp_path / "root"
    assert layout.working == tmp_path / "scratch"
    monkeypatch.setenv(WORKING_ENV, "")
    assert Layout.kaggle().working_dir is None


def test_environment_names() -> None:
    assert (ROOT_ENV, WORKING_ENV) == ("KERNELGEN_ROOT", "KERNELGEN_WORKING")


KERNEL_SLUG = "severstal-stage1-classifier"


@pytest.mark.parametrize(
    "mount",
    [
        f"input/notebooks/someone/{KERNEL_SLUG}",
        f"input/{KERNEL_SLUG}",
        "input/datasets/someone/stage1",
        "input/stage1",
    ],
)
@pytest.mark.parametrize("asked", ["stage1", KERNEL_SLUG])
def test_a_kernel_output_is_found_by_the_dataset_slug_or_the_kernel_slug(
    tmp_path: Path, mount: str, asked: str
) -> None:
    (tmp_path / mount).mkdir(parents=True)
    layout = Layout(tmp_path, aliases={"stage1": KERNEL_SLUG})
    assert layout.input(asked) == tmp_path / mount


def test_the_name_asked_for_comes_first_and_the_error_names_both(tmp_path: Path) -> None:
    layout = Layout(tmp_path, aliases={"stage1": KERNEL_SLUG})
    assert layout.names("stage1") == ["stage1", KERNEL_SLUG]
    assert layout.names(KERNEL_SLUG) == [KERNEL_SLUG, "stage1"]
    assert layout.names("stage2") == ["stage2"]
    (tmp_path / "input/stage1").mkdir(parents=True)
    (tmp_path / f"input/notebooks/someone/{KERNEL_SLUG}").mkdir(parents=True)
    assert layout.input("stage1") == tmp_path / "input/stage1"
    assert layout.input(KERNEL_SLUG) == tmp_path / f"input/notebooks/someone/{KERNEL_SLUG}"
    with pytest.raises(InputError) as info:
        Layout(tmp_path / "empty", aliases={"stage4": "severstal-stage4-segmentation"}).input("stage4")
    message = str(info.value)
    assert "input/notebooks/<owner>/stage4" in message
    assert "input/notebooks/<owner>/severstal-stage4-segmentation" in message


def test_kaggle_layout_takes_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ROOT_ENV, raising=False)
    assert Layout.kaggle(aliases={"stage1": KERNEL_SLUG}).aliases == {"stage1": KERNEL_SLUG}
    assert Layout.kaggle().aliases == {}


def test_cell_names_carry_each_field_and_value_in_order() -> None:
    assert cell_name({"fold": 0}) == "fold-0"
    assert cell_name({"fold": 0, "seed": 1}) == "fold-0-seed-1"
    assert cell_name({"encoder_name": "ResNet18", "tta": True}) == "encoder-name-resnet18-tta-true"


def test_cells_of_a_matrix_dataset_are_its_cell_folders_in_order(tmp_path: Path) -> None:
    base = tmp_path / "input" / "datasets" / "me" / "fits"
    for name in ("fold-1", "fold-0", "fold-2"):
        (base / name).mkdir(parents=True)
    cells = [{"fold": 0}, {"fold": 1}, {"fold": 2}]
    layout = Layout(tmp_path, matrix={"fits": cells})
    assert layout.cells("fits") == [(cell, base / f"fold-{cell['fold']}") for cell in cells]
    with pytest.raises(InputError) as caught:
        layout.input("fits")
    assert str(caught.value) == (
        "input 'fits' comes from a matrix stage, one folder per cell (fold-0, fold-1, fold-2): "
        "read it with layout.cells('fits')"
    )
    missing = Layout(tmp_path, matrix={"fits": [*cells, {"fold": 3}]})
    with pytest.raises(InputError, match=r"no folder for cell fold-3: neither .*fits/fold-3 nor .*fits/fold-3\.zip$"):
        missing.cells("fits")


def test_a_cell_uploaded_as_a_zip_archive_is_unpacked_once(tmp_path: Path) -> None:
    """The official client uploads a dataset's folders as zip archives."""
    base = tmp_path / "input" / "fits"
    base.mkdir(parents=True)
    for fold in (0, 1):
        with zipfile.ZipFile(base / f"fold-{fold}.zip", "w") as archive:
            archive.writestr("model.json", f'{{"fold": {fold}}}')
    layout = Layout(tmp_path, matrix={"fits": [{"fold": 0}, {"fold": 1}]})
    first = layout.cells("fits")
    assert [json.loads((folder / "model.json").read_text()) for _, folder in first] == [{"fold": 0}, {"fold": 1}]
    assert layout.cells("fits") == first


def test_cells_read_through_kernels_are_one_kernel_output_per_cell(tmp_path: Path) -> None:
    for cell in ("fold-0", "fold-1"):
        (tmp_path / "input" / "notebooks" / "me" / f"my-fit-{cell}").mkdir(parents=True)
    layout = Layout(tmp_path, aliases={"fits": "my-fit"}, matrix={"fits": [{"fold": 0}, {"fold": 1}]})
    notebooks = tmp_path / "input" / "notebooks" / "me"
    assert layout.cells("fits") == [({"fold": 0}, notebooks / "my-fit-fold-0"), ({"fold": 1}, notebooks / "my-fit-fold-1")]


def test_cells_of_a_plain_input_are_one_cell_without_values(tmp_path: Path) -> None:
    (tmp_path / "input" / "plain").mkdir(parents=True)
    assert Layout(tmp_path).cells("plain") == [({}, tmp_path / "input" / "plain")]


def test_cell_files_are_one_file_of_every_cell_and_name_the_first_absent(tmp_path: Path) -> None:
    base = tmp_path / "input" / "fits"
    for fold in (0, 1, 2):
        (base / f"fold-{fold}").mkdir(parents=True)
        if fold != 1:
            (base / f"fold-{fold}" / "model.json").write_text("{}")
    (tmp_path / "input" / "plain").mkdir()
    (tmp_path / "input" / "plain" / "model.json").write_text("{}")
    layout = Layout(tmp_path, matrix={"fits": [{"fold": 0}, {"fold": 2}]})
    assert layout.cell_files("fits", "model.json") == [base / "fold-0" / "model.json", base / "fold-2" / "model.json"]
    assert layout.cell_files("plain", "model.json") == [tmp_path / "input" / "plain" / "model.json"]
    gap = Layout(tmp_path, matrix={"fits": [{"fold": 0}, {"fold": 1}, {"fold": 2}]})
    with pytest.raises(InputError) as caught:
        gap.cell_files("fits", "model.json")
    assert str(caught.value) == f"{base / 'fold-1' / 'model.json'}: file not found in input 'fits'"
