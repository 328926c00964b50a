"""What a run writes to the work folder's ledger, built from the steps it took.

The ledger is a record, not a dependency: when it cannot be opened or written, one
line says so and the run goes on unrecorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from kernelgen.clock import timestamp
from kernelgen.run.ledger import (
    Ledger,
    LedgerError,
    StageEntry,
    SubmissionEntry,
    entry_name,
    git_state,
    read_metrics,
)
from kernelgen.run.state import Phase, SubmissionRecord
from kernelgen.run.steps import Steps
from kernelgen.spec.machine import AcceleratorKind
from kernelgen.spec.matrix import Cell

SOURCE_KINDS = (("dataset_sources", "dataset"), ("kernel_sources", "kernel"), ("model_sources", "model"),
                ("competition_sources", "competition"))


class RunRecorder:
    """One run (`command`) of `steps`' work folder in its ledger; `warn` gets the one line
    said when the ledger cannot be used."""

    def __init__(self, steps: Steps, command: str, warn: Callable[[str], None]) -> None:
        self.steps = steps
        self.command = command
        self._warn = warn
        self._ledger: Ledger | None = None
        self._path = steps.paths.ledger
        self._recorded: set[Cell] = set()
        self._cell_metrics: dict[int, list[dict[str, float]]] = {}

    def _now(self) -> str:
        return timestamp(self.steps.timing.now())

    def _fail(self, exc: LedgerError) -> None:
        self._warn(f"the ledger was not written: {exc}")
        if self._ledger is not None:
            self._ledger.close()
        self._ledger = None

    def started(self) -> None:
        try:
            self._ledger = Ledger.open(self._path)
            commit, dirty = git_state(self.steps.pipeline.root)
            self._ledger.start(
                started=self._now(),
                command=self.command,
                backend=self.steps.backend.name,
                profile=self.steps.profile_name,
                git_commit=commit,
                git_dirty=dirty,
            )
        except LedgerError as exc:
            self._fail(exc)

    def stage_ended(self, cell: Cell, phase: Phase) -> None:
        """Record a stage's kernel (a cell's, for a matrix stage) as this run leaves it
        (once a run). Once every cell of a matrix stage has its metrics, the stage gets
        each metric's mean over its cells under the stage's own name."""
        if self._ledger is None or cell in self._recorded:
            return
        self._recorded.add(cell)
        try:
            entry = self._entry(cell, phase)
            self._ledger.stage(entry)
            if cell.values and entry.metrics:
                self._mean_over_cells(cell, entry.metrics)
        except LedgerError as exc:
            self._fail(exc)

    def _mean_over_cells(self, cell: Cell, metrics: Mapping[str, float]) -> None:
        prefix = f"stage{cell.stage}.{cell.name}."
        found = self._cell_metrics.setdefault(cell.stage, [])
        found.append({name.removeprefix(prefix): value for name, value in metrics.items()})
        if len(found) != len(self.steps.cells(cell.stage)) or self._ledger is None:
            return
        shared = set.intersection(*(set(m) for m in found))
        means = {entry_name(cell.stage, "", name): sum(m[name] for m in found) / len(found) for name in sorted(shared)}
        self._ledger.metrics(means)

    def submitted(self, entry: SubmissionRecord) -> None:
        if self._ledger is None:
            return
        kernel, version = entry.kernel, entry.version
        ref = f"{kernel}/{version}" if version is not None else kernel
        row = SubmissionEntry(kernel, version, ref, entry.status.value, entry.public_score, entry.private_score)
        try:
            self._ledger.submission(row, seen=self._now())
        except LedgerError as exc:
            self._fail(exc)

    def ended(self, outcome: str) -> None:
        if self._ledger is None:
            return
        try:
            self._ledger.end(ended=self._now(), outcome=outcome)
        except LedgerError as exc:
            self._fail(exc)
        finally:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def _entry(self, cell: Cell, phase: Phase) -> StageEntry:
        steps = self.steps
        number = cell.stage
        record = steps.state.find(cell)
        session = steps.session(number)
        ran = phase in (Phase.COMPLETE, Phase.ERROR, Phase.CANCELLED)
        seconds = record.run_seconds if record is not None and ran else None
        gpu = session.kind is AcceleratorKind.GPU and steps.backend.draws_quota
        return StageEntry(
            stage=number,
            phase=phase.value,
            cell=cell.name,
            kernel=record.kernel if record else "",
            version=record.version if record else None,
            accelerator=session.accelerator or "",
            pinning=session.pinning.value,
            run_seconds=seconds,
            gpu_hours=(seconds / 3600 if gpu and seconds is not None else 0.0) if ran else 0.0,
            params={name: (value, record.sources.get(name, "")) for name, value in record.params.items()} if record else {},
            inputs=self._inputs(cell),
            metrics=read_metrics(steps.paths.cell_outputs(cell), number, self._warn, cell.name) if phase.done else {},
        )

    def _inputs(self, cell: Cell) -> list[tuple[str, str]]:
        """What the kernel read, as its pushed metadata names it (versions included)."""
        meta = self.steps.paths.kernels / cell.folder / "kernel-metadata.json"
        if not meta.is_file():
            return []
        raw = json.loads(meta.read_text(encoding="utf-8"))
        found = [(kind, ref) for key, kind in SOURCE_KINDS for ref in raw.get(key, [])]
        return [(kind, self._versioned(ref) if kind == "dataset" else ref) for kind, ref in found]

    def _versioned(self, ref: str) -> str:
        """A dataset source with the version this work folder published (`owner/slug/N`)."""
        record = self.steps.state.datasets.get(ref.split("/")[-1])
        return f"{ref}/{record.version}" if record is not None and record.version is not None else ref
