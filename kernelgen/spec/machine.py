"""Where a stage's kernel runs on Kaggle: the machine shape, the session's time limit and
the image pinning.

The official client accepts any string as a machine shape and only warns about a
retired one, and the server then silently runs the session on something else
(a P100 request runs on two T4s; TPU v2 requests on a CPU). A name is therefore
checked here, before anything is pushed, and a retired one is refused with its
replacement named.

Every push carries all of the session settings, so a kernel's run does not depend on
what its previous version happened to use: `original` pinning reruns on the image the
kernel first ran with, and the time limit stays under Kaggle's session cap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from kernelgen.errors import AcceleratorError


class AcceleratorKind(str, Enum):
    """Which weekly quota a session draws on."""

    GPU = "gpu"
    TPU = "tpu"


@dataclass(frozen=True)
class Accelerator:
    name: str
    kind: AcceleratorKind


DEFAULT_GPU = "NvidiaTeslaT4"
"""Two T4s: Kaggle's default GPU machine."""

ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator("NvidiaTeslaT4", AcceleratorKind.GPU),
        Accelerator("NvidiaL4", AcceleratorKind.GPU),
        Accelerator("NvidiaL4X1", AcceleratorKind.GPU),
        Accelerator("NvidiaTeslaA100", AcceleratorKind.GPU),
        Accelerator("NvidiaH100", AcceleratorKind.GPU),
        Accelerator("NvidiaRtxPro6000", AcceleratorKind.GPU),
        Accelerator("TpuV5E8", AcceleratorKind.TPU),
        Accelerator("TpuV6E8", AcceleratorKind.TPU),
    )
}

RETIRED: dict[str, str | None] = {
    "NvidiaTeslaP100": "NvidiaTeslaT4",
    "TpuV38": "TpuV5E8",
    "Tpu1VmV38": "TpuV5E8",
    "TpuV232": None,
    "TpuV2256": None,
}
"""Retired shapes and what Kaggle runs instead (None: a CPU, no accelerator)."""


def accelerator(name: str) -> Accelerator:
    """The known accelerator `name` spells (case does not matter), or an error saying why not."""
    wanted = name.strip().lower()
    for known in ACCELERATORS.values():
        if known.name.lower() == wanted:
            return known
    for retired, replacement in RETIRED.items():
        if retired.lower() == wanted:
            instead = f"{replacement} instead; ask for {replacement}" if replacement else "a CPU instead"
            raise AcceleratorError(f"accelerator {retired} is retired: Kaggle runs such sessions on {instead}")
    raise AcceleratorError(f"unknown accelerator {name!r}; known: {', '.join(ACCELERATORS)}")

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
