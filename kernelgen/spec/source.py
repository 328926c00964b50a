"""Reading the project's Python source without running it.

Rendering learns a stage's parameters and the modules it needs from syntax trees, so a
syntax error anywhere in the project surfaces here first: as one line naming the file
and line, the way a compiler would say it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from kernelgen.errors import SourceSyntaxError


def parse_source(path: Path, text: str | None = None) -> ast.Module:
    """The syntax tree of the module at `path` (its `text` when already read)."""
    source = path.read_text(encoding="utf-8") if text is None else text
    try:
        return ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise syntax_error(exc, path) from None


def syntax_error(exc: SyntaxError, path: Path | None = None) -> SourceSyntaxError:
    """A SyntaxError from parsing or importing, as kernelgen reports it."""
    where = Path(exc.filename) if exc.filename and not exc.filename.startswith("<") else path
    return SourceSyntaxError(where or Path("<unknown>"), exc.lineno, exc.msg)
