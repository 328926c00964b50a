"""The `kernelgen` command: each command parses its options and calls one core function."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kernelgen.errors import KernelgenError
from kernelgen.spec.project import Project

if TYPE_CHECKING:
    from kernelgen.clock import Timing
    from kernelgen.run.ledger import RunSummary


class _Group(click.Group):
    """Prints expected failures as one line and a non-zero exit; bugs keep their traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KernelgenError as exc:
            click.echo(f"kernelgen: error: {exc}", err=True)
            log_tail = getattr(exc, "log_tail", "")
            if log_tail:
                click.echo(log_tail, err=True)
            ctx.exit(exc.exit_code)


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (default: ./kernelgen.toml, else [tool.kernelgen] in ./pyproject.toml).",
)
project_dir_option = click.option(
    "--project",
    "project_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Project folder with kernel-metadata/ (default: the config's pipeline, else the current "
    "folder when it has kernel-metadata/, else the bundled pipeline).",
)


def with_project(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --project and --config and hands the command the loaded `project`."""

    @config_option
    @project_dir_option
    @functools.wraps(command)
    def wrapper(*args: Any, config_path: Path | None, project_dir: Path | None, **kwargs: Any) -> Any:
        return command(*args, project=Project.load(config_path, project_dir), **kwargs)

    return wrapper


profile_option = click.option("--profile", help="Parameter profile: full (seed values), smoke (tiny), one the stages declare (bundled: best, kfold), or one of yours.")
jupyter_kernel_option = click.option(
    "--jupyter-kernel",
    metavar="NAME",
    help="Jupyter kernel (kernelspec name) that runs the notebooks here, e.g. one made from an "
    "environment pinned to Kaggle's image (default: python3, this interpreter).",
)
set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a parameter: stageN.name=value, or name=value when one stage is named. Repeatable.",
)
matrix_option = click.option(
    "--matrix",
    "matrix",
    multiple=True,
    metavar="stageN.FIELD=V1,V2",
    help="Run stage N once per value of FIELD (a cell each), replacing its declared matrix; "
    "several fields of one stage give their product. Repeatable.",
)
cell_option = click.option(
    "--cell",
    "cells",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Only the matrix cells with this value (e.g. fold=2). Repeatable.",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kernelgen")
def main() -> None:
    """Render plain Python stage modules into Kaggle kernels, wire them through datasets,
    and run the chain on Kaggle or on this machine."""


@main.command()
@click.option("--stage", "stages", type=int, multiple=True, help="Stage to render (repeatable).")
@click.option("--all", "all_stages", is_flag=True, help="Render every stage.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder for DIR/stageN/.")
@click.option("--user", help="Kaggle username owning the kernels (default: config, KAGGLE_USERNAME, kaggle.json).")
@profile_option
@set_option
@matrix_option
@with_project
def render(
    stages: tuple[int, ...],
    all_stages: bool,
    out: Path,
    user: str | None,
    profile: str | None,
    sets: tuple[str, ...],
    matrix: tuple[str, ...],
    project: Project,
) -> None:
    """Render kernels: OUT/stageN/kernel-metadata.json and the notebook it names (one
    OUT/stageN-<cell>/ per cell of a matrix stage).

    Everything is validated as the Kaggle client would before anything is written.
    """
    from kernelgen.run.commands import render_kernels

    if all_stages == bool(stages):
        raise click.UsageError("give --stage N (repeatable) or --all")
    chosen = list(project.pipeline.stages) if all_stages else [project.pipeline.stage(n).number for n in stages]
    for folder, kernel in render_kernels(project, chosen, out, user=user, profile=profile, sets=sets, matrix=matrix):
        click.echo(f"{kernel.cell or f'stage {kernel.stage}'}: {folder}/{kernel.code_file} ({kernel.kernel_id})")


@main.command()
@click.option("--stage", type=int, required=True, help="Stage to run.")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Kaggle-shaped folder: inputs in ROOT/input/<slug>/, outputs to ROOT/working/.",
)
@click.option("--notebook", is_flag=True, help="Run the rendered notebook in a fresh interpreter instead of the module.")
@click.option("--timeout", type=int, default=None, help="With --notebook: seconds a cell may run.")
@jupyter_kernel_option
@profile_option
@set_option
@matrix_option
@cell_option
@with_project
def run(
    stage: int,
    root: Path,
    notebook: bool,
    timeout: int | None,
    jupyter_kernel: str | None,
    profile: str | None,
    sets: tuple[str, ...],
    matrix: tuple[str, ...],
    cells: tuple[str, ...],
    project: Project,
) -> None:
    """Run one stage here against a Kaggle-shaped folder (one cell of a matrix stage,
    named with --cell)."""
    from kernelgen.run.commands import parse_cell
    from kernelgen.run.local import run_stage

    kernel = _jupyter_kernel(jupyter_kernel, allowed=notebook, needs="--notebook")
    working = run_stage(
        project,
        project.pipeline.stage(stage).number,
        root,
        profile=profile,
        sets=sets,
        matrix=matrix,
        cell=parse_cell(cells),
        notebook=notebook,
        timeout=timeout,
        jupyter_kernel=kernel,
    )
    click.echo(f"stage {stage}: outputs in {working}")


@main.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder to create.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="NAME=VALUE",
    help="A generator option (for the bundled pipeline: n_train, n_test, seed, fmt, height, width, defects). Repeatable.",
)
@with_project
def synth(out: Path, sets: tuple[str, ...], project: Project) -> None:
    """Make local competition data with the pipeline's generator: OUT/input/<competition>/.

    The generator and its default options are declared in kernel-metadata/pipeline.toml.
    """
    from kernelgen.run.localdata import generate_data
    from kernelgen.spec.params import parse_overrides

    texts = {}
    for item in parse_overrides(sets):
        if item.stage is not None:
            raise click.UsageError(f"--set {item.name}: generator options take no stage prefix")
        texts[item.name] = item.text
    generate_data(project.pipeline, out, texts)
    click.echo(f"competition data in {out / 'input'}")


@main.command()
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--name",
    help="Python package for the stage modules (default: from DEST's folder name, e.g. my-comp -> my_comp).",
)
def new(dest: Path, name: str | None) -> None:
    """Create a small working project in DEST (a new or empty folder).

    Two stages (fit a model, write the submission) wired through a dataset, a
    generator of synthetic competition data, tests and a README, all runnable
    with the standard library only.
    """
    import shlex

    from kernelgen.scaffold import create_project

    created = create_project(dest, name=name)
    click.echo(f"created {created}")
    click.echo("next steps:")
    click.echo(f"  cd {shlex.quote(str(dest))} && kernelgen chain --local   # run both stages here on synthetic data")
    click.echo("  pytest   # the project's own tests (inside the project folder)")


workdir_option = click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("kernelgen-work"),
    show_default=True,
    help="Work folder: rendered kernels, downloaded outputs, datasets and state.json.",
)
local_option = click.option(
    "--local", is_flag=True, help="Use the local backend (runs here, no Kaggle account) instead of Kaggle."
)
user_option = click.option("--user", help="Kaggle username (default: config, KAGGLE_USERNAME, kaggle.json).")


def _jupyter_kernel(name: str | None, *, allowed: bool, needs: str) -> str:
    """The kernelspec to run notebooks in, checked to exist before anything runs."""
    from kernelgen.backends.execute import DEFAULT_JUPYTER_KERNEL, check_jupyter_kernel

    if name is None:
        return DEFAULT_JUPYTER_KERNEL
    if not allowed:
        raise click.UsageError(f"--jupyter-kernel needs {needs}")
    check_jupyter_kernel(name)
    return name


def _timing() -> Timing:
    """The clock and sleep to wait with: real ones unless the caller handed others in
    (`main(obj=Timing(...))`), as tests do."""
    from kernelgen.clock import Timing

    found = click.get_current_context().find_object(Timing)
    return found if found is not None else Timing()


@main.command()
@click.option("--stage", type=int, required=True, help="Stage to push.")
@click.option("--wait", is_flag=True, help="Follow the run until it ends, then download outputs and log.")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="With --wait: seconds to wait (default: the stage's session time limit plus an hour of queueing).",
)
@click.option(
    "--accelerator",
    metavar="NAME",
    help="Machine shape for this run, e.g. NvidiaTeslaT4 (two T4s), NvidiaL4, NvidiaH100, TpuV5E8.",
)
@user_option
@profile_option
@set_option
@matrix_option
@cell_option
@workdir_option
@local_option
@with_project
def push(
    stage: int,
    wait: bool,
    timeout: float | None,
    accelerator: str | None,
    user: str | None,
    profile: str | None,
    sets: tuple[str, ...],
    matrix: tuple[str, ...],
    cells: tuple[str, ...],
    workdir: Path,
    local: bool,
    project: Project,
) -> None:
    """Render, validate and push one stage's kernel (every cell's, for a matrix stage,
    or those --cell names); print each URL and version.

    With --wait, follow each run (its latest log line at each poll while it runs) and
    download its outputs and whole log when it ends. With --local it runs here, with
    the smoke profile unless --profile names another.
    """
    from kernelgen.run.commands import push_stage

    push_stage(
        project,
        workdir,
        stage,
        local=local,
        user=user,
        profile=profile,
        sets=sets,
        matrix=matrix,
        cell=cells,
        accelerator=accelerator,
        wait=wait,
        timeout=timeout,
        timing=_timing(),
        say=click.echo,
    )


@main.command()
@click.option("--stage", "stages", type=int, multiple=True, help="Only these stages (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@workdir_option
@local_option
@with_project
def status(stages: tuple[int, ...], as_json: bool, workdir: Path, local: bool, project: Project) -> None:
    """A table of stages with their backend status and version. It only reads the work
    folder, so it works while a chain runs there."""
    import dataclasses
    import json

    from kernelgen.run.commands import stage_status

    chosen = [project.pipeline.stage(n).number for n in stages] or list(project.pipeline.stages)
    backend, rows = stage_status(project, workdir, chosen, local=local, timing=_timing())
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"kernelgen status ({backend}, {workdir})")
    cells = any(row.cell for row in rows)
    for column in ("stage", *(["cell"] if cells else []), "title", "kernel", "version", "status", "message"):
        table.add_column(column)
    for row in rows:
        version = "" if row.version is None else str(row.version)
        cell = [row.cell] if cells else []
        table.add_row(str(row.stage), *cell, row.title, row.kernel, version, row.status, row.message)
    Console().print(table)


@main.command()
@click.option("--stage", type=int, required=True, help="Stage whose latest run to fetch.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), help="Folder (default: WORKDIR/outputs/stageN).")
@cell_option
@workdir_option
@local_option
@with_project
def output(stage: int, out: Path | None, cells: tuple[str, ...], workdir: Path, local: bool, project: Project) -> None:
    """Download a stage's output files and its whole log (each cell's, into a folder per
    cell, for a matrix stage)."""
    from kernelgen.run.commands import collect_output

    for cell, dest, count in collect_output(project, workdir, stage, out, local=local, cell=cells, timing=_timing()):
        click.echo(f"{cell}: {count} files and the log in {dest}")


@main.command()
@click.argument("dataset")
@click.option("--no-wait", is_flag=True, help="Do not wait for the dataset to be ready.")
@click.option("--timeout", type=float, default=3600, show_default=True, help="Seconds to wait for the dataset.")
@user_option
@workdir_option
@local_option
@with_project
def publish(
    dataset: str, no_wait: bool, timeout: float, user: str | None, workdir: Path, local: bool, project: Project
) -> None:
    """Build DATASET (as kernel-metadata/datasets.toml declares it) from the stages' outputs
    and create or version it; nothing is uploaded when it already holds these files."""
    from kernelgen.run.commands import publish_dataset

    publish_dataset(
        project,
        workdir,
        dataset,
        local=local,
        user=user,
        wait=not no_wait,
        timeout=timeout,
        timing=_timing(),
        say=click.echo,
    )


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="HTML file to write (default: WORKDIR/report.html).",
)
@workdir_option
@with_project
def report(out: Path | None, workdir: Path, project: Project) -> None:
    """Write one self-contained HTML page on the work folder's run: each stage's status,
    times and parameters, learning curves, what changed since the previous run, and the
    pipeline's own panels. It opens in any browser with no server or network, and can be
    written while a chain runs in the folder."""
    from kernelgen.report import write_report

    click.echo(f"report: {write_report(project, workdir, out)}")


@main.command()
@click.option("--local", is_flag=True, help="Run every stage here on local data (smoke profile unless --profile).")
@click.option("--from", "first", type=int, help="First stage to run (earlier ones must be complete in WORKDIR).")
@click.option("--to", "last", type=int, help="Last stage to run (default: the pipeline's [chain] last, else the last stage).")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Kernels running at once.")
@click.option("--submit", is_flag=True, help="Submit the last stage's version to the competition at the end and wait for its score.")
@click.option(
    "--score-timeout",
    type=click.FloatRange(min=0),
    help="With --submit: seconds to wait for the score (default: 6 hours).",
)
@click.option(
    "--accelerator",
    "accelerators",
    multiple=True,
    metavar="[N=]NAME",
    help="Machine shape: NAME for every accelerated stage, N=NAME for stage N only (repeatable).",
)
@click.option(
    "--ignore-quota",
    is_flag=True,
    help="Push GPU stages even when their estimated hours exceed the week's GPU quota left.",
)
@jupyter_kernel_option
@user_option
@profile_option
@set_option
@matrix_option
@workdir_option
@with_project
def chain(
    local: bool,
    first: int | None,
    last: int | None,
    jobs: int,
    submit: bool,
    score_timeout: float | None,
    accelerators: tuple[str, ...],
    ignore_quota: bool,
    jupyter_kernel: str | None,
    user: str | None,
    profile: str | None,
    sets: tuple[str, ...],
    matrix: tuple[str, ...],
    workdir: Path,
    project: Project,
) -> None:
    """Run the whole pipeline in dependency order, publishing datasets between stages.
    A matrix stage runs as one kernel per cell, its readers seeing every cell.

    On Kaggle, the GPU hours the stages to run need are checked against the week's
    GPU quota left before anything is pushed. At the end, or when a stage fails, it
    writes the run's report to WORKDIR/report.html.
    """
    from kernelgen.report import write_report
    from kernelgen.run.commands import run_chain
    from kernelgen.run.progress import make_reporter
    from kernelgen.run.workspace import WorkPaths

    kernel = _jupyter_kernel(jupyter_kernel, allowed=local, needs="--local")
    paths = WorkPaths(workdir.resolve())
    try:
        done = run_chain(
            project,
            workdir,
            local=local,
            first=first,
            last=last,
            jobs=jobs,
            submit=submit,
            score_timeout=score_timeout,
            accelerators=accelerators,
            ignore_quota=ignore_quota,
            jupyter_kernel=kernel,
            user=user,
            profile=profile,
            sets=sets,
            matrix=matrix,
            timing=_timing(),
            reporter=make_reporter(),
            write_report=lambda folder: write_report(project, folder),
            say=click.echo,
        )
    except KernelgenError:
        if paths.report.is_file():
            click.echo(f"report: {paths.report}")
        raise
    click.echo(f"report: {done.report}")
    if done.result.submission is not None:
        click.echo(f"submission: {done.result.submission}")
    else:
        click.echo(f"done: stages {', '.join(map(str, done.selected))} complete; outputs in {paths.outputs_root}")


competition_option = click.option(
    "--competition", help="Competition slug (default: the config's, else the one the stages read)."
)


@main.command()
@click.option(
    "--stage",
    type=int,
    help="Stage whose collected version to submit (default: the last with a submission.csv).",
)
@cell_option
@click.option("--no-wait", is_flag=True, help="Submit and return without waiting for the score.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=6 * 3600.0,
    show_default=True,
    help="Seconds to wait for the score.",
)
@competition_option
@workdir_option
@local_option
@with_project
def submit(
    stage: int | None,
    cells: tuple[str, ...],
    no_wait: bool,
    timeout: float,
    competition: str | None,
    workdir: Path,
    local: bool,
    project: Project,
) -> None:
    """Submit a stage's collected kernel version to its code competition, then wait until
    Kaggle scores it and print the public score (and the private one once the competition
    has ended). The score is kept in the work folder's state and ledger."""
    from kernelgen.run.commands import submit_stage

    submit_stage(
        project,
        workdir,
        stage=stage,
        cell=cells,
        competition=competition,
        local=local,
        wait=not no_wait,
        timeout=timeout,
        timing=_timing(),
        say=click.echo,
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@competition_option
@workdir_option
@local_option
@with_project
def submissions(
    as_json: bool, competition: str | None, workdir: Path, local: bool, project: Project
) -> None:
    """The account's submissions to the competition, newest first: date, kernel version,
    status, public and private score."""
    import dataclasses

    from kernelgen.run.commands import list_submissions

    comp, found = list_submissions(
        project, competition, local=local, workdir=workdir, timing=_timing()
    )
    if as_json:
        rows = [{**dataclasses.asdict(item), "status": item.status.value} for item in found]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo(f"no submissions to {comp}")
        return
    for item in found:
        public = "-" if item.public_score is None else f"{item.public_score:.5f}"
        private = "-" if item.private_score is None else f"{item.private_score:.5f}"
        note = f"  {item.message}" if item.message else ""
        click.echo(
            f"{item.ref}  {item.date or '-'}  {item.status.value:<8}  public {public}  private {private}  "
            f"{item.description}{note}"
        )


def _short(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--last", type=click.IntRange(min=1), help="Only the last N runs.")
@workdir_option
@click.pass_context
def runs(ctx: click.Context, as_json: bool, last: int | None, workdir: Path) -> None:
    """Every chain run and `push --wait` made from the work folder, newest first: when,
    backend, stages run, parameters changed against the run before, metrics, GPU hours
    and the submission's scores. It reads the ledger only, so it works while a chain runs."""
    if ctx.invoked_subcommand is not None:
        return
    from kernelgen.run.commands import changed_params, list_runs

    found = list_runs(workdir, last)
    if as_json:
        click.echo(json.dumps([run.as_json() for run in found], indent=2))
        return
    changes = changed_params(list_runs(workdir))
    for run in found:
        for line in _run_lines(run, changes.get(run.id, {})):
            click.echo(line)


def _run_lines(run: RunSummary, changed: dict[str, tuple[object, object]]) -> list[str]:
    """A run as a few lines: what, when and how it ended, then stages, changes, metrics, score."""
    when = run.started.replace("T", " ")[:16]
    ended = run.outcome or "did not end"
    lines = [f"run {run.id}  {when}  {run.command}  {run.backend}  {run.profile}  {ended}  GPU {run.gpu_hours:.2f} h"]
    by_phase: dict[str, list[str]] = {}
    for number, phase in run.stages.items():
        by_phase.setdefault(phase, []).append(str(number))
    lines.append("  stages: " + "; ".join(f"{', '.join(n)} {phase}" for phase, n in by_phase.items()))
    if changed:
        lines.append("  changed: " + "; ".join(f"{k} {_short(a)} -> {_short(b)}" for k, (a, b) in changed.items()))
    if run.metrics:
        lines.append("  metrics: " + "; ".join(f"{k} {v:.4g}" for k, v in run.metrics.items()))
    if run.submission:
        public = "" if run.public_score is None else f", public score {run.public_score:.5f}"
        private = run.submission.get("private_score")
        private_text = "" if private is None else f", private score {private:.5f}"
        lines.append(f"  submission: {run.submission['ref']} {run.submission['status']}{public}{private_text}")
    return lines


@runs.command("diff")
@click.argument("first", type=int)
@click.argument("second", type=int)
@workdir_option
def runs_diff(first: int, second: int, workdir: Path) -> None:
    """The parameters, inputs and metrics that differ between runs FIRST and SECOND."""
    from rich.console import Console
    from rich.table import Table

    from kernelgen.run.commands import diff_runs

    found = diff_runs(workdir, first, second)
    table = Table(title=f"run {first} against run {second}")
    for column in ("", "name", f"run {first}", f"run {second}"):
        table.add_column(column)
    for kind, rows in (("parameter", found.params), ("input", found.inputs), ("metric", found.metrics)):
        for name, (a, b) in rows.items():
            table.add_row(kind, name, "(none)" if a is None else _short(a), "(none)" if b is None else _short(b))
    if not (found.params or found.inputs or found.metrics):
        click.echo(f"runs {first} and {second} ran with the same parameters and inputs and measured the same")
        return
    Console(width=160).print(table)


@main.command()
def quota() -> None:
    """The week's Kaggle GPU quota: used, reserved by running sessions, allowed, left,
    and when it refreshes."""
    from kernelgen.run.commands import gpu_quota
    from kernelgen.run.quota import when

    figures = gpu_quota(_timing())
    if figures is None:
        click.echo("Kaggle reports no GPU quota for this account")
        return
    click.echo("GPU quota this week")
    for name, hours in (
        ("used", figures.used),
        ("reserved", figures.reserved),
        ("allowed", figures.allowed),
        ("left", figures.left),
    ):
        click.echo(f"  {name:<10}{hours:6.2f} h")
    if figures.refreshes is not None:
        click.echo(f"  {'refreshes':<10}{when(figures.refreshes)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
