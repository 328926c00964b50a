"""How a stage's kernel session runs on Kaggle: machine shape, time limit, image pinning.

Every push carries all of them, so a kernel's run does not depend on what its
previous version happened to use: `original` pinning reruns on the image the
kernel first ran with, and the time limit stays under Kaggle's session cap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from kernelgen.accelerators import AcceleratorError, AcceleratorKind, accelerator

SESSION_CAP_HOURS = 12.0
"""The longest a Kaggle batch session may run."""

DEFAULT_TIMEOUT_HOURS = 11.5
"""Below the cap, which the API documents as an exclusive maximum."""

QUEUE_ALLOWANCE_SECONDS = 3600.0
"""How long a pushed kernel may wait in Kaggle's queue on top of its session limit."""


class DockerPinning(str, Enum):
    """Which image a new version runs on: the one its kernel first used, or the newest."""

    ORIGINAL = "original"
    LATEST = "latest"


@dataclass(frozen=True)
class Session:
    """A stage's session settings; `accelerator` is a machine shape, None for a CPU session."""

    accelerator: str | None = None
    timeout_hours: float = DEFAULT_TIMEOUT_HOURS
    pinning: DockerPinning = DockerPinning.ORIGINAL
    docker_image: str | None = None

    @property
    def kind(self) -> AcceleratorKind | None:
        return accelerator(self.accelerator).kind if self.accelerator else None

    @property
    def timeout_seconds(self) -> int:
        return round(self.timeout_hours * 3600)

    def wait_seconds(self, queue_allowance: float = QUEUE_ALLOWANCE_SECONDS) -> float:
        """How long to follow a pushed run before calling it stuck: its limit plus queueing."""
        return self.timeout_seconds + queue_allowance

    def with_accelerator(self, name: str, *, stage: int) -> Session:
        """The same session on another accelerator; a CPU stage cannot take one."""
        chosen = accelerator(name)
        if self.accelerator is None:
            raise AcceleratorError(
                f"stage {stage} runs on a CPU (enable_gpu = false): it takes no accelerator {chosen.name}"
            )
        return replace(self, accelerator=chosen.name)


def check_timeout_hours(hours: float) -> str | None:
    """Why a session time limit is not allowed, or None when it is."""
    if not 0 < hours <= SESSION_CAP_HOURS:
        return f"must be more than 0 and at most the {SESSION_CAP_HOURS:g} h session cap, got {hours:g}"
    return None
