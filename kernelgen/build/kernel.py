"""Stage module + the library code it uses + resolved parameters -> a Kaggle kernel folder.

Rendering is pure: the same inputs give byte-identical files, so the digest of a
rendered kernel tells the chain whether a stage must run again. Writing is done in
one place, all stages at once, through a temporary folder.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from kernelgen.build import notebook as nb
from kernelgen.build.metadata import KERNEL_METADATA_FILE, kernel_metadata, metadata_bytes
from kernelgen.build.modules import SourceModule, collect_modules
from kernelgen.build.templating import pyliteral, render_template
from kernelgen.build.validate import check_username, kernel_slug
from kernelgen.build.wheels import wheel_house
from kernelgen.errors import RenderError
from kernelgen.files import replace_dir
from kernelgen.spec.machine import Session
from kernelgen.spec.matrix import Cell, MatrixOptions
from kernelgen.spec.params import ParamValue
from kernelgen.spec.pipeline import Pipeline, StageSpec, Via
from kernelgen.spec.project import Overrides, Project

METADATA_FILE = KERNEL_METADATA_FILE


@dataclass(frozen=True)
class RenderedKernel:
    stage: int
    kernel_id: str
    code_file: str
    files: Mapping[str, bytes]
    params: tuple[ParamValue, ...]
    cell: Cell | None = None

    @property
    def folder(self) -> str:
        """Its folder among the rendered kernels: `stage4`, `stage4-fold-0`."""
        return self.cell.folder if self.cell is not None else f"stage{self.stage}"

    @property
    def slug(self) -> str:
        return self.kernel_id.split("/")[1]

    @property
    def digest(self) -> str:
        """A content hash of every rendered file."""
        return kernel_digest(self.files)


def kernel_digest(files: Mapping[str, bytes]) -> str:
    """A content hash of a kernel's files, names included."""
    hasher = hashlib.sha256()
    for name in sorted(files):
        hasher.update(name.encode() + b"\0" + files[name] + b"\0")
    return hasher.hexdigest()


MODULES_VARIABLE = "KERNEL_MODULES"


def _module_cells(module: SourceModule) -> list[nbformat.NotebookNode]:
    """A module as cells: its markdown as it is, its code written to its file in the kernel."""
    cells = []
    written = False
    for cell in nb.percent_cells(module.text):
        if cell.cell_type == "markdown":
            cells.append(cell)
            continue
        magic = f"%%writefile {'-a ' if written else ''}{{{MODULES_VARIABLE}}}/{module.file}"
        cells.append(nb.code_cell(f"{magic}\n{cell.source}"))
        written = True
    if not written:
        cells.append(nb.code_cell(f"%%writefile {{{MODULES_VARIABLE}}}/{module.file}\n# (empty module)"))
    return cells


TITLE_LIMIT = 50
"""Kaggle's longest kernel title."""


def base_title(spec: StageSpec, cells: Sequence[Cell]) -> str:
    """The stage's title, cut at a word where needed so that each cell's title, the base
    and its cell's name, fits Kaggle's limit."""
    longest = max((len(cell.name) + 1 for cell in cells if cell.values), default=0)
    if len(spec.title) + longest <= TITLE_LIMIT:
        return spec.title
    room = TITLE_LIMIT - longest
    cut = spec.title[:room].rsplit(" ", 1)[0] if " " in spec.title[:room] else spec.title[:room]
    if len(kernel_slug(cut)) < 5:
        raise RenderError(f"the title {spec.title!r} leaves too little room for cell names up to {longest - 1} characters", stage=spec.number)
    return cut


def kernel_title(spec: StageSpec, cells: Sequence[Cell], cell: Cell) -> str:
    """A cell's kernel title: `Severstal Stage4 Segmentation fold-0`; the stage's own for a
    stage without a matrix."""
    return f"{base_title(spec, cells)} {cell.name}" if cell.values else spec.title


@dataclass(frozen=True)
class KernelInput:
    """An input read from kernel outputs: the slug Layout knows it by (the producing
    stage's; its cells' kernels extend it with their names) and each kernel's ref."""

    alias: str
    refs: tuple[str, ...]


def kernel_inputs(
    pipeline: Pipeline,
    spec: StageSpec,
    username: str,
    versions: Mapping[str, int] | None = None,
    cells: Mapping[int, Sequence[Cell]] | None = None,
) -> dict[str, KernelInput]:
    """The stage's `via = "kernel"` inputs by dataset slug, each producing kernel named
    `owner/slug/version` (`owner/slug`, its latest version, when `versions`, by cell key,
    has none): one kernel, or one per cell of a matrix stage."""
    found = {}
    for slug in spec.dataset_sources:
        dataset = pipeline.datasets[slug]
        if dataset.via is not Via.KERNEL:
            continue
        producer = pipeline.stage(dataset.producer)
        made = list((cells or {}).get(producer.number, [Cell(producer.number)]))
        refs = []
        for cell in made:
            ref = f"{username}/{kernel_slug(kernel_title(producer, made, cell))}"
            version = (versions or {}).get(cell.key)
            refs.append(f"{ref}/{version}" if version is not None else ref)
        found[slug] = KernelInput(kernel_slug(base_title(producer, made)), tuple(refs))
    return found


def matrix_inputs(pipeline: Pipeline, spec: StageSpec, cells: Mapping[int, Sequence[Cell]] | None) -> dict[str, list[dict[str, Any]]]:
    """The stage's inputs made by a matrix stage: dataset slug -> each cell's values, in
    order. Such an input holds that stage's files alone."""
    found = {}
    for slug in spec.dataset_sources:
        dataset = pipeline.datasets[slug]
        matrixed = [n for n in dataset.stages if any(c.values for c in (cells or {}).get(n, ()))]
        if not matrixed:
            continue
        if len(dataset.stages) > 1:
            raise RenderError(
                f"dataset {slug} takes files from stages {list(dataset.stages)}, and stage {matrixed[0]} runs as a "
                "matrix: a matrix stage's files need a dataset of their own",
                stage=spec.number,
            )
        found[slug] = [cell.as_dict() for cell in (cells or {})[matrixed[0]]]
    return found


def model_inputs(
    pipeline: Pipeline, spec: StageSpec, username: str, versions: Mapping[str, int] | None = None
) -> dict[str, str]:
    """The stage's `via = "model"` inputs: dataset slug -> the model version it reads,
    `owner/model/framework/variation/version` (without the version when none is known:
    what `kernelgen render` shows outside a work folder)."""
    found = {}
    for slug in spec.dataset_sources:
        dataset = pipeline.datasets[slug]
        if dataset.via is Via.MODEL:
            instance = dataset.model_instance(username)
            version = (versions or {}).get(slug)
            found[slug] = f"{instance}/{version}" if version is not None else instance
    return found


def _cells(
    pipeline: Pipeline,
    spec: StageSpec,
    params: list[ParamValue],
    profile: str,
    aliases: Mapping[str, str],
    models: Mapping[str, str],
    matrix: Mapping[str, list[dict[str, Any]]],
    title: str,
    cell: Cell,
) -> list[nbformat.NotebookNode]:
    modules = collect_modules(spec.module, root=pipeline.root, packages=pipeline.packages, stage=spec.number)
    taken = set(modules.main.names) | {MODULES_VARIABLE}
    clashes = sorted(p.name for p in params if p.name in taken)
    if clashes:
        raise RenderError(
            f"parameter names {clashes} clash with top-level names of the stage module", stage=spec.number
        )
    main_cells = nb.percent_cells(modules.main.text)
    if main_cells and main_cells[0].cell_type == "markdown":
        title = main_cells.pop(0)
    else:
        title = nb.markdown_cell(render_template("title.md.j2", stage=spec.number, title=title))
    cells = [
        title,
        nb.markdown_cell(
            render_template(
                "provenance.md.j2", stage=spec.number, module=spec.module, profile=profile, cell=cell.as_dict()
            )
        ),
    ]
    if spec.pip:
        house = wheel_house(pipeline, spec)
        cells.append(
            nb.code_cell(
                render_template(
                    "pip.py.j2", stage=spec.number, requirements=spec.pip, house=house.slug if house else None
                )
            )
        )
    cells.append(
        nb.code_cell(render_template("parameters.py.j2", stage=spec.number, params=params), tags=("parameters",))
    )
    cells.append(nb.code_cell(render_template("modules.py.j2", stage=spec.number, packages=modules.packages)))
    for module in modules.modules:
        cells.extend(_module_cells(module))
    cells.extend(main_cells)
    cells.append(
        nb.code_cell(
            render_template(
                "run.py.j2",
                stage=spec.number,
                params=params,
                aliases=sorted(aliases.items()),
                models=sorted(models.items()),
                matrix=[(slug, _cells_literal(values)) for slug, values in sorted(matrix.items())],
            )
        )
    )
    return cells


def _cells_literal(cells: Sequence[Mapping[str, Any]]) -> str:
    """Cells' values as a Python literal: `[{"fold": 0}, {"fold": 1}]`."""
    items = ("{" + ", ".join(f"{pyliteral(k)}: {pyliteral(v)}" for k, v in cell.items()) + "}" for cell in cells)
    return "[" + ", ".join(items) + "]"


def render_stage(
    pipeline: Pipeline,
    number: int,
    *,
    username: str,
    params: list[ParamValue],
    profile: str,
    session: Session | None = None,
    kernel_versions: Mapping[str, int] | None = None,
    wheel_versions: Mapping[str, int] | None = None,
    model_versions: Mapping[str, int] | None = None,
    cell: Cell | None = None,
    cells: Mapping[int, Sequence[Cell]] | None = None,
) -> RenderedKernel:
    """Render one stage's kernel (one cell's, for a matrix stage) in memory and validate it
    as the Kaggle client would.

    `session` replaces the stage's declared session settings (another accelerator);
    `kernel_versions` gives the output version of each kernel (by cell key: `1`,
    `1/fold-0`) whose output a `via = "kernel"` input reads, `wheel_versions` that of each
    wheel house (by slug) an internet-off stage installs from, and `model_versions` the
    version of each `via = "model"` input (by dataset slug). `cells` lists the cells of
    the stage and of the stages it reads from (a stage without a matrix may be left out).
    """
    spec = pipeline.stage(number)
    cell = cell or Cell(number)
    check_username(username, where="--user, config, KAGGLE_USERNAME or kaggle.json")
    session = session or spec.session
    code_file = f"{spec.name}.ipynb"
    through_kernels = kernel_inputs(pipeline, spec, username, kernel_versions, cells)
    aliases = {slug: found.alias for slug, found in through_kernels.items()}
    models = model_inputs(pipeline, spec, username, model_versions)
    mounted = {slug: ref for slug, ref in models.items() if ref.count("/") == 4}
    matrix = matrix_inputs(pipeline, spec, cells)
    title = kernel_title(spec, list((cells or {}).get(number, [cell])), cell)
    notebook = nb.assemble(
        _cells(pipeline, spec, params, profile, aliases, mounted, matrix, title, cell), prefix=spec.name
    )
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as exc:
        raise RenderError(f"notebook is not valid nbformat: {exc.message}", stage=number) from None
    code = nb.to_bytes(notebook)
    meta = kernel_metadata(
        kernel_id=f"{username}/{kernel_slug(title)}",
        title=title,
        code_file=code_file,
        files={code_file: code},
        session=session,
        enable_internet=spec.enable_internet,
        language=spec.language,
        kernel_type=spec.kernel_type,
        is_private=spec.is_private,
        dataset_sources=[
            f"{username}/{slug}" for slug in spec.dataset_sources if slug not in through_kernels and slug not in models
        ],
        competition_sources=spec.competition_sources,
        kernel_sources=[
            *(ref for found in through_kernels.values() for ref in found.refs),
            *_wheels_source(pipeline, spec, username, wheel_versions),
        ],
        model_sources=list(models.values()),
        where=f"{cell} {METADATA_FILE}",
    )
    files = {METADATA_FILE: metadata_bytes(meta), code_file: code}
    return RenderedKernel(
        stage=number, kernel_id=meta["id"], code_file=code_file, files=files, params=tuple(params), cell=cell
    )


def _wheels_source(
    pipeline: Pipeline, spec: StageSpec, username: str, versions: Mapping[str, int] | None
) -> list[str]:
    """The wheel house an internet-off stage with `pip` reads: `owner/slug[/version]`."""
    house = wheel_house(pipeline, spec)
    if house is None:
        return []
    version = (versions or {}).get(house.slug)
    ref = house.kernel_id(username)
    return [f"{ref}/{version}" if version is not None else ref]


def write_kernels(kernels: Iterable[RenderedKernel], out: Path) -> list[Path]:
    """Write `out/stageN/` (`out/stageN-<cell>/`) for each kernel; on failure nothing
    under `out` changes."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".render-") as tmp:
            staged = []
            for kernel in kernels:
                folder = Path(tmp) / kernel.folder
                folder.mkdir()
                for name, data in kernel.files.items():
                    (folder / name).write_bytes(data)
                staged.append((folder, out / folder.name))
            for source, target in staged:
                replace_dir(source, target)
                written.append(target)
    except BaseException:
        if created and not written:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return written


def render_stages(
    project: Project,
    stages: Sequence[int],
    *,
    username: str,
    profile: str | None = None,
    overrides: Overrides | None = None,
    extra: Mapping[int, Iterable[ParamValue]] | None = None,
    accelerators: Mapping[int, str] | None = None,
    kernel_versions: Mapping[str, int] | None = None,
    wheel_versions: Mapping[str, int] | None = None,
    model_versions: Mapping[str, int] | None = None,
    matrix: MatrixOptions | None = None,
    only: Sequence[Cell] | None = None,
) -> list[RenderedKernel]:
    """Render the stages' kernels in memory, one per cell of a matrix stage; every problem
    is raised before anything is written.

    `overrides` are the `--set` values routed to their stages (`Project.overrides`),
    `extra` the values other stages' outputs give, `accelerators` the machine shapes
    that replace declared ones, `matrix` the `--matrix` values (`Project.matrix_options`);
    `kernel_versions` names the output version each `via = "kernel"` input reads (by cell
    key), `wheel_versions` that of each wheel house (by slug), `model_versions` that of
    each `via = "model"` input (by dataset slug). `only` renders just those cells.
    """
    chosen = project.profile(profile)
    cells = stage_cells(project, stages, profile=chosen, matrix=matrix)
    return [
        render_stage(
            project.pipeline,
            number,
            username=username,
            params=project.params(
                number,
                profile=chosen,
                texts=(overrides or {}).get(number),
                extra=(extra or {}).get(number, ()),
                cell=cell,
            ),
            profile=chosen,
            session=project.session(number, (accelerators or {}).get(number)),
            kernel_versions=kernel_versions,
            wheel_versions=wheel_versions,
            model_versions=model_versions,
            cell=cell,
            cells=cells,
        )
        for number in stages
        for cell in cells[number]
        if only is None or cell in only
    ]


def stage_cells(
    project: Project, stages: Iterable[int], *, profile: str | None = None, matrix: MatrixOptions | None = None
) -> dict[int, list[Cell]]:
    """The cells of `stages` and of every stage whose files they read."""
    pipeline = project.pipeline
    wanted = set(stages)
    for number in list(wanted):
        for slug in pipeline.stage(number).dataset_sources:
            wanted |= set(pipeline.datasets[slug].stages)
    return {n: project.cells(n, profile=profile, options=(matrix or {}).get(n)) for n in sorted(wanted)}
