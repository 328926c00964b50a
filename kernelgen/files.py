"""Writing files and folders so that a crash or Ctrl-C never leaves one half-written.

A file is written beside its target and renamed over it; a folder is filled under a
hidden partial name and swapped into place whole. Readers therefore see the old
version or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".partial"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` by way of a partial file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    if isinstance(data, str):
        partial.write_text(data, encoding="utf-8")
    else:
        partial.write_bytes(data)
    os.replace(partial, path)


def json_text(payload: Any) -> str:
    """The one JSON layout kernelgen writes: indented, keys sorted, a final newline."""
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json_atomic(path: Path, payload: Any) -> None:
    write_atomic(path, json_text(payload))


def replace_dir(source: Path, target: Path) -> None:
    """Move the finished folder `source` into place as `target`, replacing what was there."""
    if target.exists():
        trash = target.with_name(f".{target.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        target.rename(trash)
        source.rename(target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        source.rename(target)


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A fresh folder to fill beside `target`, swapped in for it when the block ends without
    an error and removed when it raises; `target` is untouched until then."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    replace_dir(scratch, target)


LOG_TAIL_LINES = 20


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a run's log: what an error message shows of it."""
    return "\n".join(text.rstrip().splitlines()[-lines:])
