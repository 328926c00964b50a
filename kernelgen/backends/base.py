"""The one interface the chain talks to; Kaggle and local backends implement it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Protocol


class RunStatus(str, Enum):
    """A kernel run's state, the same for every backend.

    `LOST` is a run that ended without a result because whatever ran it is gone (a
    local run whose process was killed): nothing failed, and pushing again is right.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def finished(self) -> bool:
        return self is not RunStatus.QUEUED and self is not RunStatus.RUNNING

    @property
    def active(self) -> bool:
        return not self.finished


class DatasetStatus(str, Enum):
    PROCESSING = "processing"
    READY = "ready"
    ERROR = "error"


@dataclass(frozen=True)
class PushResult:
    """A pushed kernel: `kernel` is `owner/slug`, `version` the new version number."""

    kernel: str
    version: int | None
    url: str


@dataclass(frozen=True)
class KernelState:
    status: RunStatus
    message: str = ""


@dataclass(frozen=True)
class KernelOutput:
    """Files downloaded from a finished run, and its log text."""

    files: list[Path] = field(default_factory=list)
    log: str = ""


@dataclass(frozen=True)
class PublishResult:
    """A created or versioned dataset: `dataset` is `owner/slug`."""

    dataset: str
    created: bool
    url: str = ""


class SubmissionStatus(str, Enum):
    PENDING = "pending"
    COMPLETE = "complete"
    ERROR = "error"


@dataclass(frozen=True)
class Submitted:
    """A submission made: its reference (None where the backend gives none) and message."""

    ref: int | None
    message: str


@dataclass(frozen=True)
class SubmissionState:
    """A submission as the competition sees it; scores are None until scored (the private
    one until the competition ends)."""

    ref: int | None
    status: SubmissionStatus
    public_score: float | None = None
    private_score: float | None = None
    message: str = ""
    date: str = ""
    description: str = ""
    file_name: str = ""


@dataclass(frozen=True)
class GpuQuota:
    """The week's GPU time in hours: used, held by running sessions, allowed; and when
    the week starts over."""

    used: float
    reserved: float
    allowed: float
    refreshes: datetime | None = None

    @property
    def left(self) -> float:
        """What new sessions may still use: allowed less used and reserved."""
        return max(0.0, self.allowed - self.used - self.reserved)


class Backend(Protocol):
    """Push kernels, follow them, collect their outputs, publish datasets, submit.

    `draws_quota` says whether its GPU runs count against a weekly GPU quota."""

    name: str
    draws_quota: bool

    def push(self, folder: Path) -> PushResult:
        """Push the rendered kernel in `folder` (kernel-metadata.json + notebook)."""
        ...

    def latest_version(self, kernel: str) -> int | None:
        """The newest version number of `owner/slug`, None when it has none: what tells,
        after a crash mid-push, whether the push went through."""
        ...

    def status(self, kernel: str) -> KernelState:
        """The latest run of `owner/slug`."""
        ...

    def output(self, kernel: str, dest: Path) -> KernelOutput:
        """Download every output file of the latest run into `dest`, and its log."""
        ...

    def log_stream(self, kernel: str) -> Iterator[str]:
        """The run's log from its start, in chunks as it is written; it ends when the run
        does or the connection is cut, and a new call starts from the beginning again."""
        ...

    def publish(self, folder: Path) -> PublishResult:
        """Create the dataset in `folder` (dataset-metadata.json + files) or add a version."""
        ...

    def dataset_status(self, dataset: str) -> DatasetStatus:
        """Processing state of `owner/slug`'s latest version."""
        ...

    def dataset_version(self, dataset: str) -> int | None:
        """The newest version number of dataset `owner/slug`, None when it does not exist."""
        ...

    def publish_model(self, folder: Path) -> PublishResult:
        """Add a version to the model instance in `folder` (model-metadata.json,
        model-instance-metadata.json and the files), making the model and the instance,
        private, the first time. `dataset` of the result is `owner/model/framework/variation`."""
        ...

    def model_version(self, instance: str) -> int | None:
        """The newest available version of model instance `owner/model/framework/variation`,
        None when the instance does not exist or has none available yet."""
        ...

    def submit(
        self, competition: str, kernel: str, version: int, file_name: str, message: str
    ) -> Submitted:
        """Submit a code-competition kernel version."""
        ...

    def submission(self, competition: str, ref: int) -> SubmissionState:
        """Where submission `ref` stands: pending, scored, or failed."""
        ...

    def submissions(self, competition: str) -> list[SubmissionState]:
        """The account's submissions to `competition`, newest first."""
        ...

    def quota(self) -> GpuQuota | None:
        """The weekly GPU quota, or None where runs draw on none."""
        ...

    def close(self) -> None:
        """Let go of what the backend holds (threads, connections); runs on Kaggle go on."""
        ...
