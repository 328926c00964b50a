"""One self-contained HTML page on a work folder's run: `kernelgen report`, and the
chain's last step.

The tool's panels (stages, changes, learning curves, parameters) work for any
pipeline; a pipeline adds its own through its report hook.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kernelgen.clock import format_elapsed
from kernelgen.errors import LedgerError, WorkFolderError
from kernelgen.files import write_atomic
from kernelgen.report.changes import compare_states
from kernelgen.report.charts import history_chart, metrics_chart, score_chart, stage_graph, timeline
from kernelgen.report.history import HISTORY_FILE, read_history
from kernelgen.report.hooks import context_for, pipeline_panels
from kernelgen.report.html import render_html
from kernelgen.report.panel import Block, Figure, Note, Panel, Stats, Table
from kernelgen.report.plotting import NO_MATPLOTLIB, has_matplotlib
from kernelgen.report.workfolder import WorkFolder, read_work_folder
from kernelgen.run.ledger import read_runs
from kernelgen.run.state import PREVIOUS_STATE_FILE, Phase
from kernelgen.run.workspace import WorkPaths
from kernelgen.spec.project import Project


@dataclass(frozen=True)
class Report:
    title: str
    generated: str
    folder: WorkFolder
    summary: Stats
    problems: tuple[str, ...]
    stage_figures: tuple[Figure, ...]
    panels: tuple[Panel, ...]
    notes: tuple[Note, ...] = ()


def _hours(value: float) -> str:
    return f"{value:.2f} h"


def _summary(folder: WorkFolder, submission: Path | None) -> tuple[Stats, list[Note]]:
    stages = folder.stages.values()
    done = sum(1 for f in stages if f.phase.done)
    timed = folder.latest_run()
    items = [("stages done", f"{done} of {len(folder.stages)}")]
    notes = []
    if any(f.phase is Phase.UNCHANGED for f in stages) and timed:
        ran = ", ".join(str(f.number) for f in timed)
        notes.append(
            Note(
                f"Wall time, GPU hours and the timeline count the stages the latest run ran ({ran}); "
                "unchanged stages keep the times of the run that made their outputs."
            )
        )
    if timed:
        start = min(f.started for f in timed if f.started is not None)
        end = max(f.ended for f in timed if f.ended is not None)
        items.append(("wall time", format_elapsed((end - start).total_seconds())))
        gpu = sum(f.gpu_hours or 0.0 for f in timed)
        if folder.backend == "kaggle":
            items.append(("GPU quota used", _hours(gpu)))
        else:
            items.append(("GPU hours", _hours(gpu)))
            notes.append(
                Note(
                    f"GPU hours add up the run times of stages that use a GPU (RUNNING to COMPLETE where "
                    f"a poll saw both, else push to end). This run used the "
                    f"{folder.backend or 'unknown'} backend, so no Kaggle quota was spent."
                )
            )
    items.append(("backend", folder.backend or "unknown"))
    items.append(("submission", submission.name if submission else "none"))
    return Stats.of(items), notes


def _changes_panel(folder: WorkFolder) -> Panel:
    key, title = "changes", "Changes since the previous run"
    if folder.state is None:
        return Panel(key, title, (Note("Nothing to compare: this work folder has no state.", "missing"),))
    if folder.previous is None:
        return Panel(
            key,
            title,
            (Note(f"No earlier chain run is recorded here ({PREVIOUS_STATE_FILE} is kept when `kernelgen chain` starts)."),),
        )
    changes = compare_states(folder.previous, folder.state, folder.stages)
    rows = [(c.label, c.what) for c in changes]
    blocks: list[Block] = [Table.of(("stage", "this run"), rows)]
    params = [
        (c.label, p.name, _value(p.before), _value(p.after), p.source)
        for c in changes
        for p in c.params
    ]
    if params:
        blocks.append(Table.of(("stage", "parameter", "before", "now", "now from"), params, "Parameters that changed"))
    else:
        blocks.append(Note("No parameter changed."))
    rerun = [c.label.removeprefix("stage ") for c in changes if c.rerun]
    intro = f"Stages run again: {', '.join(rerun)}." if rerun else "No stage ran again."
    return Panel(key, title, tuple(blocks), intro)


def _value(value: object) -> str:
    return "(none)" if value is None else repr(value) if isinstance(value, str) else str(value)


def _curves_panel(folder: WorkFolder) -> Panel | None:
    blocks: list[Block] = []
    plotted = has_matplotlib()
    for facts in (c for f in folder.stages.values() for c in (f.cells or (f,))):
        path = facts.outputs / HISTORY_FILE
        if not path.is_file():
            continue
        try:
            history = read_history(path)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            blocks.append(Note(f"{facts.label}: {HISTORY_FILE} cannot be read ({exc})", "missing"))
            continue
        title = f"{facts.label.capitalize()}: {facts.title}"
        chart = history_chart(history, title) if plotted else None
        if chart is not None:
            blocks.append(chart)
        else:
            names = list(history.columns)
            rows = [
                (f"{x:g}", *(f"{history.columns[n][i]:.4g}" for n in names)) for i, x in enumerate(history.x)
            ]
            blocks.append(Table.of((history.x_name, *names), rows, title))
    if not blocks:
        return None
    if not plotted:
        blocks.insert(0, NO_MATPLOTLIB)
    return Panel("curves", "Learning curves", tuple(blocks), f"From each stage's {HISTORY_FILE}.")


def _runs_panel(folder: WorkFolder, validation: str | None) -> tuple[Panel | None, list[str]]:
    """The work folder's ledger: each run, each metric across runs, and the validation
    metric against the public score."""
    try:
        runs = read_runs(folder.paths.ledger)
    except LedgerError as exc:
        return None, [str(exc)]
    if not runs:
        return None, []
    rows = []
    for run in reversed(runs):
        stages = ", ".join(f"{key} {phase}" for key, phase in run.stages.items())
        public = "" if run.public_score is None else f"{run.public_score:.5f}"
        rows.append((run.id, run.started, run.outcome or "did not end", run.command, stages, f"{run.gpu_hours:.2f}", public))
    blocks: list[Block] = [
        Table.of(("run", "started", "outcome", "command", "stages", "GPU hours", "public score"), rows)
    ]
    plotted = has_matplotlib()
    chart = metrics_chart(runs) if plotted else None
    if chart is not None:
        blocks.append(chart)
    elif any(run.metrics for run in runs):
        names = sorted({name for run in runs for name in run.metrics})
        table_rows = [(run.id, *(_value(run.metrics.get(n)) for n in names)) for run in runs]
        blocks.append(Table.of(("run", *names), table_rows, "Metrics across runs"))
    if validation is not None:
        scored = score_chart(runs, validation) if plotted else None
        if scored is not None:
            blocks.append(scored)
        else:
            blocks.append(Note(f"No run has both {validation} and a public score yet."))
    return Panel("runs", "Runs", tuple(blocks), f"Every run recorded in {folder.paths.ledger.name}, newest first."), []


def _params_panel(folder: WorkFolder) -> Panel:
    blocks: list[Block] = []
    for facts in (c for f in folder.stages.values() for c in (f.cells or (f,))):
        label = facts.label.capitalize()
        if facts.params:
            rows = [(p.name, _value(p.value), p.source) for p in facts.params]
            blocks.append(Table.of(("parameter", "value", "from"), rows, f"{label}: {facts.title}"))
        else:
            blocks.append(Note(f"{label}: no parameters recorded (it has not been pushed from here)."))
    return Panel(
        "parameters",
        "Parameters",
        tuple(blocks),
        "What each stage last ran with, and where each value came from: the stage's default, "
        "a profile, the config file, --set, or another stage's output.",
    )


def build_report(project: Project, workdir: Path) -> Report:
    pipeline = project.pipeline
    folder = read_work_folder(pipeline, workdir)
    problems = list(folder.problems)
    for number, facts in folder.stages.items():
        problems.extend(f"stage {number}: {text}" for text in facts.missing)
    last = list(folder.stages)[-1] if folder.stages else pipeline.default_stages[-1]
    candidate = folder.paths.submission(last)
    submission = candidate if candidate.is_file() else None
    summary, notes = _summary(folder, submission)
    figures = [f for f in (stage_graph(folder.stages), timeline(folder.latest_run())) if f is not None]
    if not has_matplotlib():
        notes.append(NO_MATPLOTLIB)
    own, hook_problems = pipeline_panels(context_for(folder, pipeline, project.config))
    problems.extend(hook_problems)
    for panel in own:
        problems.extend(f"{panel.title}: {text}" for text in panel.missing)
    curves = _curves_panel(folder)
    runs, ledger_problems = _runs_panel(folder, pipeline.report.validation)
    problems.extend(ledger_problems)
    panels = [
        _changes_panel(folder),
        *([runs] if runs else []),
        *([curves] if curves else []),
        *own,
        _params_panel(folder),
    ]
    generated = datetime.fromtimestamp(time.time(), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Report(
        title=f"kernelgen report: {folder.path.name}",
        generated=generated,
        folder=folder,
        summary=summary,
        problems=tuple(problems),
        stage_figures=tuple(figures),
        panels=tuple(panels),
        notes=tuple(notes),
    )


def write_report(project: Project, workdir: Path, out: Path | None = None) -> Path:
    """Write the report of `workdir` to `out` (default `workdir/report.html`); returns its path."""
    if not workdir.is_dir():
        raise WorkFolderError(f"work folder {workdir} does not exist")
    target = (out or WorkPaths(workdir).report).resolve()
    write_atomic(target, render_html(build_report(project, workdir)))
    return target
