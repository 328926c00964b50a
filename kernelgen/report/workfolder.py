"""A work folder read for the report: each stage's run, its times, parameters and outputs.

Reading never fails on a partial folder: what is absent or unreadable becomes a
sentence in `problems` or in the stage's `missing`, so the report can say it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kernelgen.backends.base import RunStatus
from kernelgen.build.datasets import missing_files
from kernelgen.clock import parse_timestamp
from kernelgen.errors import KernelgenError
from kernelgen.files import log_tail
from kernelgen.run.state import STATE_FILE, ChainState, Phase, StageRecord
from kernelgen.run.workspace import WorkPaths
from kernelgen.spec.machine import AcceleratorKind
from kernelgen.spec.matrix import Cell
from kernelgen.spec.pipeline import Pipeline, StageSpec

UNKNOWN_SOURCE = "not recorded"


@dataclass(frozen=True)
class ParamRow:
    name: str
    value: Any
    source: str


def declared_accelerator(spec: StageSpec) -> str:
    """The machine shape the stage runs on, or "" for a CPU stage."""
    return spec.session.accelerator or ""


def uses_gpu(spec: StageSpec) -> bool:
    """Whether the stage's runs count against the GPU quota."""
    return spec.session.kind is AcceleratorKind.GPU


@dataclass(frozen=True)
class StageFacts:
    number: int
    title: str
    phase: Phase
    needs: tuple[int, ...]
    accelerator: str
    gpu: bool
    outputs: Path
    kernel: str = ""
    version: int | None = None
    url: str = ""
    started: datetime | None = None
    ended: datetime | None = None
    message: str = ""
    params: tuple[ParamRow, ...] = ()
    log_tail: str = ""
    missing: tuple[str, ...] = ()
    run_seconds: float | None = None
    cell: str = ""
    cells: tuple[StageFacts, ...] = ()
    """For a matrix stage, each cell's own facts; the stage's are theirs together."""

    @property
    def label(self) -> str:
        """`stage 4`, or `stage 4 fold-0` for one cell of a matrix stage."""
        return f"stage {self.number} {self.cell}" if self.cell else f"stage {self.number}"

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max((self.ended - self.started).total_seconds(), 0.0)

    @property
    def gpu_hours(self) -> float | None:
        """The polled run time (RUNNING to COMPLETE) where it was seen, else push to end.

        A polled time longer than the push-to-end span belongs to an earlier run.
        """
        if self.cells:
            hours = [c.gpu_hours for c in self.cells if c.gpu_hours is not None]
            return sum(hours) if hours else None
        seconds = self.seconds
        if seconds is None:
            return None
        if self.run_seconds is not None and self.run_seconds <= seconds:
            seconds = self.run_seconds
        return seconds / 3600 if self.gpu else 0.0

    @property
    def accelerator_label(self) -> str:
        if self.accelerator:
            return self.accelerator
        return "GPU (no shape declared)" if self.gpu else "none"


@dataclass(frozen=True)
class WorkFolder:
    path: Path
    backend: str
    state: ChainState | None
    previous: ChainState | None
    stages: Mapping[int, StageFacts]
    problems: tuple[str, ...]

    @property
    def paths(self) -> WorkPaths:
        return WorkPaths(self.path)

    def latest_run(self) -> list[StageFacts]:
        """The timed kernels of the latest chain run (each cell of a matrix stage apart):
        those it did not find unchanged. When it ran none, every timed kernel (their runs
        made the outputs there are)."""
        kernels = [c for f in self.stages.values() for c in (f.cells or (f,))]
        timed = [f for f in kernels if f.seconds is not None]
        return [f for f in timed if f.phase is not Phase.UNCHANGED] or timed


def _read_state(path: Path, problems: list[str], what: str) -> ChainState | None:
    if not path.is_file():
        return None
    try:
        return ChainState.load(path, None)
    except KernelgenError as exc:
        problems.append(f"{what} cannot be read: {exc}")
        return None


def _phase(record: StageRecord | None, before: StageRecord | None, needs: list[Phase]) -> Phase:
    """The stage's state in the chain's words; a completed run the previous chain run
    already had is `unchanged`."""
    if record is None or not record.kernel or record.status is None:
        stopped = any(p.failed or p is Phase.BLOCKED for p in needs)
        return Phase.BLOCKED if stopped else Phase.WAITING
    phase = Phase.of(record.status)
    if (
        phase is Phase.COMPLETE
        and before is not None
        and before.status is RunStatus.COMPLETE
        and (before.kernel, before.version, before.key) == (record.kernel, record.version, record.key)
    ):
        return Phase.UNCHANGED
    return phase


def _log_tail(outputs: Path, kernel: str) -> str:
    log = outputs / f"{kernel.split('/')[-1]}.log" if kernel else None
    if log is None or not log.is_file():
        return ""
    return log_tail(log.read_text(encoding="utf-8", errors="replace"))


def _missing(number: int, phase: Phase, record: StageRecord | None, outputs: Path, needs: tuple[int, ...]) -> list[str]:
    found = []
    if phase.done and not outputs.is_dir():
        found.append(f"its outputs are not in {outputs} (`kernelgen output --stage {number}` fetches them)")
    if phase.failed:
        message = record.message if record and record.message else "no message"
        found.append(f"it ended in {phase.value}: {message}")
    if phase is Phase.BLOCKED:
        found.append(f"it did not run because a stage it needs ({', '.join(map(str, needs))}) did not complete")
    if phase is Phase.WAITING:
        found.append("it has not run in this work folder")
    if record is not None and record.kernel and not record.started:
        found.append("no start time recorded (pushed before kernelgen kept run times)")
    return found


def _cell_facts(
    spec: StageSpec,
    needs: tuple[int, ...],
    cell: Cell,
    record: StageRecord | None,
    before: StageRecord | None,
    need_phases: list[Phase],
    folder: Path,
) -> StageFacts:
    phase = _phase(record, before, need_phases)
    params: tuple[ParamRow, ...] = ()
    if record is not None:
        params = tuple(
            ParamRow(name, value, record.sources.get(name, UNKNOWN_SOURCE)) for name, value in record.params.items()
        )
    return StageFacts(
        number=spec.number,
        title=spec.title,
        phase=phase,
        needs=needs,
        accelerator=declared_accelerator(spec),
        gpu=uses_gpu(spec),
        outputs=folder,
        kernel=record.kernel if record else "",
        version=record.version if record else None,
        url=record.url if record else "",
        started=parse_timestamp(record.started) if record else None,
        ended=parse_timestamp(record.ended) if record else None,
        message=record.message if record else "",
        params=params,
        log_tail=_log_tail(folder, record.kernel) if record and phase.failed else "",
        missing=tuple(_missing(spec.number, phase, record, folder, needs)),
        run_seconds=record.run_seconds if record and record.ended else None,
        cell=cell.name,
    )


def _together(spec: StageSpec, needs: tuple[int, ...], folder: Path, cells: list[StageFacts]) -> StageFacts:
    """A matrix stage's facts from its cells': where it stands, its span of time, and
    what each cell lacks under the cell's name."""
    started = [c.started for c in cells if c.started is not None]
    ended = [c.ended for c in cells if c.ended is not None]
    messages = [f"{c.cell}: {c.message}" for c in cells if c.message]
    return StageFacts(
        number=spec.number,
        title=spec.title,
        phase=Phase.together(c.phase for c in cells),
        needs=needs,
        accelerator=declared_accelerator(spec),
        gpu=uses_gpu(spec),
        outputs=folder,
        started=min(started) if len(started) == len(cells) else None,
        ended=max(ended) if len(ended) == len(cells) else None,
        message="; ".join(messages),
        params=cells[0].params,
        log_tail="\n".join(f"[{c.cell}]\n{c.log_tail}" for c in cells if c.log_tail),
        missing=tuple(f"{c.cell}: {m}" for c in cells for m in c.missing),
        cells=tuple(cells),
    )


def read_work_folder(pipeline: Pipeline, workdir: Path) -> WorkFolder:
    paths = WorkPaths(workdir.resolve())
    path = paths.root
    problems: list[str] = []
    state = _read_state(paths.state, problems, STATE_FILE)
    if state is None and not problems:
        problems.append(f"no {STATE_FILE} in {path}: nothing has run in this work folder (or --workdir names another)")
    previous = _read_state(paths.previous_state, problems, paths.previous_state.name)
    ran = set(state.stages) | set(state.matrices) if state else set()
    stages: dict[int, StageFacts] = {}
    # Stages past the default chain (`[chain] last`) show only once they have run here.
    shown = [n for n in pipeline.order() if n in pipeline.default_stages or n in ran]
    for number in shown:
        spec = pipeline.stage(number)
        needs = pipeline.dependencies[number]
        need_phases = [stages[n].phase for n in needs if n in stages]
        cells = state.cells_of(number) if state else [Cell(number)]
        facts = [
            _cell_facts(
                spec,
                needs,
                cell,
                state.find(cell) if state else None,
                previous.find(cell) if previous else None,
                need_phases,
                paths.cell_outputs(cell),
            )
            for cell in cells
        ]
        stages[number] = _together(spec, needs, paths.outputs(number), facts) if cells[0].values else facts[0]

    def outputs_of(number: int) -> list[tuple[str, Path]]:
        return [(cell.name, paths.cell_outputs(cell)) for cell in (state.cells_of(number) if state else [Cell(number)])]

    for slug, dataset in pipeline.datasets.items():
        if all(stages[n].phase.done for n in dataset.stages):
            absent = missing_files(dataset, outputs_of)
            if absent:
                names = ", ".join(str(p.relative_to(paths.outputs_root)) for p in absent)
                problems.append(f"dataset {slug} is declared with files the outputs lack: {names}")
    ordered = dict(sorted(stages.items()))
    return WorkFolder(path, state.backend if state else "", state, previous, ordered, tuple(problems))
