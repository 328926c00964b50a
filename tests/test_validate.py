"""What the Kaggle client refuses on push or dataset create, refused before any write."""

from __future__ import annotations

from typing import Any

import pytest

from kernelgen.build.validate import (
    check_username,
    kernel_slug,
    validate_dataset_metadata,
    validate_kernel_metadata,
)
from kernelgen.errors import MetadataError

WHERE = "stage 5 kernel-metadata.json"
FILES = {"kernel-metadata.json": b"{}", "stage5.ipynb": b"{}"}


def kernel_meta(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "id": "someone/severstal-stage5-submission",
        "title": "Severstal Stage5 Submission",
        "code_file": "stage5.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": False,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": ["someone/stage4", "someone/stage2/3"],
        "competition_sources": ["severstal-steel-defect-detection"],
        "kernel_sources": ["other/kernel-x"],
        "model_sources": [],
    }
    for key, value in changes.items():
        if value is ...:
            del meta[key]
        else:
            meta[key] = value
    return meta


def refuse_kernel(meta: dict[str, Any], needle: str) -> None:
    with pytest.raises(MetadataError) as info:
        validate_kernel_metadata(meta, FILES, where=WHERE)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"{WHERE}: ")
    assert info.value.where == WHERE


def test_valid_kernel_metadata_passes() -> None:
    validate_kernel_metadata(kernel_meta(), FILES, where=WHERE)
    validate_kernel_metadata(kernel_meta(title="Short", id="u/short"), FILES, where=WHERE)
    validate_kernel_metadata(
        kernel_meta(dataset_sources=[], kernel_sources=...), FILES, where=WHERE
    )


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"title": "Abcd", "id": "u/abcd"}, "at least five characters"),
        ({"title": ...}, "at least five characters"),
        ({"title": 12345}, "at least five characters"),
        ({"title": "A" * 51, "id": "u/" + "a" * 51}, "at most 50 characters"),
        ({"id": ...}, "'id' must be 'owner/slug'"),
        ({"id": ["u", "s"]}, "'id' must be 'owner/slug'"),
        (
            {"id": "severstal-stage5-submission"},
            "kernel id 'severstal-stage5-submission' must have the form owner/slug",
        ),
        ({"id": "u/severstal-stage5-submission/2"}, "must have the form owner/slug"),
        ({"id": "/severstal-stage5-submission"}, "must have the form owner/slug"),
        (
            {"id": "someone/stage5"},
            "slugifies to 'severstal-stage5-submission', not the kernel slug 'stage5'",
        ),
        ({"language": "julia"}, "language must be one of python, r, rmarkdown"),
        ({"language": ...}, "language must be one of"),
        ({"kernel_type": "lab"}, "kernel_type must be one of script, notebook"),
        ({"code_file": "other.ipynb"}, "code_file 'other.ipynb' is not among the rendered files"),
        ({"code_file": ...}, "code_file None is not among the rendered files"),
        (
            {"dataset_sources": ["stage4"]},
            "dataset source 'stage4' must have the form owner/slug or owner/slug/version",
        ),
        ({"dataset_sources": ["a/b/c/d"]}, "dataset source 'a/b/c/d'"),
        ({"dataset_sources": ["a//b"]}, "dataset source 'a//b'"),
        ({"kernel_sources": ["kernel-x"]}, "kernel source 'kernel-x'"),
        ({"competition_sources": ["kaggle/severstal"]}, "must be a competition slug"),
        ({"competition_sources": [""]}, "must be a competition slug"),
        ({"competition_sources": [3]}, "must be a competition slug"),
        ({"is_private": "true"}, "is_private must be true or false"),
        ({"enable_gpu": 1}, "enable_gpu must be true or false"),
        ({"enable_tpu": ...}, "enable_tpu must be true or false"),
        ({"enable_internet": None}, "enable_internet must be true or false"),
    ],
)
def test_kernel_metadata_refused(changes: dict[str, Any], needle: str) -> None:
    refuse_kernel(kernel_meta(**changes), needle)


def test_kernel_slug() -> None:
    assert kernel_slug("Severstal Stage5 Submission") == "severstal-stage5-submission"
    assert kernel_slug("Stage 3: Threshold!") == "stage-3-threshold"


@pytest.mark.parametrize("name", ["someone", "some-one", "some_one", "A1"])
def test_username_accepted(name: str) -> None:
    check_username(name, where="x")


@pytest.mark.parametrize("name", ["", "no spaces", "-lead", "a/b", "é"])
def test_username_refused(name: str) -> None:
    with pytest.raises(MetadataError, match=r"^x: Kaggle username .* is not valid \(letters, digits"):
        check_username(name, where="x")


def dataset_meta(**changes: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "id": "someone/stage2",
        "title": "Severstal Stage2",
        "licenses": [{"name": "CC0-1.0"}],
    }
    for key, value in changes.items():
        if value is ...:
            del meta[key]
        else:
            meta[key] = value
    return meta


def test_valid_dataset_metadata_passes() -> None:
    validate_dataset_metadata(dataset_meta(), where="d")
    validate_dataset_metadata(dataset_meta(id="u/" + "s" * 50, title="T" * 50), where="d")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"id": ...}, "'id' must be 'owner/slug'"),
        ({"id": "stage2"}, "dataset id 'stage2' must have the form owner/slug"),
        ({"id": "someone/stage2/1"}, "must have the form owner/slug"),
        ({"id": "someone/stg2"}, "dataset slug 'stg2' must have 6 to 50 characters"),
        ({"id": "someone/" + "s" * 51}, "must have 6 to 50 characters"),
        ({"title": "Stage"}, "dataset title 'Stage' must have 6 to 50 characters"),
        ({"title": "T" * 51}, "dataset title"),
        ({"title": ...}, "dataset title None"),
        ({"licenses": []}, "exactly one license"),
        ({"licenses": ...}, "exactly one license"),
        ({"licenses": [{"name": "CC0-1.0"}, {"name": "MIT"}]}, "exactly one license"),
        ({"licenses": [{"name": ""}]}, "exactly one license"),
        ({"licenses": [{}]}, "exactly one license"),
    ],
)
def test_dataset_metadata_refused(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(MetadataError) as info:
        validate_dataset_metadata(dataset_meta(**changes), where="stage2 dataset-metadata.json")
    assert needle in str(info.value)
    assert info.value.where == "stage2 dataset-metadata.json"
