"""The weekly GPU quota against what a chain is about to spend.

Kaggle stops a GPU session when the week's quota runs out, which for a chain
means hours of work lost in its middle stage. Before pushing, the chain adds up
the GPU hours of the stages it will run (each stage's last recorded run time,
or the estimate its TOML declares) and refuses when that is more than is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from kernelgen.backends.base import GpuQuota
from kernelgen.errors import QuotaError
from kernelgen.run.state import StageRecord
from kernelgen.spec.machine import AcceleratorKind, Session
from kernelgen.spec.matrix import Cell
from kernelgen.spec.pipeline import StageSpec


class Basis(str, Enum):
    """Where a stage's GPU-hours figure comes from."""

    LAST_RUN = "last run"
    DECLARED = "declared"
    NONE = "no estimate"


@dataclass(frozen=True)
class StageEstimate:
    stage: int
    hours: float
    basis: Basis
    cell: str = ""

    def describe(self) -> str:
        what = f"stage {self.stage} {self.cell}" if self.cell else f"stage {self.stage}"
        if self.basis is Basis.NONE:
            return f"{what}: no estimate (declare gpu_hours in its TOML)"
        return f"{what}: {self.hours:.2f} h ({self.basis.value})"


@dataclass(frozen=True)
class GpuEstimate:
    stages: tuple[StageEstimate, ...]

    @property
    def hours(self) -> float:
        return sum(s.hours for s in self.stages)

    def describe(self) -> str:
        return f"{self.hours:.2f} h ({'; '.join(s.describe() for s in self.stages)})"


def estimate_gpu_hours(
    kernels: Iterable[tuple[StageSpec, Cell]],
    sessions: Mapping[int, Session],
    records: Callable[[Cell], StageRecord | None],
    profile: str,
) -> GpuEstimate:
    """GPU hours of the kernels (each a stage and one of its cells) that run on a GPU:
    the cell's last run time when it ran with the same profile, else the stage's declared
    `gpu_hours` (each cell of a matrix stage counts in full), else nothing."""
    found = []
    for spec, cell in kernels:
        if sessions[spec.number].kind is not AcceleratorKind.GPU:
            continue
        record = records(cell)
        if record is not None and record.run_seconds is not None and record.run_profile == profile:
            found.append(StageEstimate(spec.number, record.run_seconds / 3600, Basis.LAST_RUN, cell.name))
        elif spec.gpu_hours is not None:
            found.append(StageEstimate(spec.number, spec.gpu_hours, Basis.DECLARED, cell.name))
        else:
            found.append(StageEstimate(spec.number, 0.0, Basis.NONE, cell.name))
    return GpuEstimate(tuple(found))


def when(moment: datetime) -> str:
    zone = moment.tzname()
    return f"{moment:%Y-%m-%d %H:%M}" + (f" {zone}" if zone else "")


def describe_quota(quota: GpuQuota) -> str:
    refresh = f"; refreshes {when(quota.refreshes)}" if quota.refreshes else ""
    return (
        f"{quota.used:.2f} h used, {quota.reserved:.2f} h reserved, {quota.allowed:.2f} h allowed, "
        f"{quota.left:.2f} h left{refresh}"
    )


def check_quota(estimate: GpuEstimate, quota: GpuQuota, *, ignore: bool = False) -> bool:
    """True when the estimate fits in what is left. When it does not, raise QuotaError
    naming both figures, or return False when told to `ignore` the quota."""
    if estimate.hours <= quota.left:
        return True
    if ignore:
        return False
    refresh = f" (refreshes {when(quota.refreshes)})" if quota.refreshes else ""
    raise QuotaError(
        f"the GPU stages to run need about {estimate.hours:.2f} h but {quota.left:.2f} h of this week's "
        f"GPU quota are left{refresh}; run fewer stages, wait for the refresh, or pass --ignore-quota"
    )
