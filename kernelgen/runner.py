"""Run one stage here against a Kaggle-shaped root, in-process or as its rendered notebook.

Outputs are written to a fresh folder beside `root/working` and moved into place only
when the stage succeeds, so a failed run leaves the previous outputs untouched.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from kernelgen.errors import StageRunError
from kernelgen.execute import execute_notebook
from kernelgen.params import ParamValue
from kernelgen.pipeline import StageSpec
from kernelgen.render import RenderedKernel, replace_dir


def _promote(root: Path, body: Callable[[Path], None]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=".working-"))
    try:
        body(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    target = root / "working"
    replace_dir(scratch, target)
    return target


def run_module(spec: StageSpec, params: list[ParamValue], root: Path) -> Path:
    """Import the stage module and call its `run`; returns the outputs folder."""
    from stages.lib.errors import InputError
    from stages.lib.layout import Layout

    module = importlib.import_module(spec.module)
    values = {p.name: p.value for p in params}

    root = root.resolve()

    def body(working: Path) -> None:
        try:
            module.run(module.Params(**values), Layout(root, working_dir=working))
        except InputError as exc:
            raise StageRunError(str(exc), stage=spec.number) from None

    return _promote(root, body)


def run_notebook(kernel: RenderedKernel, root: Path, *, timeout: int | None = None) -> Path:
    """Execute the rendered notebook in a fresh interpreter; returns the outputs folder."""

    def body(working: Path) -> None:
        result = execute_notebook(kernel.files[kernel.code_file], root, working=working, timeout=timeout)
        (working / f"{kernel.slug}.log").write_text(result.log, encoding="utf-8")
        if not result.ok:
            raise StageRunError(result.error, stage=kernel.stage, log_tail=result.tail())

    return _promote(root, body)
