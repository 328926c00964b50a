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

import nbformat

from kernelgen.build import notebook as nb
from kernelgen.build.metadata import KERNEL_METADATA_FILE, kernel_metadata, metadata_bytes
from kernelgen.build.modules import SourceModule, collect_modules
from kernelgen.build.templating import render_template
from kernelgen.build.validate import check_username, kernel_slug
from kernelgen.build.wheels import wheel_house
from kernelgen.errors import RenderError
from kernelgen.files import replace_dir
from kernelgen.spec.machine import Session
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


def kernel_inputs(
    pipeline: Pipeline, spec: StageSpec, username: str, versions: Mapping[int, int] | None = None
) -> dict[str, str]:
    """The stage's `via = "kernel"` inputs: dataset slug -> the producing kernel's
    `owner/slug/version` (`owner/slug`, its latest version, when no version is known)."""
    found = {}
    for slug in spec.dataset_sources:
        dataset = pipeline.datasets[slug]
        if dataset.via is not Via.KERNEL:
            continue
        producer = pipeline.stage(dataset.producer)
        ref = f"{username}/{kernel_slug(producer.title)}"
        version = (versions or {}).get(producer.number)
        found[slug] = f"{ref}/{version}" if version is not None else ref
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
        title = nb.markdown_cell(render_template("title.md.j2", stage=spec.number, title=spec.title))
    cells = [
        title,
        nb.markdown_cell(
            render_template("provenance.md.j2", stage=spec.number, module=spec.module, profile=profile)
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
            )
        )
    )
    return cells


def render_stage(
    pipeline: Pipeline,
    number: int,
    *,
    username: str,
    params: list[ParamValue],
    profile: str,
    session: Session | None = None,
    kernel_versions: Mapping[int, int] | None = None,
    wheel_versions: Mapping[str, int] | None = None,
    model_versions: Mapping[str, int] | None = None,
) -> RenderedKernel:
    """Render one stage in memory and validate it as the Kaggle client would.

    `session` replaces the stage's declared session settings (another accelerator);
    `kernel_versions` gives the output version of each stage whose kernel a
    `via = "kernel"` input reads, `wheel_versions` that of each wheel house
    (by slug) an internet-off stage installs from, and `model_versions` the version
    of each `via = "model"` input (by dataset slug).
    """
    spec = pipeline.stage(number)
    check_username(username, where="--user, config, KAGGLE_USERNAME or kaggle.json")
    session = session or spec.session
    code_file = f"{spec.name}.ipynb"
    through_kernels = kernel_inputs(pipeline, spec, username, kernel_versions)
    aliases = {slug: ref.split("/")[1] for slug, ref in through_kernels.items()}
    models = model_inputs(pipeline, spec, username, model_versions)
    mounted = {slug: ref for slug, ref in models.items() if ref.count("/") == 4}
    notebook = nb.assemble(_cells(pipeline, spec, params, profile, aliases, mounted), prefix=spec.name)
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as exc:
        raise RenderError(f"notebook is not valid nbformat: {exc.message}", stage=number) from None
    code = nb.to_bytes(notebook)
    meta = kernel_metadata(
        kernel_id=f"{username}/{kernel_slug(spec.title)}",
        title=spec.title,
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
        kernel_sources=[*through_kernels.values(), *_wheels_source(pipeline, spec, username, wheel_versions)],
        model_sources=list(models.values()),
        where=f"stage {number} {METADATA_FILE}",
    )
    files = {METADATA_FILE: metadata_bytes(meta), code_file: code}
    return RenderedKernel(
        stage=number, kernel_id=meta["id"], code_file=code_file, files=files, params=tuple(params)
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
    """Write `out/stageN/` for each kernel; on failure nothing under `out` changes."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".render-") as tmp:
            staged = []
            for kernel in kernels:
                folder = Path(tmp) / f"stage{kernel.stage}"
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
    kernel_versions: Mapping[int, int] | None = None,
    wheel_versions: Mapping[str, int] | None = None,
    model_versions: Mapping[str, int] | None = None,
) -> list[RenderedKernel]:
    """Render stages in memory; every problem is raised before anything is written.

    `overrides` are the `--set` values routed to their stages (`Project.overrides`),
    `extra` the values other stages' outputs give, `accelerators` the machine shapes
    that replace declared ones; `kernel_versions` names the output version each
    `via = "kernel"` input reads, `wheel_versions` that of each wheel house (by slug),
    `model_versions` that of each `via = "model"` input (by dataset slug).
    """
    chosen = project.profile(profile)
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
            ),
            profile=chosen,
            session=project.session(number, (accelerators or {}).get(number)),
            kernel_versions=kernel_versions,
            wheel_versions=wheel_versions,
            model_versions=model_versions,
        )
        for number in stages
    ]
