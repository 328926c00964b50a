"""A work folder's state: what was pushed, where it stands, what was published. One JSON file.

Every change is written at once, atomically (write beside, then rename), so Ctrl-C
or a crash at any point leaves a state a rerun can resume from. A push or a dataset
version is recorded as intended before it is asked for: a rerun after a crash in
between asks the backend whether the version came to be, rather than making another.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from kernelgen.backends.base import DatasetStatus, RunStatus, SubmissionStatus
from kernelgen.errors import WorkFolderError
from kernelgen.files import write_atomic, write_json_atomic
from kernelgen.spec.matrix import Cell

STATE_VERSION = 1
STATE_FILE = "state.json"
PREVIOUS_STATE_FILE = "state.previous.json"


class Phase(str, Enum):
    """Where a stage stands in one chain run: a backend run state, or the chain's own."""

    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"
    LOST = "lost"
    UNCHANGED = "unchanged"
    BLOCKED = "blocked"

    @classmethod
    def of(cls, status: RunStatus) -> Phase:
        return cls(status.value)

    @property
    def active(self) -> bool:
        return self in (Phase.QUEUED, Phase.RUNNING)

    @property
    def done(self) -> bool:
        return self in (Phase.COMPLETE, Phase.UNCHANGED)

    @property
    def failed(self) -> bool:
        return self in (Phase.ERROR, Phase.CANCELLED)

    @classmethod
    def together(cls, phases: Iterable[Phase]) -> Phase:
        """Where a matrix stage stands, from its cells': the first failure, else blocked,
        else still going, else unchanged when every cell is, else complete."""
        seen = list(phases)
        for phase in seen:
            if phase.failed:
                return phase
        for phase in (Phase.BLOCKED, Phase.RUNNING, Phase.QUEUED, Phase.WAITING):
            if phase in seen:
                return phase
        return Phase.UNCHANGED if all(p is Phase.UNCHANGED for p in seen) else Phase.COMPLETE


class Intent(str, Enum):
    """A request about to be made whose result is not recorded yet."""

    NONE = ""
    PUSH = "push"
    PUBLISH = "publish"


@dataclass
class StageRecord:
    key: str = ""
    kernel: str = ""
    version: int | None = None
    status: RunStatus | None = None
    url: str = ""
    outputs: str = ""
    message: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    started: str = ""
    ended: str = ""
    run_seconds: float | None = None
    run_profile: str = ""
    intent: Intent = Intent.NONE
    intent_key: str = ""
    prior_version: int | None = None

    def mark_pushing(self, *, key: str, kernel: str, prior_version: int | None) -> None:
        """A push of `kernel` with `key` is about to be asked for; its newest version now is
        `prior_version`, so a newer one seen later is this push's."""
        self.intent, self.intent_key, self.prior_version = Intent.PUSH, key, prior_version
        self.kernel = kernel

    def mark_pushed(self, *, key: str, kernel: str, version: int | None, url: str, at: str = "") -> None:
        """A new version was pushed at `at`: forget the last run's status, message, outputs
        and end (its run time stays: the estimate of what the next run takes).

        `started`/`ended` span push to the first poll that saw the end, queueing included;
        `run_seconds` is the time from RUNNING to COMPLETE as polled, when it was seen."""
        self.key, self.kernel, self.version, self.url = key, kernel, version, url
        self.status, self.message, self.outputs = RunStatus.QUEUED, "", ""
        self.started, self.ended = at, ""
        self.intent, self.intent_key, self.prior_version = Intent.NONE, "", None

    def mark_status(self, status: RunStatus, message: str, *, at: str = "") -> bool:
        """Record what the backend says; a run seen finished for the first time ends at `at`.

        Returns whether anything changed.
        """
        changed = status is not self.status or message != self.message
        self.status, self.message = status, message
        if status.finished and not self.ended and at:
            self.ended, changed = at, True
        return changed

    @property
    def ref(self) -> str:
        """`owner/slug/version`: the exact run this record follows."""
        return f"{self.kernel}/{self.version}" if self.version is not None else self.kernel

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StageRecord:
        status = raw.get("status")
        intent = raw.get("intent", "")
        return cls(**{**raw, "status": RunStatus(status) if status else None, "intent": Intent(intent)})


@dataclass
class DatasetRecord:
    digest: str = ""
    dataset: str = ""
    status: DatasetStatus | None = None
    version: int | None = None
    intent: Intent = Intent.NONE
    intent_digest: str = ""
    prior_version: int | None = None

    def mark_publishing(self, *, digest: str, dataset: str, prior_version: int | None) -> None:
        self.intent, self.intent_digest, self.prior_version = Intent.PUBLISH, digest, prior_version
        self.dataset = dataset

    def mark_published(self, *, digest: str, dataset: str, version: int | None) -> None:
        self.digest, self.dataset, self.status, self.version = digest, dataset, DatasetStatus.PROCESSING, version
        self.intent, self.intent_digest, self.prior_version = Intent.NONE, "", None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DatasetRecord:
        status = raw.get("status")
        intent = raw.get("intent", "")
        return cls(**{**raw, "status": DatasetStatus(status) if status else None, "intent": Intent(intent)})


@dataclass
class SubmissionRecord:
    """A submission made from this work folder and what became of it."""

    competition: str
    kernel: str
    version: int | None
    ref: int | None
    submitted: str
    status: SubmissionStatus = SubmissionStatus.PENDING
    public_score: float | None = None
    private_score: float | None = None
    message: str = ""

    def describe(self) -> str:
        """Its outcome in one line: the public score, and the private one once the
        competition has ended."""
        public = "no public score" if self.public_score is None else f"public score {self.public_score:.5f}"
        private = "" if self.private_score is None else f", private score {self.private_score:.5f}"
        note = f" ({self.message})" if self.message else ""
        return f"submission {self.ref}: {self.status.value}, {public}{private}{note}"

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SubmissionRecord:
        return cls(**{**raw, "status": SubmissionStatus(raw.get("status", SubmissionStatus.PENDING.value))})


@dataclass
class ChainState:
    """The state file's content. `frozen` state belongs to a command that only reads the
    work folder (it does not hold it): what it learns is shown, never saved."""

    path: Path
    backend: str = ""
    stages: dict[int, StageRecord] = field(default_factory=dict)
    datasets: dict[str, DatasetRecord] = field(default_factory=dict)
    wheels: dict[str, StageRecord] = field(default_factory=dict)
    submissions: list[SubmissionRecord] = field(default_factory=list)
    cells: dict[str, StageRecord] = field(default_factory=dict)
    matrices: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    frozen: bool = False

    @classmethod
    def load(cls, path: Path, backend: str | None, *, frozen: bool = False) -> ChainState:
        """The state in `path`; it must belong to `backend` unless that is None (reading only)."""
        if not path.is_file():
            return cls(path=path, backend=backend or "", frozen=frozen)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"state version {raw.get('version')!r}")
            state = cls(
                path=path,
                backend=raw["backend"],
                stages={int(k): StageRecord.from_json(v) for k, v in raw["stages"].items()},
                datasets={k: DatasetRecord.from_json(v) for k, v in raw["datasets"].items()},
                wheels={k: StageRecord.from_json(v) for k, v in raw.get("wheels", {}).items()},
                submissions=[SubmissionRecord.from_json(v) for v in raw.get("submissions", [])],
                cells={k: StageRecord.from_json(v) for k, v in raw.get("cells", {}).items()},
                matrices={int(k): list(v) for k, v in raw.get("matrices", {}).items()},
                frozen=frozen,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkFolderError(f"{path}: unreadable chain state ({exc}); move it away to start afresh") from None
        if backend is not None and state.backend != backend:
            raise WorkFolderError(
                f"{path}: this work folder belongs to the {state.backend} backend; use another --workdir"
            )
        return state

    def keep_previous(self) -> None:
        """Copy the saved state to `state.previous.json`, so a report can tell what a new run changed.

        With no saved state there is no previous run, and an older copy is removed.
        """
        previous = self.path.with_name(PREVIOUS_STATE_FILE)
        if self.path.is_file():
            write_atomic(previous, self.path.read_bytes())
        else:
            previous.unlink(missing_ok=True)

    def stage(self, number: int) -> StageRecord:
        return self.stages.setdefault(number, StageRecord())

    def record(self, cell: Cell) -> StageRecord:
        """The record of a cell's kernel: its stage's, for a stage without a matrix."""
        if not cell.values:
            return self.stage(cell.stage)
        return self.cells.setdefault(cell.key, StageRecord())

    def find(self, cell: Cell) -> StageRecord | None:
        """The cell's record, None when it never ran from here."""
        return self.cells.get(cell.key) if cell.values else self.stages.get(cell.stage)

    def cells_of(self, number: int) -> list[Cell]:
        """The cells stage `number` last ran with from here (one, without values, for a
        stage without a matrix)."""
        matrix = self.matrices.get(number)
        if not matrix:
            return [Cell(number)]
        return [Cell(number, tuple(values.items())) for values in matrix]

    def dataset(self, slug: str) -> DatasetRecord:
        return self.datasets.setdefault(slug, DatasetRecord())

    def save(self) -> None:
        if self.frozen:
            return
        write_json_atomic(
            self.path,
            {
                "version": STATE_VERSION,
                "backend": self.backend,
                "stages": {str(k): asdict(v) for k, v in sorted(self.stages.items())},
                "datasets": {k: asdict(v) for k, v in sorted(self.datasets.items())},
                "wheels": {k: asdict(v) for k, v in sorted(self.wheels.items())},
                "submissions": [asdict(v) for v in self.submissions],
                "cells": {k: asdict(v) for k, v in sorted(self.cells.items())},
                "matrices": {str(k): v for k, v in sorted(self.matrices.items())},
            },
        )
