"""Where the tool's own files live: beside the package in a wheel, at the repo root otherwise."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def templates_dir() -> Path:
    bundled = _PACKAGE / "_data" / "templates"
    return bundled if bundled.is_dir() else _PACKAGE.parent / "templates"


def bundled_project() -> Path:
    """The project kernelgen ships as its default: a wheel carries it as data, a checkout at its root."""
    bundled = _PACKAGE / "_data" / "pipeline"
    return bundled if bundled.is_dir() else _PACKAGE.parent
