"""Where the pipeline's files live: beside the package in a wheel, at the repo root otherwise."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    bundled = _PACKAGE / "_data" / name
    if bundled.is_dir():
        return bundled
    return _PACKAGE.parent / name


def templates_dir() -> Path:
    return _data_dir("templates")


def metadata_dir() -> Path:
    return _data_dir("kernel-metadata")


def stages_dir() -> Path:
    """The `stages` package folder, found through its import so wheels and checkouts agree."""
    import stages

    return Path(stages.__file__).resolve().parent
