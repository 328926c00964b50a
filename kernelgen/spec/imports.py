"""Importing the project's own modules from its folder: stage modules run here, and the
`package.module:function` hooks pipeline.toml names (local data, report panels).

A project's package may share its name with another project's (every `kernelgen new`
project could be called `comp`), so a module already imported from elsewhere is
dropped before the import.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from kernelgen.errors import ProjectCodeError
from kernelgen.spec.pipeline import Pipeline
from kernelgen.spec.source import syntax_error


def import_project_module(pipeline: Pipeline, module: str) -> ModuleType:
    """Import `module` from the project's folder; a syntax error in it, or in anything it
    imports, is one line naming the file and line."""
    package = module.split(".")[0]
    loaded = sys.modules.get(package)
    origin = getattr(loaded, "__file__", None) or ""
    if loaded is not None and not Path(origin).resolve().is_relative_to(pipeline.root):
        for name in [m for m in sys.modules if m.split(".")[0] == package]:
            del sys.modules[name]
    root = str(pipeline.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module)
    except SyntaxError as exc:
        raise syntax_error(exc) from None


def load_project_function(pipeline: Pipeline, reference: str, *, purpose: str) -> Callable[..., Any]:
    """The function a `package.module:function` reference names; `purpose` says in the
    error what it was for (e.g. `[local] generator`)."""
    module, sep, function = reference.partition(":")
    if not sep or not module or not function:
        raise ProjectCodeError(f"{purpose} {reference!r} must read 'package.module:function'")
    try:
        found = getattr(import_project_module(pipeline, module), function)
    except (ImportError, AttributeError) as exc:
        raise ProjectCodeError(f"{purpose} {reference!r} cannot be loaded ({type(exc).__name__}: {exc})") from None
    if not callable(found):
        raise ProjectCodeError(f"{purpose} {reference!r} is not a function")
    return found
