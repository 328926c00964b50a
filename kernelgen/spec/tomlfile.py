"""Reading a TOML file, with failures turned into the caller's own error type."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_toml(path: Path, fail: Callable[[str], Exception]) -> dict[str, Any]:
    """The parsed file; unreadable or invalid TOML raises `fail(message)`."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
