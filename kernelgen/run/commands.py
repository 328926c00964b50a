"""What each command does: one function a command, over the same steps the chain takes.

They share the chain's work folder and state file, so `kernelgen status` shows what
`push` and `chain` did, and `chain` takes a version `push` started as its own. The CLI
only parses options, calls one of these and prints what it returns; progress lines go
through `say`.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kernelgen.backends.base import GpuQuota, KernelState, PushResult, RunStatus, SubmissionState
from kernelgen.backends.execute import DEFAULT_JUPYTER_KERNEL
from kernelgen.build.kernel import RenderedKernel, render_stages, write_kernels
from kernelgen.clock import Timing, format_elapsed
from kernelgen.errors import (
    BackendError,
    ConfigError,
    KernelFailedError,
    KernelgenError,
    LedgerError,
    MissingOutputError,
    ParameterError,
)
from kernelgen.files import log_tail
from kernelgen.run.ledger import RunSummary, read_runs
from kernelgen.run.livelog import latest
from kernelgen.run.progress import Reporter
from kernelgen.run.recording import RunRecorder
from kernelgen.run.scheduler import LOCAL_OPTIONS, Chain, ChainOptions, ChainResult
from kernelgen.run.state import Phase, SubmissionRecord
from kernelgen.run.steps import Steps
from kernelgen.run.workspace import SUBMISSION_FILE, Access, BackendKind, WorkPaths, Workspace
from kernelgen.spec.config import resolve_username
from kernelgen.spec.matrix import Cell, pick_cells
from kernelgen.spec.project import Project

Say = Callable[[str], None]
LOCAL_USER = "local"


def warn_on_stderr(line: str) -> None:
    print(f"kernelgen: {line}", file=sys.stderr, flush=True)


def backend_kind(local: bool) -> BackendKind:
    return BackendKind.LOCAL if local else BackendKind.KAGGLE


def run_profile(project: Project, profile: str | None, *, local: bool) -> str | None:
    """Local runs use the smoke profile unless one is named (on the command line or in the config)."""
    if local and profile is None and project.config.profile == "full":
        return "smoke"
    return profile


def username(project: Project, user: str | None, *, local: bool) -> str:
    """`--user`, the config, KAGGLE_USERNAME or kaggle.json; `local` for a local run without one."""
    if local and not (user or project.config.username):
        return LOCAL_USER
    return resolve_username(user, project.config)


def render_kernels(
    project: Project,
    stages: Sequence[int],
    out: Path,
    *,
    user: str | None,
    profile: str | None,
    sets: Iterable[str],
    matrix: Iterable[str] = (),
) -> list[tuple[Path, RenderedKernel]]:
    """`kernelgen render`: every stage's kernels (one per cell of a matrix stage) rendered
    and checked in memory, then written together."""
    kernels = render_stages(
        project,
        stages,
        username=resolve_username(user, project.config),
        profile=profile,
        overrides=project.overrides(sets, stages),
        matrix=project.matrix_options(matrix, stages),
    )
    return list(zip(write_kernels(kernels, out), kernels, strict=True))


@dataclass(frozen=True)
class Pushed:
    """What `push` did for one kernel: the push, and with --wait where the run's files
    and log went."""

    cell: Cell
    push: PushResult
    outputs: Path | None = None
    files: int = 0


def parse_cell(items: Iterable[str]) -> dict[str, str]:
    """`--cell fold=2` (repeatable): the matrix values naming the cells to take."""
    chosen = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ParameterError(f"--cell {item!r}: expected FIELD=VALUE")
        chosen[name.strip()] = value.strip()
    return chosen


def push_stage(
    project: Project,
    workdir: Path,
    stage: int,
    *,
    local: bool,
    user: str | None = None,
    profile: str | None = None,
    sets: Iterable[str] = (),
    matrix: Iterable[str] = (),
    cell: Iterable[str] = (),
    accelerator: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
    timing: Timing | None = None,
    say: Say = print,
    warn: Say = warn_on_stderr,
) -> list[Pushed]:
    """`kernelgen push`: render and check stage `stage`'s kernels (every cell of a matrix
    stage, or those `cell` names), taking what earlier stages left in the work folder
    where it can; hold the folder, push, and with `wait` follow each run (its latest log
    line at each poll) and download its outputs and whole log.

    Raises KernelFailedError, with the log's tail, when a followed run fails.
    """
    number = project.pipeline.stage(stage).number
    accelerators = project.accelerators([accelerator] if accelerator else [], [number])
    overrides = project.overrides(sets, [number])
    matrices = project.matrix_options(matrix, [number])
    chosen = run_profile(project, profile, local=local)
    name = username(project, user, local=local)
    picked = parse_cell(cell)
    pick_cells(project.cells(number, profile=chosen, options=matrices.get(number)), picked, stage=number)
    render_stages(
        project, [number], username=name, profile=chosen, overrides=overrides, accelerators=accelerators, matrix=matrices
    )
    with Workspace.open(project, workdir, backend=backend_kind(local), command="push", timing=timing, notify=say) as ws:
        steps = Steps(ws, username=name, profile=chosen, overrides=overrides, accelerators=accelerators, matrix=matrices)
        cells = steps.cell(number, picked)
        steps.remember_matrix([number])
        done = []
        for target in cells:
            steps.settle(target)
            pushed = steps.push(steps.render(target, required=False))
            say(f"{target}: pushed {pushed.kernel} version {pushed.version}")
            say(pushed.url)
            done.append(Pushed(target, pushed))
        if not wait:
            return done
        recorder = RunRecorder(steps, "push", warn)
        recorder.started()
        collected = []
        for item in done:
            final = _follow(steps, item.cell, timeout, say)
            dest, output = steps.collect(item.cell)
            say(f"{item.cell}: {len(output.files)} output files and the log in {dest}")
            recorder.stage_ended(item.cell, Phase.of(final.status))
            if final.status is not RunStatus.COMPLETE:
                recorder.ended("failed")
                raise KernelFailedError(
                    f"{item.cell.name + ' ' if item.cell.values else ''}ended in {final.status.value}: {final.message}",
                    stage=number,
                    status=final.status.value,
                    log_tail=log_tail(output.log),
                )
            collected.append(Pushed(item.cell, item.push, dest, len(output.files)))
        recorder.ended("complete")
        return collected


def _follow(steps: Steps, cell: Cell, timeout: float | None, say: Say) -> KernelState:
    """Wait for the cell's run to end, saying each new state or log line."""
    seen: list[RunStatus] = []

    def on_poll(state: KernelState, elapsed: float) -> None:
        line = latest(steps.log_lines(cell))
        if not seen or seen[-1] is not state.status or line:
            seen.append(state.status)
            shown = f" - {line}" if line else ""
            say(f"{cell}: {state.status.value} [{format_elapsed(elapsed)}]{shown}")

    limit = timeout if timeout is not None else steps.session(cell.stage).wait_seconds()
    try:
        return steps.wait(cell, timeout=limit, on_poll=on_poll)
    finally:
        steps.stop_following()


@dataclass(frozen=True)
class StatusRow:
    stage: int
    title: str
    kernel: str
    version: int | None
    status: str
    message: str
    cell: str = ""


NOT_PUSHED = "not pushed"


def stage_status(
    project: Project, workdir: Path, stages: Sequence[int], *, local: bool, timing: Timing | None = None
) -> tuple[str, list[StatusRow]]:
    """`kernelgen status`: each stage's latest known state, asking the backend about those
    that were pushed. It reads the work folder only, so it works beside a running chain.
    Returns the backend's name and the rows."""
    kind = backend_kind(local)
    with Workspace.open(project, workdir, backend=kind, command="status", access=Access.READ, timing=timing) as ws:
        steps = Steps(ws, username=LOCAL_USER)
        rows = []
        for number in stages:
            spec = project.pipeline.stage(number)
            for cell in ws.state.cells_of(number):
                title = spec.title
                record = ws.state.find(cell)
                if record is None or not record.kernel or record.version is None:
                    rows.append(StatusRow(number, title, "", None, NOT_PUSHED, "", cell.name))
                    continue
                try:
                    live = steps.poll(cell)
                except BackendError as exc:
                    known = record.status.value if record.status else "unknown"
                    rows.append(StatusRow(number, title, record.kernel, record.version, known, str(exc), cell.name))
                    continue
                rows.append(
                    StatusRow(number, title, record.kernel, record.version, live.status.value, live.message, cell.name)
                )
        return ws.backend.name, rows


def collect_output(
    project: Project,
    workdir: Path,
    stage: int,
    out: Path | None,
    *,
    local: bool,
    cell: Iterable[str] = (),
    timing: Timing | None = None,
) -> list[tuple[Cell, Path, int]]:
    """`kernelgen output`: download a stage's output files and whole log (into the work
    folder's outputs unless `out`; a folder per cell there for a matrix stage, or only
    the cells `cell` names); returns each cell, where its files went, and how many."""
    number = project.pipeline.stage(stage).number
    picked = parse_cell(cell)
    with Workspace.open(project, workdir, backend=backend_kind(local), command="output", timing=timing) as ws:
        steps = Steps(ws, username=LOCAL_USER)
        cells = pick_cells(ws.state.cells_of(number), picked, stage=number)
        found = []
        for target in cells:
            dest = out / target.name if out is not None and target.values else out
            where, fetched = steps.collect(target, dest)
            found.append((target, where, len(fetched.files)))
        return found


def publish_dataset(
    project: Project,
    workdir: Path,
    dataset: str,
    *,
    local: bool,
    user: str | None = None,
    wait: bool = True,
    timeout: float = 3600.0,
    timing: Timing | None = None,
    say: Say = print,
) -> None:
    """`kernelgen publish`: create or version a dataset from the stages' outputs (nothing
    is uploaded when it already holds them), and wait until it is ready."""
    slug = dataset.lower()
    name = username(project, user, local=local)
    with Workspace.open(project, workdir, backend=backend_kind(local), command="publish", timing=timing, notify=say) as ws:
        steps = Steps(ws, username=name)
        steps.dataset_spec(slug)
        adopted = steps.settle_dataset(slug)
        if adopted is not None:
            say(f"{adopted.what}: version {adopted.version} was made before the last run stopped; following it")
        result = steps.publish(slug)
        record = ws.state.datasets[slug]
        if result is None:
            say(f"{record.dataset} already holds these files ({record.status.value if record.status else 'unknown'})")
        else:
            say(f"{'created' if result.created else 'new version of'} {result.dataset} {result.url}")
        if wait:
            say(f"{slug}: {steps.wait_dataset(slug, timeout=timeout).value}")


@dataclass(frozen=True)
class ChainRun:
    """What `chain` did: the stages it ran, its result, and the report it wrote."""

    selected: list[int]
    result: ChainResult
    report: Path


def run_chain(
    project: Project,
    workdir: Path,
    *,
    local: bool,
    first: int | None = None,
    last: int | None = None,
    jobs: int = 2,
    submit: bool = False,
    score_timeout: float | None = None,
    accelerators: Iterable[str] = (),
    ignore_quota: bool = False,
    jupyter_kernel: str = DEFAULT_JUPYTER_KERNEL,
    user: str | None = None,
    profile: str | None = None,
    sets: Iterable[str] = (),
    matrix: Iterable[str] = (),
    timing: Timing | None = None,
    reporter: Reporter,
    write_report: Callable[[Path], Path],
    say: Say = print,
    warn: Say = warn_on_stderr,
) -> ChainRun:
    """`kernelgen chain`: the stages from `first` to `last` (default: the pipeline's
    default chain) in dependency order, then `write_report(work folder)`.

    The report is written whether the stages end well or not; a failure is raised after.
    """
    numbers = list(project.pipeline.stages)
    lo = project.pipeline.stage(first).number if first is not None else numbers[0]
    hi = project.pipeline.stage(last).number if last is not None else project.pipeline.default_stages[-1]
    selected = [n for n in numbers if lo <= n <= hi]
    machines = project.accelerators(accelerators, selected)
    overrides = project.overrides(sets, selected)
    matrices = project.matrix_options(matrix, selected)
    chosen = run_profile(project, profile, local=local)
    name = username(project, user, local=local)
    options = replace(LOCAL_OPTIONS if local else ChainOptions(), jobs=jobs, ignore_quota=ignore_quota)
    if score_timeout is not None:
        options = replace(options, score_timeout=score_timeout)
    failure: KernelgenError | None = None
    result: ChainResult | None = None
    with Workspace.open(
        project, workdir, backend=backend_kind(local), command="chain", timing=timing,
        jobs=jobs, jupyter_kernel=jupyter_kernel, notify=say,
    ) as ws:
        steps = Steps(ws, username=name, profile=chosen, overrides=overrides, accelerators=machines, matrix=matrices)
        recorder = RunRecorder(steps, "chain", warn)
        try:
            result = Chain(steps, options=options, reporter=reporter, recorder=recorder).run(
                selected, submit=submit, competition=project.config.competition
            )
        except KernelgenError as exc:  # stages that ran still get their report
            failure = exc
        finally:
            reporter.close()
        report = write_report(ws.paths.root)
    if failure is not None:
        raise failure
    assert result is not None
    return ChainRun(selected, result, report)


def gpu_quota(timing: Timing | None = None) -> GpuQuota | None:
    """`kernelgen quota`: the week's Kaggle GPU quota, None when Kaggle reports none."""
    from kernelgen.backends.kaggle import KaggleBackend

    timing = timing or Timing()
    return KaggleBackend(sleep=timing.sleep, clock=timing.clock).quota()


def list_runs(workdir: Path, last: int | None = None) -> list[RunSummary]:
    """`kernelgen runs`: the work folder's runs from its ledger, newest first (the last
    `last` only). It reads, so it works beside a running chain."""
    runs = read_runs(WorkPaths(workdir.resolve()).ledger)
    runs.reverse()
    return runs[:last] if last is not None else runs


@dataclass(frozen=True)
class RunDiff:
    """What differs between two runs: name -> (value in A, value in B), None where absent."""

    a: RunSummary
    b: RunSummary
    params: dict[str, tuple[Any, Any]]
    inputs: dict[str, tuple[Any, Any]]
    metrics: dict[str, tuple[Any, Any]]


def _differ(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted({*a, *b}) if a.get(k) != b.get(k)}


def diff_runs(workdir: Path, a: int, b: int) -> RunDiff:
    """`kernelgen runs diff A B`: the parameters, inputs and metrics that differ."""
    runs = {run.id: run for run in read_runs(WorkPaths(workdir.resolve()).ledger)}
    for wanted in (a, b):
        if wanted not in runs:
            known = ", ".join(map(str, sorted(runs))) or "none"
            raise LedgerError(f"no run {wanted} in {WorkPaths(workdir.resolve()).ledger} (runs: {known})")
    first, second = runs[a], runs[b]
    return RunDiff(
        first,
        second,
        _differ(first.params, second.params),
        _differ({k: ", ".join(v) for k, v in first.inputs.items()}, {k: ", ".join(v) for k, v in second.inputs.items()}),
        _differ(first.metrics, second.metrics),
    )


def changed_params(runs: Sequence[RunSummary]) -> dict[int, dict[str, tuple[Any, Any]]]:
    """For each run, the parameters both it and the run before it recorded, where they differ."""
    ordered = sorted(runs, key=lambda run: run.id)
    found: dict[int, dict[str, tuple[Any, Any]]] = {}
    for before, after in itertools.pairwise(ordered):
        found[after.id] = {
            name: values
            for name, values in _differ(before.params, after.params).items()
            if name in before.params and name in after.params
        }
    return found


def competition_of(project: Project, competition: str | None, stage: int) -> str:
    """`--competition`, else the config's, else the first competition stage `stage` reads."""
    chosen = competition or project.config.competition
    if chosen:
        return chosen
    sources = project.pipeline.stage(stage).competition_sources
    if not sources:
        raise ConfigError(
            f"stage {stage} reads no competition: pass --competition or set competition in kernelgen.toml"
        )
    return sources[0]


def submitted_cell(project: Project, ws: Workspace, stage: int | None, cell: Iterable[str]) -> Cell:
    """The kernel to submit: stage `stage`'s (the cell `cell` names, for a matrix stage),
    else the last stage's that left a submission.csv."""
    state, paths = ws.state, ws.paths
    if stage is None:
        found = [c for n in project.pipeline.stages for c in state.cells_of(n) if (paths.cell_outputs(c) / SUBMISSION_FILE).is_file()]
        if not found:
            raise MissingOutputError(f"no stage in {paths.root} has a submission.csv to submit; run the chain first")
        stage = found[-1].stage
    number = project.pipeline.stage(stage).number
    cells = pick_cells(state.cells_of(number), parse_cell(cell), stage=number)
    if len(cells) > 1:
        names = ", ".join(c.name for c in cells)
        raise ParameterError(f"runs as a matrix ({names}): name the cell to submit with --cell", stage=number)
    return cells[0]


def submit_stage(
    project: Project,
    workdir: Path,
    *,
    stage: int | None = None,
    cell: Iterable[str] = (),
    competition: str | None = None,
    local: bool = False,
    wait: bool = True,
    timeout: float = 6 * 3600.0,
    timing: Timing | None = None,
    say: Say = print,
    warn: Say = warn_on_stderr,
) -> SubmissionRecord:
    """`kernelgen submit`: submit a stage's collected version (the last stage that left a
    submission.csv by default; one cell of a matrix stage), then follow it until Kaggle
    scores it (unless not `wait`); the score is kept in the work folder's state and
    ledger. Returns the submission."""
    with Workspace.open(
        project, workdir, backend=backend_kind(local), command="submit", timing=timing, notify=say
    ) as ws:
        target = submitted_cell(project, ws, stage, cell)
        comp = competition_of(project, competition, target.stage)
        steps = Steps(ws, username=LOCAL_USER)
        recorder = RunRecorder(steps, "submit", warn)
        recorder.started()
        recorder.stage_ended(target, Phase.UNCHANGED)
        try:
            entry = steps.submit_for_score(
                target, comp, timeout=timeout if wait else None, say=say, recorded=recorder.submitted
            )
        except KernelgenError:
            recorder.ended("failed")
            raise
        recorder.ended("complete")
        return entry


def list_submissions(
    project: Project,
    competition: str | None,
    *,
    local: bool,
    workdir: Path,
    timing: Timing | None = None,
) -> tuple[str, list[SubmissionState]]:
    """`kernelgen submissions`: the account's submissions to the competition, newest first,
    as the backend lists them. Returns the competition and the list."""
    stage = list(project.pipeline.stages)[-1]
    comp = competition_of(project, competition, stage)
    if local:
        with Workspace.open(
            project,
            workdir,
            backend=BackendKind.LOCAL,
            command="submissions",
            access=Access.READ,
            timing=timing,
        ) as ws:
            return comp, ws.backend.submissions(comp)
    from kernelgen.backends.kaggle import KaggleBackend

    timing = timing or Timing()
    return comp, KaggleBackend(sleep=timing.sleep, clock=timing.clock).submissions(comp)
