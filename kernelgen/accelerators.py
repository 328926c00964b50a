"""Kaggle's machine shapes: which names a push may carry, what kind each is, which are retired.

The official client accepts any string as a machine shape and only warns about a
retired one, and the server then silently runs the session on something else
(a P100 request runs on two T4s; TPU v2 requests on a CPU). A name is therefore
checked here, before anything is pushed, and a retired one is refused with its
replacement named.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kernelgen.errors import KernelgenError


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


class AcceleratorError(KernelgenError):
    """An accelerator name Kaggle does not know, or one it no longer runs."""


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
