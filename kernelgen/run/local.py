"""Run one stage here against a Kaggle-shaped root, in-process or as its rendered notebook.

Outputs are written to a fresh folder beside `root/working` and moved into place only
when the stage succeeds, so a failed run leaves the previous outputs untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kernelgen.backends.execute import DEFAULT_JUPYTER_KERNEL, execute_notebook
from kernelgen.build.kernel import RenderedKernel, matrix_inputs, render_stages, stage_cells
from kernelgen.errors import ParameterError, StageRunError
from kernelgen.files import log_tail, staged_dir
from kernelgen.runtime import InputError, Layout
from kernelgen.spec.imports import import_project_module
from kernelgen.spec.matrix import pick_cells
from kernelgen.spec.params import ParamValue
from kernelgen.spec.pipeline import Pipeline, StageSpec
from kernelgen.spec.project import Project


def _promote(root: Path, body: Callable[[Path], None]) -> Path:
    """`body(scratch)` fills a fresh folder that becomes `root/working` when it succeeds."""
    target = root.resolve() / "working"
    with staged_dir(target) as scratch:
        body(scratch)
    return target


def run_stage(
    project: Project,
    number: int,
    root: Path,
    *,
    profile: str | None = None,
    sets: Iterable[str] = (),
    matrix: Iterable[str] = (),
    cell: Mapping[str, str] | None = None,
    notebook: bool = False,
    timeout: int | None = None,
    jupyter_kernel: str = DEFAULT_JUPYTER_KERNEL,
) -> Path:
    """`kernelgen run`: one stage (one cell of a matrix stage, which `cell` names) against
    the Kaggle-shaped folder `root`; returns its outputs folder. With `notebook`, the
    rendered notebook runs in the Jupyter kernel `jupyter_kernel`, else the stage
    module's `run` in this process."""
    overrides = project.overrides(sets, [number])
    matrices = project.matrix_options(matrix, [number])
    cells = stage_cells(project, [number], profile=profile, matrix=matrices)
    chosen = pick_cells(cells[number], cell, stage=number)
    if len(chosen) > 1:
        names = ", ".join(c.name for c in chosen)
        raise ParameterError(f"runs as a matrix ({names}): name one cell with --cell", stage=number)
    if notebook:
        kernel = render_stages(
            project, [number], username="local", profile=profile, overrides=overrides, matrix=matrices, only=chosen
        )[0]
        return run_notebook(kernel, root, packages=project.pipeline.packages, timeout=timeout, jupyter_kernel=jupyter_kernel)
    params = project.params(number, profile=profile, texts=overrides.get(number), cell=chosen[0])
    spec = project.pipeline.stage(number)
    return run_module(project.pipeline, spec, params, root, matrix=matrix_inputs(project.pipeline, spec, cells))


def run_module(
    pipeline: Pipeline,
    spec: StageSpec,
    params: list[ParamValue],
    root: Path,
    *,
    matrix: Mapping[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """Import the stage module and call its `run`; returns the outputs folder. `matrix`
    gives the cells of the inputs a matrix stage made (by dataset slug)."""
    module = import_project_module(pipeline, spec.module)
    values = {p.name: p.value for p in params}

    root = root.resolve()

    def body(working: Path) -> None:
        try:
            module.run(module.Params(**values), Layout(root, working_dir=working, matrix=dict(matrix or {})))
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
            raise StageRunError(result.error, stage=kernel.stage, log_tail=log_tail(result.log))

    return _promote(root, body)
