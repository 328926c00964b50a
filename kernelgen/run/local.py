"""Run one stage here against a Kaggle-shaped root, in-process or as its rendered notebook.

Outputs are written to a fresh folder beside `root/working` and moved into place only
when the stage succeeds, so a failed run leaves the previous outputs untouched.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from kernelgen.backends.execute import DEFAULT_JUPYTER_KERNEL, execute_notebook
from kernelgen.build.kernel import RenderedKernel, replace_dir
from kernelgen.errors import StageRunError
from kernelgen.runtime import InputError, Layout
from kernelgen.spec.params import ParamValue
from kernelgen.spec.pipeline import Pipeline, StageSpec


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


def import_project_module(pipeline: Pipeline, module: str) -> ModuleType:
    """Import a module of the project from its folder, not from another project of the same package name."""
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
    return importlib.import_module(module)


def load_project_function(pipeline: Pipeline, reference: str) -> Callable[..., Any]:
    """The function a `package.module:function` reference in pipeline.toml names.

    Raises ImportError or AttributeError when it cannot be loaded; callers say what it was for.
    """
    module, _, function = reference.partition(":")
    return getattr(import_project_module(pipeline, module), function)


def run_module(pipeline: Pipeline, spec: StageSpec, params: list[ParamValue], root: Path) -> Path:
    """Import the stage module and call its `run`; returns the outputs folder."""
    module = import_project_module(pipeline, spec.module)
    values = {p.name: p.value for p in params}

    root = root.resolve()

    def body(working: Path) -> None:
        try:
            module.run(module.Params(**values), Layout(root, working_dir=working))
        except InputError as exc:
            raise StageRunError(str(exc), stage=spec.number) from None

    return _promote(root, body)


def run_notebook(
    kernel: RenderedKernel,
    root: Path,
    *,
    packages: tuple[str, ...] = (),
    timeout: int | None = None,
    jupyter_kernel: str = DEFAULT_JUPYTER_KERNEL,
) -> Path:
    """Execute the rendered notebook in a fresh interpreter (the Jupyter kernel named
    `jupyter_kernel`); returns the outputs folder."""

    def body(working: Path) -> None:
        result = execute_notebook(
            kernel.files[kernel.code_file],
            root,
            working=working,
            timeout=timeout,
            kernel_name=jupyter_kernel,
            packages=packages,
        )
        (working / f"{kernel.slug}.log").write_text(result.log, encoding="utf-8")
        if not result.ok:
            raise StageRunError(result.error, stage=kernel.stage, log_tail=result.tail())

    return _promote(root, body)
