"""Chain state: what was pushed, where it stands, what was published. One JSON file.

Every change is written at once, atomically (write beside, then rename), so Ctrl-C
or a crash at any point leaves a state a rerun can resume from.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from kernelgen.backends.base import DatasetStatus, RunStatus
from kernelgen.errors import KernelgenError

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


def timestamp(seconds: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC text, as run times are kept in the state."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def parse_timestamp(text: str) -> datetime | None:
    """A time kept by `timestamp`; None when empty or unreadable."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


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

    def mark_pushed(self, *, key: str, kernel: str, version: int | None, url: str, at: str = "") -> None:
        """A new version was pushed at `at`: forget the last run's status, message, outputs
        and end (its run time stays: the estimate of what the next run takes).

        `started`/`ended` span push to the first poll that saw the end, queueing included;
        `run_seconds` is the time from RUNNING to COMPLETE as polled, when it was seen."""
        self.key, self.kernel, self.version, self.url = key, kernel, version, url
        self.status, self.message, self.outputs = RunStatus.QUEUED, "", ""
        self.started, self.ended = at, ""

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
        return cls(**{**raw, "status": RunStatus(status) if status else None})


@dataclass
class DatasetRecord:
    digest: str = ""
    dataset: str = ""
    status: DatasetStatus | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DatasetRecord:
        status = raw.get("status")
        return cls(**{**raw, "status": DatasetStatus(status) if status else None})


@dataclass
class ChainState:
    path: Path
    backend: str = ""
    stages: dict[int, StageRecord] = field(default_factory=dict)
    datasets: dict[str, DatasetRecord] = field(default_factory=dict)
    wheels: dict[str, StageRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, backend: str | None) -> ChainState:
        """The state in `path`; it must belong to `backend` unless that is None (reading only)."""
        if not path.is_file():
            return cls(path=path, backend=backend or "")
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
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise KernelgenError(f"{path}: unreadable chain state ({exc}); move it away to start afresh") from None
        if backend is not None and state.backend != backend:
            raise KernelgenError(
                f"{path}: this work folder belongs to the {state.backend} backend; use another --workdir"
            )
        return state

    @classmethod
    def open(cls, workdir: Path, backend: str) -> ChainState:
        """The state of work folder `workdir`, empty when it has none yet."""
        return cls.load(workdir / STATE_FILE, backend)

    def keep_previous(self) -> None:
        """Copy the saved state to `state.previous.json`, so a report can tell what a new run changed.

        With no saved state there is no previous run, and an older copy is removed.
        """
        previous = self.path.with_name(PREVIOUS_STATE_FILE)
        if self.path.is_file():
            partial = previous.with_name(previous.name + ".partial")
            shutil.copyfile(self.path, partial)
            os.replace(partial, previous)
        else:
            previous.unlink(missing_ok=True)

    def stage(self, number: int) -> StageRecord:
        return self.stages.setdefault(number, StageRecord())

    def dataset(self, slug: str) -> DatasetRecord:
        return self.datasets.setdefault(slug, DatasetRecord())

    def save(self) -> None:
        payload = {
            "version": STATE_VERSION,
            "backend": self.backend,
            "stages": {str(k): asdict(v) for k, v in sorted(self.stages.items())},
            "datasets": {k: asdict(v) for k, v in sorted(self.datasets.items())},
            "wheels": {k: asdict(v) for k, v in sorted(self.wheels.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(partial, self.path)
