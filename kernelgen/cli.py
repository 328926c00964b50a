"""The `kernelgen` command: each command parses its options and calls one core function."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kernelgen.errors import KernelgenError
from kernelgen.spec.project import Project

if TYPE_CHECKING:
    from kernelgen.backends.base import KernelState
    from kernelgen.run.backoff import Timing
    from kernelgen.run.steps import Steps


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


profile_option = click.option("--profile", help="Parameter profile: full (seed values), smoke (tiny), or one of yours.")
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
@with_project
def render(
    stages: tuple[int, ...],
    all_stages: bool,
    out: Path,
    user: str | None,
    profile: str | None,
    sets: tuple[str, ...],
    project: Project,
) -> None:
    """Render kernels: OUT/stageN/kernel-metadata.json and the notebook it names.

    Everything is validated as the Kaggle client would before anything is written.
    """
    if all_stages == bool(stages):
        raise click.UsageError("give --stage N (repeatable) or --all")
    chosen = list(project.pipeline.stages) if all_stages else list(stages)
    kernels = project.render(chosen, username=user, profile=profile, sets=sets)
    for folder, kernel in zip(project.write(kernels, out), kernels, strict=True):
        click.echo(f"stage {kernel.stage}: {folder}/{kernel.code_file} ({kernel.kernel_id})")


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
@with_project
def run(
    stage: int,
    root: Path,
    notebook: bool,
    timeout: int | None,
    jupyter_kernel: str | None,
    profile: str | None,
    sets: tuple[str, ...],
    project: Project,
) -> None:
    """Run one stage here against a Kaggle-shaped folder."""
    kernel = _jupyter_kernel(jupyter_kernel, allowed=notebook, needs="--notebook")
    working = project.run(
        stage,
        root,
        profile=profile,
        sets=sets,
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


def _username(project: Project, user: str | None, local: bool) -> str:
    from kernelgen.spec.config import resolve_username

    if local and not (user or project.config.username):
        return "local"
    return resolve_username(user, project.config)


def _timing() -> Timing:
    """The clock and sleep to wait with: real ones unless the caller handed others in
    (`main(obj=Timing(...))`), as tests do."""
    from kernelgen.run.backoff import Timing

    found = click.get_current_context().find_object(Timing)
    return found if found is not None else Timing()


def _steps(
    project: Project,
    workdir: Path,
    *,
    local: bool,
    user: str | None = None,
    profile: str | None = None,
    accelerators: dict[int, str] | None = None,
) -> Steps:
    """The work folder's steps on the chosen backend."""
    from kernelgen.run import commands as ops
    from kernelgen.run.steps import Steps

    timing = _timing()
    backend = ops.open_backend(project, workdir, local=local, timing=timing)
    return Steps(
        project,
        backend,
        workdir,
        username=_username(project, user, local),
        profile=ops.run_profile(project, profile, local=local),
        accelerators=accelerators,
        clock=timing.clock,
        sleep=timing.sleep,
    )


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
    workdir: Path,
    local: bool,
    project: Project,
) -> None:
    """Render, validate and push one stage's kernel; print its URL and version.

    With --wait, follow the run (its latest log line at each poll while it runs) and
    download its outputs and whole log when it ends. With --local it runs here, with
    the smoke profile unless --profile names another.
    """
    from kernelgen.backends.base import RunStatus
    from kernelgen.errors import KernelFailedError
    from kernelgen.run import commands as ops
    from kernelgen.run.livelog import latest
    from kernelgen.run.progress import format_elapsed

    number = project.pipeline.stage(stage).number
    accelerators = project.accelerators([accelerator] if accelerator else [], [number])
    chosen = ops.run_profile(project, profile, local=local)
    project.render(
        [stage], username=_username(project, user, local), profile=chosen, sets=sets, accelerators=accelerators
    )
    steps = _steps(project, workdir, local=local, user=user, profile=profile, accelerators=accelerators)
    pushed = ops.push_stage(steps, stage, sets)
    click.echo(f"stage {stage}: pushed {pushed.kernel} version {pushed.version}")
    click.echo(pushed.url)
    if not wait:
        return
    seen: list[RunStatus] = []

    def on_poll(state: KernelState, elapsed: float) -> None:
        line = latest(steps.log_lines(stage))
        if not seen or seen[-1] is not state.status or line:
            seen.append(state.status)
            shown = f" - {line}" if line else ""
            click.echo(f"stage {stage}: {state.status.value} [{format_elapsed(elapsed)}]{shown}")

    limit = timeout if timeout is not None else steps.session(stage).wait_seconds()
    final = steps.wait(stage, timeout=limit, on_poll=on_poll)
    dest, output = steps.collect(stage)
    click.echo(f"stage {stage}: {len(output.files)} output files and the log in {dest}")
    if final.status is not RunStatus.COMPLETE:
        tail = "\n".join(output.log.rstrip().splitlines()[-20:])
        raise KernelFailedError(
            f"ended in {final.status.value}: {final.message}", stage=stage, status=final.status.value, log_tail=tail
        )


@main.command()
@click.option("--stage", "stages", type=int, multiple=True, help="Only these stages (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@workdir_option
@local_option
@with_project
def status(stages: tuple[int, ...], as_json: bool, workdir: Path, local: bool, project: Project) -> None:
    """A table of stages with their backend status and version."""
    import dataclasses
    import json

    from kernelgen.run import commands as ops

    chosen = [project.pipeline.stage(n).number for n in stages] or list(project.pipeline.stages)
    steps = _steps(project, workdir, local=local)
    rows = ops.stage_status(steps, chosen)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"kernelgen status ({steps.backend.name}, {workdir})")
    for column in ("stage", "title", "kernel", "version", "status", "message"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row.stage), row.title, row.kernel, "" if row.version is None else str(row.version), row.status, row.message)
    Console().print(table)


@main.command()
@click.option("--stage", type=int, required=True, help="Stage whose latest run to fetch.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), help="Folder (default: WORKDIR/outputs/stageN).")
@workdir_option
@local_option
@with_project
def output(stage: int, out: Path | None, workdir: Path, local: bool, project: Project) -> None:
    """Download a stage's output files and its whole log."""
    project.pipeline.stage(stage)
    dest, fetched = _steps(project, workdir, local=local).collect(stage, out)
    click.echo(f"stage {stage}: {len(fetched.files)} files and the log in {dest}")


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
    steps = _steps(project, workdir, local=local, user=user)
    slug = dataset.lower()
    result = steps.publish(slug)
    if result is None:
        record = steps.state.datasets[slug]
        click.echo(f"{record.dataset} already holds these files ({record.status.value if record.status else 'unknown'})")
    else:
        click.echo(f"{'created' if result.created else 'new version of'} {result.dataset} {result.url}")
    if not no_wait:
        click.echo(f"{slug}: {steps.wait_dataset(slug, timeout=timeout).value}")


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
    pipeline's own panels. It opens in any browser with no server or network."""
    from kernelgen.report import write_report

    click.echo(f"report: {write_report(project, workdir, out)}")


@main.command()
@click.option("--local", is_flag=True, help="Run every stage here on local data (smoke profile unless --profile).")
@click.option("--from", "first", type=int, help="First stage to run (earlier ones must be complete in WORKDIR).")
@click.option("--to", "last", type=int, help="Last stage to run (default: the pipeline's [chain] last, else the last stage).")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Kernels running at once.")
@click.option("--submit", is_flag=True, help="Submit the last stage's version to the competition at the end.")
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
@workdir_option
@with_project
def chain(
    local: bool,
    first: int | None,
    last: int | None,
    jobs: int,
    submit: bool,
    accelerators: tuple[str, ...],
    ignore_quota: bool,
    jupyter_kernel: str | None,
    user: str | None,
    profile: str | None,
    sets: tuple[str, ...],
    workdir: Path,
    project: Project,
) -> None:
    """Run the whole pipeline in dependency order, publishing datasets between stages.

    On Kaggle, the GPU hours the stages to run need are checked against the week's
    GPU quota left before anything is pushed. At the end, or when a stage fails, it
    writes the run's report to WORKDIR/report.html.
    """
    from kernelgen.errors import KernelFailedError
    from kernelgen.report import write_report
    from kernelgen.run import commands as ops
    from kernelgen.run.progress import make_reporter
    from kernelgen.run.scheduler import LOCAL_POLL_POLICY, Chain

    numbers = list(project.pipeline.stages)
    lo = project.pipeline.stage(first).number if first is not None else numbers[0]
    hi = project.pipeline.stage(last).number if last is not None else project.pipeline.default_stages[-1]
    selected = [n for n in numbers if lo <= n <= hi]
    machines = project.accelerators(accelerators, selected)
    kernel = _jupyter_kernel(jupyter_kernel, allowed=local, needs="--local")
    profile = ops.run_profile(project, profile, local=local)
    username = _username(project, user, local)
    timing = _timing()
    backend = ops.open_backend(project, workdir, local=local, jobs=jobs, timing=timing, jupyter_kernel=kernel)
    reporter = make_reporter()
    failed: KernelFailedError | None = None
    try:
        result = Chain(
            project,
            backend,
            workdir,
            username=username,
            profile=profile,
            sets=sets,
            jobs=jobs,
            reporter=reporter,
            policy=LOCAL_POLL_POLICY if local else None,
            accelerators=machines,
            ignore_quota=ignore_quota,
            clock=timing.clock,
            sleep=timing.sleep,
        ).run(selected, submit=submit, competition=project.config.competition)
    except KernelFailedError as exc:
        failed = exc
    finally:
        reporter.close()
        close = getattr(backend, "close", None)
        if close:
            close()
    click.echo(f"report: {write_report(project, workdir)}")
    if failed is not None:
        raise failed
    if result.submission is not None:
        click.echo(f"submission: {result.submission}")
    else:
        click.echo(f"done: stages {', '.join(map(str, selected))} complete; outputs in {workdir / 'outputs'}")


@main.command()
def quota() -> None:
    """The week's Kaggle GPU quota: used, reserved by running sessions, allowed, left,
    and when it refreshes."""
    from kernelgen.backends.kaggle import KaggleBackend
    from kernelgen.run.quota import when

    timing = _timing()
    figures = KaggleBackend(sleep=timing.sleep, clock=timing.clock).quota()
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
